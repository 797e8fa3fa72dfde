"""In-memory tensor types shared by every layer.

Below the protocol edge a tensor is a plain ``numpy.ndarray``; BYTES tensors are
``dtype=object`` arrays whose elements are ``bytes``. ``TensorSpec`` declares a
tensor's name, datatype and shape, with ``-1`` for a dimension of any size.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

TensorMap = dict[str, np.ndarray]
"""Named tensors: a request's inputs, a node's outputs, a response's outputs."""


class DataType(enum.Enum):
    """The Open Inference Protocol v2 datatypes, named as on the wire."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    # Members are singletons compared by identity, so identity is a sound hash, and a C-level one:
    # Enum's own hashes the member's name in Python, on every lookup of a table keyed by it.
    __hash__ = object.__hash__

    @property
    def numpy_dtype(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int | None:
        """Bytes per element on the wire, or ``None`` for variable-size BYTES."""
        return None if self is DataType.BYTES else _TO_NUMPY[self].itemsize

    @property
    def is_numeric(self) -> bool:
        return self not in (DataType.BYTES, DataType.BOOL)

    @property
    def is_float(self) -> bool:
        return self in (DataType.FP16, DataType.FP32, DataType.FP64)

    @classmethod
    def parse(cls, name: str) -> DataType:
        """The datatype called ``name`` (case-insensitive); ValueError if none."""
        try:
            return cls(name.upper())
        except ValueError:
            raise ValueError(
                f"unknown datatype '{name}' (expected one of {', '.join(d.value for d in cls)})"
            ) from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype) -> DataType:
        dtype = np.dtype(dtype)
        if dtype.kind in ("O", "S", "U"):
            return cls.BYTES
        try:
            return _FROM_NUMPY[dtype]
        except KeyError:
            raise ValueError(f"numpy dtype {dtype} has no V2 datatype") from None

    @classmethod
    def from_onnx(cls, onnx_type: str) -> DataType:
        """From an onnxruntime type string such as ``tensor(float)``."""
        try:
            return _FROM_ONNX[onnx_type]
        except KeyError:
            raise ValueError(f"ONNX type {onnx_type} has no V2 datatype") from None


_TO_NUMPY: dict[DataType, np.dtype] = {
    DataType.BOOL: np.dtype(np.bool_),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.INT8: np.dtype(np.int8),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.FP16: np.dtype(np.float16),
    DataType.FP32: np.dtype(np.float32),
    DataType.FP64: np.dtype(np.float64),
    DataType.BYTES: np.dtype(object),
}
_FROM_NUMPY: dict[np.dtype, DataType] = {v: k for k, v in _TO_NUMPY.items() if k is not DataType.BYTES}
_FROM_ONNX: dict[str, DataType] = {
    "tensor(bool)": DataType.BOOL,
    "tensor(uint8)": DataType.UINT8,
    "tensor(uint16)": DataType.UINT16,
    "tensor(uint32)": DataType.UINT32,
    "tensor(uint64)": DataType.UINT64,
    "tensor(int8)": DataType.INT8,
    "tensor(int16)": DataType.INT16,
    "tensor(int32)": DataType.INT32,
    "tensor(int64)": DataType.INT64,
    "tensor(float16)": DataType.FP16,
    "tensor(float)": DataType.FP32,
    "tensor(double)": DataType.FP64,
    "tensor(string)": DataType.BYTES,
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A declared tensor: ``shape`` uses -1 for a dimension of any size."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]

    def shape_text(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether a concrete ``shape`` fits this declaration."""
        if len(shape) != len(self.shape):
            return False
        return all(want == -1 or want == got for want, got in zip(self.shape, shape, strict=True))
