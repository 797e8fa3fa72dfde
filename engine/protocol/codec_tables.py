"""Limits and per-datatype tables of the tensor codec, built once at import.

Every table is keyed by ``DataType`` so the request path does dictionary
lookups, never branches on datatype names or builds dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from engine.tensors import DataType


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Bounds on what one request may make the codec allocate.

    ``max_elements``
        Most elements one tensor may have (the product of its shape), and the
        largest single dimension. Checked from the shape alone, before any
        array is allocated. Default 16,777,216 (2**24: 64 MiB of FP32).
    ``max_request_bytes``
        Largest serialized ModelInferRequest ``parse_infer_request`` accepts.
        Default 256 MiB. Give the same number to the gRPC server as
        ``grpc.max_receive_message_length`` so oversized messages are refused
        before they are read.
    """

    max_elements: int = 16_777_216
    max_request_bytes: int = 256 * 1024 * 1024


DEFAULT_LIMITS: Final = CodecLimits()

# Wire dtypes: little-endian, as the protocol specifies. BOOL travels as one
# byte per element (0 or 1) and is checked as uint8 before being viewed as bool.
WIRE_DTYPE: Final[dict[DataType, np.dtype]] = {
    DataType.BOOL: np.dtype(np.uint8),
    DataType.UINT8: np.dtype("<u1"),
    DataType.UINT16: np.dtype("<u2"),
    DataType.UINT32: np.dtype("<u4"),
    DataType.UINT64: np.dtype("<u8"),
    DataType.INT8: np.dtype("<i1"),
    DataType.INT16: np.dtype("<i2"),
    DataType.INT32: np.dtype("<i4"),
    DataType.INT64: np.dtype("<i8"),
    DataType.FP16: np.dtype("<f2"),
    DataType.FP32: np.dtype("<f4"),
    DataType.FP64: np.dtype("<f8"),
}

# The InferTensorContents field each datatype uses; FP16 has none (raw only).
TYPED_FIELD: Final[dict[DataType, str | None]] = {
    DataType.BOOL: "bool_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.FP16: None,
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}

# The numpy dtype that holds a typed field's values exactly (the field's own
# protobuf type), before narrowing to the tensor's datatype.
FIELD_DTYPE: Final[dict[str, np.dtype]] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}

# Datatypes narrower than their typed field: values must lie in [lo, hi].
TYPED_RANGE: Final[dict[DataType, tuple[int, int]]] = {
    dt: (int(np.iinfo(dt.numpy_dtype).min), int(np.iinfo(dt.numpy_dtype).max))
    for dt in (DataType.INT8, DataType.INT16, DataType.UINT8, DataType.UINT16)
}

# Wire datatype name -> DataType, for the few places that parse a name.
BY_WIRE_NAME: Final[dict[str, DataType]] = {dt.value: dt for dt in DataType}
