"""The tensor codec: every datatype both ways, and every way a request can be malformed."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from engine.errors import InvalidRequest, ModelContractError, TensorError, Unimplemented
from engine.protocol import codec, codec_decode
from engine.protocol.codec import CodecLimits
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.tensors import DataType, TensorSpec

NUMERIC = [dt for dt in DataType if dt not in (DataType.BYTES, DataType.BOOL)]
TYPED_FIELDS = {
    DataType.BOOL: "bool_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}


def sample(datatype: DataType, shape: Sequence[int] = (2, 3)) -> np.ndarray:
    """A deterministic array of ``datatype`` using the extremes of its range."""
    count = int(np.prod(shape))
    if datatype is DataType.BYTES:
        values = [b"", b"a", "é".encode(), b"\x00\xff" * 40, b"xyz", b"\x00"] * (count // 6 + 1)
        out = np.empty(count, dtype=object)
        out[:] = values[:count]
        return out.reshape(shape)
    if datatype is DataType.BOOL:
        return (np.arange(count) % 2 == 0).reshape(shape)
    dtype = datatype.numpy_dtype
    if datatype.is_float:
        info = np.finfo(dtype)
        values = [0.0, -1.5, float(info.max), float(info.min), float(info.tiny), 3.25]
    else:
        info = np.iinfo(dtype)
        values = [0, 1, int(info.max), int(info.min), int(info.max) - 1, 7]
    return np.resize(np.array(values, dtype=dtype), count).reshape(shape)


def wire_bytes(array: np.ndarray, datatype: DataType) -> bytes:
    """Raw wire bytes, built independently of the codec under test."""
    if datatype is DataType.BYTES:
        return b"".join(struct.pack("<I", len(e)) + e for e in array.ravel())
    if datatype is DataType.BOOL:
        return array.astype(np.uint8).tobytes()
    return array.astype(datatype.numpy_dtype.newbyteorder("<")).tobytes()


def tensor(
    name: str, datatype: str, shape: Sequence[int], **contents: Any
) -> pb.ModelInferRequest.InferInputTensor:
    t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(shape))
    for field, values in contents.items():
        getattr(t.contents, field).extend(values)
    return t


def request(
    *tensors: pb.ModelInferRequest.InferInputTensor, raw: Sequence[bytes] = ()
) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", inputs=list(tensors))
    req.raw_input_contents.extend(raw)
    return req


def raw_request(*arrays: tuple[str, DataType, np.ndarray]) -> pb.ModelInferRequest:
    tensors = [tensor(name, dt.value, a.shape) for name, dt, a in arrays]
    return request(*tensors, raw=[wire_bytes(a, dt) for _, dt, a in arrays])


def spec(name: str, datatype: DataType | str, shape: Sequence[int]) -> TensorSpec:
    dt = datatype if isinstance(datatype, DataType) else DataType.parse(datatype)
    return TensorSpec(name, dt, tuple(shape))


def rejects(
    req: pb.ModelInferRequest,
    specs: Sequence[TensorSpec],
    *words: str,
    tensor: str | None = None,
    limits: CodecLimits = codec.DEFAULT_LIMITS,
) -> TensorError:
    with pytest.raises(TensorError) as info:
        codec.decode_inputs(req, specs, limits)
    message = str(info.value)
    if tensor is not None:
        assert info.value.tensor == tensor
        assert f"tensor '{tensor}'" in message
    for word in words:
        assert word in message, message
    return info.value


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert got.dtype == object
        assert got.ravel().tolist() == want.ravel().tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DataType), ids=lambda d: d.value)
def test_raw_request_decodes_every_datatype(datatype: DataType) -> None:
    array = sample(datatype)
    decoded = codec.decode_inputs(raw_request(("x", datatype, array)), [spec("x", datatype, (-1, 3))])
    assert_same(decoded["x"], array)


@pytest.mark.parametrize(
    "datatype", [dt for dt in DataType if dt is not DataType.FP16], ids=lambda d: d.value
)
def test_typed_request_decodes_every_datatype(datatype: DataType) -> None:
    array = sample(datatype)
    values = array.ravel().tolist()
    req = request(tensor("x", datatype.value, array.shape, **{TYPED_FIELDS[datatype]: values}))
    decoded = codec.decode_inputs(req, [spec("x", datatype, (2, 3))])
    assert_same(decoded["x"], array)
    assert codec.wants_raw(req) is False


@pytest.mark.parametrize("datatype", list(DataType), ids=lambda d: d.value)
def test_raw_response_parses_with_tritonclient(datatype: DataType) -> None:
    from tritonclient.grpc import InferResult
    from tritonclient.grpc import service_pb2 as triton_pb

    array = sample(datatype)
    response = codec.encode_response(
        model_name="m", model_version="1", request_id="r", outputs=[("a", array), ("b", array[:1])], raw=True
    )
    assert len(response.raw_output_contents) == 2
    assert [o.datatype for o in response.outputs] == [datatype.value] * 2
    theirs = triton_pb.ModelInferResponse.FromString(response.SerializeToString())
    result = InferResult(theirs)
    got = result.as_numpy("a")
    if datatype is DataType.BYTES:
        assert got.ravel().tolist() == array.ravel().tolist()
    else:
        assert_same(got, array)
    assert result.as_numpy("b").shape == (1, 3)


@pytest.mark.parametrize("datatype", list(DataType), ids=lambda d: d.value)
def test_raw_response_feeds_back_as_raw_request(datatype: DataType) -> None:
    array = sample(datatype, (4, 3))
    response = codec.encode_response(
        model_name="m", model_version="", request_id="", outputs=[("x", array)], raw=True
    )
    req = request(tensor("x", datatype.value, array.shape), raw=list(response.raw_output_contents))
    assert_same(codec.decode_inputs(req, [spec("x", datatype, (-1, 3))])["x"], array)


@pytest.mark.parametrize(
    "datatype", [dt for dt in DataType if dt is not DataType.FP16], ids=lambda d: d.value
)
def test_typed_response_fills_the_field_of_the_datatype(datatype: DataType) -> None:
    array = sample(datatype)
    response = codec.encode_response(
        model_name="m", model_version="", request_id="", outputs=[("x", array)], raw=False
    )
    assert not response.raw_output_contents
    out = response.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("x", datatype.value, [2, 3])
    assert [d.name for d, _ in out.contents.ListFields()] == [TYPED_FIELDS[datatype]]
    # and it decodes back as a typed request
    req = pb.ModelInferRequest(
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="x", datatype=out.datatype, shape=out.shape, contents=out.contents
            )
        ]
    )
    assert_same(codec.decode_inputs(req, [spec("x", datatype, (2, 3))])["x"], array)


def test_typed_response_with_fp16_goes_raw_as_a_whole() -> None:
    half = sample(DataType.FP16)
    response = codec.encode_response(
        model_name="m",
        model_version="",
        request_id="",
        outputs=[("f", np.ones(2, np.float32)), ("h", half)],
        raw=False,
    )
    assert len(response.raw_output_contents) == 2
    assert not response.outputs[0].contents.ListFields()


def test_encode_tensor_typed_and_raw() -> None:
    t = codec.encode_tensor("p", np.array([[0.5], [1.0]], dtype=np.float32))
    assert (t.name, t.datatype, list(t.shape), list(t.contents.fp32_contents)) == (
        "p",
        "FP32",
        [2, 1],
        [0.5, 1.0],
    )
    bare = codec.encode_tensor("p", np.array([1, 2], dtype=np.int64), raw=True)
    assert not bare.contents.ListFields() and bare.datatype == "INT64"
    assert codec.tensor_bytes("p", np.array([1, 2], dtype=np.int64)) == struct.pack("<qq", 1, 2)
    half = codec.encode_tensor("h", np.array([1.5], dtype=np.float16))
    assert half.datatype == "FP16" and list(half.contents.fp32_contents) == [1.5]


def test_encode_response_metadata_and_str_elements() -> None:
    strings = np.array(["héllo", "", "x"])  # numpy unicode array
    objects = np.array(["a", b"b"], dtype=object)
    response = codec.encode_response(
        model_name="g",
        model_version="3",
        request_id="req-1",
        outputs=[("s", strings), ("o", objects)],
        raw=True,
    )
    assert (response.model_name, response.model_version, response.id) == ("g", "3", "req-1")
    assert response.raw_output_contents[0] == b"".join(
        struct.pack("<I", len(e)) + e for e in ("héllo".encode(), b"", b"x")
    )
    assert response.raw_output_contents[1] == b"\x01\x00\x00\x00a\x01\x00\x00\x00b"
    typed = codec.encode_response(
        model_name="g", model_version="3", request_id="", outputs=[("s", strings)], raw=False
    )
    assert list(typed.outputs[0].contents.bytes_contents) == ["héllo".encode(), b"", b"x"]


def test_encode_handles_non_contiguous_and_big_endian_arrays() -> None:
    base = np.arange(12, dtype=">i4").reshape(3, 4)
    view = base[:, ::2]
    response = codec.encode_response(
        model_name="m", model_version="", request_id="", outputs=[("v", view)], raw=True
    )
    assert response.outputs[0].datatype == "INT32"
    assert np.frombuffer(response.raw_output_contents[0], "<i4").reshape(3, 2).tolist() == view.tolist()


def test_encode_rejects_arrays_the_protocol_cannot_carry() -> None:
    with pytest.raises(ModelContractError, match=r"output 'c'.*complex"):
        codec.encode_response(
            model_name="m", model_version="", request_id="", outputs=[("c", np.ones(2, complex))], raw=True
        )
    with pytest.raises(ModelContractError, match="output 'o': BYTES element 1 is int"):
        codec.encode_tensor("o", np.array([b"a", 3], dtype=object))


def test_scalar_and_empty_tensors() -> None:
    scalar = np.array(2.5, dtype=np.float32)
    out = codec.decode_inputs(raw_request(("s", DataType.FP32, scalar)), [spec("s", "FP32", ())])["s"]
    assert out.shape == () and float(out) == 2.5
    empty = np.zeros((0, 3), dtype=np.int64)
    assert codec.decode_inputs(raw_request(("e", DataType.INT64, empty)), [spec("e", "INT64", (-1, 3))])[
        "e"
    ].shape == (0, 3)
    empty_bytes = np.empty((0,), dtype=object)
    got = codec.decode_inputs(raw_request(("b", DataType.BYTES, empty_bytes)), [spec("b", "BYTES", (-1,))])[
        "b"
    ]
    assert got.shape == (0,) and got.dtype == object
    typed_empty = request(tensor("e", "FP32", (0, 3)))
    assert codec.decode_inputs(typed_empty, [spec("e", "FP32", (-1, 3))])["e"].shape == (0, 3)


@pytest.mark.parametrize("datatype", list(DataType), ids=lambda d: d.value)
def test_empty_tensors_keep_their_datatype(datatype: DataType) -> None:
    specs = [spec("e", datatype, (-1, 3))]
    raw = codec.decode_inputs(raw_request(("e", datatype, sample(datatype, (0, 3)))), specs)["e"]
    assert raw.shape == (0, 3) and raw.dtype == datatype.numpy_dtype
    typed = codec.decode_inputs(request(tensor("e", datatype.value, (0, 3))), specs)["e"]
    assert typed.shape == (0, 3) and typed.dtype == datatype.numpy_dtype


def test_outputs_keyed_in_expected_order() -> None:
    a, b = np.ones((1, 1), np.float32), np.zeros((1, 2), np.int32)
    req = raw_request(("b", DataType.INT32, b), ("a", DataType.FP32, a))
    decoded = codec.decode_inputs(req, [spec("a", "FP32", (-1, 1)), spec("b", "INT32", (-1, 2))])
    assert list(decoded) == ["a", "b"]
    assert_same(decoded["b"], b)


# -- zero copy and allocation order --------------------------------------------------------


def memory_owner(array: np.ndarray) -> object:
    """The object at the end of an array's ``base`` chain: what owns its memory."""
    owner: object = array
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    return owner


def test_raw_decode_is_a_read_only_view_on_the_request_bytes() -> None:
    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    req = raw_request(("x", DataType.FP32, array))
    out = codec.decode_inputs(req, [spec("x", "FP32", (-1, 3))])["x"]
    owner = memory_owner(out)
    assert isinstance(owner, bytes), "decoded by np.frombuffer over the raw bytes, not copied"
    assert owner == req.raw_input_contents[0]
    assert np.shares_memory(out, np.frombuffer(owner, dtype=np.uint8))
    assert not out.flags.writeable
    flags = codec.decode_inputs(
        raw_request(("f", DataType.BOOL, np.array([True, False]))), [spec("f", "BOOL", (2,))]
    )
    assert isinstance(memory_owner(flags["f"]), bytes) and flags["f"].dtype == np.bool_


class _NoAllocation:
    """Stands in for numpy inside the decoder: any array construction fails the test."""

    def __getattr__(self, name: str) -> Any:
        if name in {"frombuffer", "empty", "fromiter", "zeros", "array", "asarray", "ones", "full"}:
            raise AssertionError(f"np.{name} called before the size checks")
        return getattr(np, name)


@pytest.mark.parametrize("raw", [True, False])
def test_element_limit_is_checked_before_allocating(monkeypatch: pytest.MonkeyPatch, raw: bool) -> None:
    monkeypatch.setattr(codec_decode, "np", _NoAllocation())
    limits = CodecLimits(max_elements=1000)
    req = request(tensor("x", "FP32", (40, 40)), raw=[b"\x00" * 6400] if raw else ())
    rejects(req, [spec("x", "FP32", (-1, 40))], "1600 elements", "limit of 1000", tensor="x", limits=limits)
    huge = request(tensor("x", "FP32", (1 << 40, 1 << 40)), raw=[b""] if raw else ())
    rejects(huge, [spec("x", "FP32", (-1, -1))], "above the limit", tensor="x")
    zero_but_wide = request(tensor("x", "FP32", (0, 1 << 62)), raw=[b""] if raw else ())
    rejects(zero_but_wide, [spec("x", "FP32", (-1, -1))], "dimension", "limit", tensor="x")


def test_bytes_element_count_is_bounded_by_the_data_before_allocating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec_decode, "np", _NoAllocation())
    req = request(tensor("s", "BYTES", (1_000_000,)), raw=[b"\x00" * 16])
    rejects(req, [spec("s", "BYTES", (-1,))], "too short for 1000000 elements", tensor="s")


# -- request-level rejections ---------------------------------------------------------------

X = [spec("x", "FP32", (-1, 2))]


def test_missing_input() -> None:
    specs = [spec("x", "FP32", (-1, 2)), spec("y", "INT64", (-1,))]
    rejects(request(tensor("x", "FP32", (1, 2), fp32_contents=[1, 2])), specs, "missing", tensor="y")


def test_every_missing_input_is_named_at_once() -> None:
    specs = [spec("x", "FP32", (-1, 2)), spec("y", "INT64", (-1,)), spec("z", "BYTES", (-1, 1))]
    req = request(tensor("x", "FP32", (1, 2), fp32_contents=[1, 2]))
    with pytest.raises(InvalidRequest) as info:
        codec.decode_inputs(req, specs)
    assert (
        str(info.value)
        == "2 inputs missing: 'y' (INT64 [-1]), 'z' (BYTES [-1, 1]); the model needs every one"
    )
    assert info.value.tensor == "y"


def test_every_unknown_input_is_named_at_once() -> None:
    req = request(
        tensor("x", "FP32", (1, 2), fp32_contents=[1, 2]),
        tensor("z", "FP32", (1,), fp32_contents=[1]),
        tensor("w", "FP32", (1,), fp32_contents=[1]),
    )
    with pytest.raises(InvalidRequest) as info:
        codec.decode_inputs(req, X)
    assert str(info.value) == "tensors z, w are not inputs of this model (inputs: x)"


def test_unknown_input() -> None:
    req = request(
        tensor("x", "FP32", (1, 2), fp32_contents=[1, 2]), tensor("z", "FP32", (1,), fp32_contents=[1])
    )
    rejects(req, X, "not an input of this model", "inputs: x", tensor="z")


def test_duplicate_input() -> None:
    t = tensor("x", "FP32", (1, 2), fp32_contents=[1, 2])
    rejects(request(t, t), X, "more than once", tensor="x")


def test_datatype_mismatch() -> None:
    rejects(
        request(tensor("x", "FP64", (1, 2), fp64_contents=[1, 2])), X, "'FP64'", "declared FP32", tensor="x"
    )
    rejects(request(tensor("x", "fp32", (1, 2), fp32_contents=[1, 2])), X, "'fp32'", tensor="x")
    rejects(request(tensor("x", "", (1, 2))), X, "datatype ''", tensor="x")


def test_wrong_rank_and_fixed_dim() -> None:
    rejects(request(tensor("x", "FP32", (2,), fp32_contents=[1, 2])), X, "rank 1", "rank 2", tensor="x")
    rejects(
        request(tensor("x", "FP32", (1, 3), fp32_contents=[1, 2, 3])),
        X,
        "has 3 at axis 1",
        "needs 2",
        tensor="x",
    )


def test_negative_dim() -> None:
    rejects(request(tensor("x", "FP32", (-1, 2))), X, "negative dimension at axis 0", tensor="x")
    rejects(request(tensor("x", "FP32", (-5, 2)), raw=[b""]), X, "negative", tensor="x")


def test_raw_byte_size_mismatch() -> None:
    req = request(tensor("x", "FP32", (2, 2)), raw=[b"\x00" * 15])
    rejects(req, X, "15 bytes", "needs 16 bytes", tensor="x")
    rejects(request(tensor("x", "FP32", (2, 2)), raw=[b"\x00" * 17]), X, "17 bytes", tensor="x")


def test_raw_count_must_match_inputs() -> None:
    specs = [spec("x", "FP32", (-1, 2)), spec("y", "FP32", (-1, 2))]
    req = request(tensor("x", "FP32", (1, 2)), tensor("y", "FP32", (1, 2)), raw=[b"\x00" * 8])
    rejects(req, specs, "no raw_input_contents entry", "1 entries for 2 inputs", tensor="y")
    too_many = request(tensor("x", "FP32", (1, 2)), raw=[b"\x00" * 8, b"\x00" * 8])
    with pytest.raises(InvalidRequest, match="2 entries for 1 inputs"):
        codec.decode_inputs(too_many, X)


def test_typed_and_raw_both_given() -> None:
    req = request(tensor("x", "FP32", (1, 2), fp32_contents=[1, 2]), raw=[b"\x00" * 8])
    rejects(req, X, "both typed contents and raw_input_contents", tensor="x")


def test_typed_element_count_mismatch() -> None:
    rejects(
        request(tensor("x", "FP32", (2, 2), fp32_contents=[1, 2, 3])), X, "3 values", "needs 4", tensor="x"
    )
    rejects(request(tensor("x", "FP32", (2, 2))), X, "no data", "needs 4", tensor="x")


@pytest.mark.parametrize(
    ("datatype", "field", "value"),
    [
        ("INT8", "int_contents", 300),
        ("INT8", "int_contents", -129),
        ("INT16", "int_contents", 40_000),
        ("UINT8", "uint_contents", 256),
        ("UINT16", "uint_contents", 70_000),
    ],
)
def test_typed_value_out_of_range(datatype: str, field: str, value: int) -> None:
    req = request(tensor("x", datatype, (2,), **{field: [1, value]}))
    rejects(
        req,
        [spec("x", datatype, (-1,))],
        f"value {value} at element 1",
        f"out of range for {datatype}",
        tensor="x",
    )


def test_typed_negative_for_unsigned_is_the_wrong_field() -> None:
    req = request(tensor("x", "UINT8", (1,), int_contents=[-1]))
    rejects(req, [spec("x", "UINT8", (-1,))], "'int_contents'", "UINT8 uses 'uint_contents'", tensor="x")


def test_fp16_must_be_raw() -> None:
    req = request(tensor("h", "FP16", (2,), fp32_contents=[1.0, 2.0]))
    rejects(
        req, [spec("h", "FP16", (-1,))], "FP16 has no typed contents field", "raw_input_contents", tensor="h"
    )
    rejects(request(tensor("h", "FP16", (2,))), [spec("h", "FP16", (-1,))], "raw_input_contents", tensor="h")


def test_typed_contents_in_the_wrong_field() -> None:
    rejects(
        request(tensor("x", "FP32", (1, 2), fp64_contents=[1, 2])),
        X,
        "'fp64_contents'",
        "uses 'fp32_contents'",
        tensor="x",
    )
    both = tensor("x", "FP32", (1, 2), fp32_contents=[1, 2], int_contents=[1, 2])
    rejects(request(both), X, "'int_contents'", tensor="x")


def test_bool_raw_bytes_must_be_zero_or_one() -> None:
    req = request(tensor("f", "BOOL", (3,)), raw=[b"\x00\x01\x02"])
    rejects(req, [spec("f", "BOOL", (-1,))], "BOOL raw byte 2 at element 2", tensor="f")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x01\x00\x00\x00a\x01\x00", ["too short"]),  # 7 bytes cannot hold two length prefixes
        (b"\x01\x00\x00\x00a\x05\x00\x00\x00bc", ["element 1 declares 5 bytes", "only 2 remain"]),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00bEXTRA", ["5 bytes left after 2 elements"]),
        (b"\x01\x00\x00\x00a\x00\x00\x00\x00\x00\x00", ["2 bytes left"]),
        (b"\xff\xff\xff\xff" + b"\x00" * 8, ["element 0 declares 4294967295 bytes"]),
        (b"\x05\x00\x00\x00abcd\x00", ["end inside the length prefix of element 1"]),
    ],
)
def test_bytes_framing_errors(data: bytes, words: list[str]) -> None:
    req = request(tensor("s", "BYTES", (2,)), raw=[data])
    rejects(req, [spec("s", "BYTES", (-1,))], *words, tensor="s")


def test_shared_memory_inputs_and_outputs_are_unimplemented() -> None:
    t = tensor("x", "FP32", (1, 2))
    t.parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(Unimplemented, match="shared memory"):
        codec.decode_inputs(request(t), X)
    req = request()
    out = req.outputs.add(name="y")
    out.parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(Unimplemented, match="shared_memory_region"):
        codec.requested_outputs(req, [spec("y", "FP32", (-1,))])


def test_long_client_names_are_clipped_in_messages() -> None:
    name = "n" * 10_000
    err = rejects(request(tensor(name, "FP32", (1, 2))), X, "not an input")
    assert len(str(err)) < 500


# -- requested outputs and raw/typed choice -------------------------------------------------

OUTS = [spec("a", "FP32", (-1,)), spec("b", "INT64", (-1,)), spec("c", "BYTES", (-1,))]


def test_requested_outputs() -> None:
    assert codec.requested_outputs(request(), OUTS) == ("a", "b", "c")
    req = request()
    req.outputs.add(name="c")
    req.outputs.add(name="a")
    assert codec.requested_outputs(req, OUTS) == ("c", "a")
    req.outputs.add(name="zz")
    with pytest.raises(
        TensorError, match="tensor 'zz': is not an output of this model \\(outputs: a, b, c\\)"
    ):
        codec.requested_outputs(req, OUTS)
    dup = request()
    dup.outputs.add(name="a")
    dup.outputs.add(name="a")
    with pytest.raises(TensorError, match="tensor 'a': output requested more than once"):
        codec.requested_outputs(dup, OUTS)


def test_wants_raw() -> None:
    assert codec.wants_raw(request()) is True
    assert codec.wants_raw(raw_request(("x", DataType.FP32, np.ones((1, 2), np.float32)))) is True
    typed = request(tensor("x", "FP32", (1, 2), fp32_contents=[1, 2]))
    assert codec.wants_raw(typed) is False
    typed.parameters["binary_data_output"].bool_param = True
    assert codec.wants_raw(typed) is True
    raw = raw_request(("x", DataType.FP32, np.ones((1, 2), np.float32)))
    raw.parameters["binary_data_output"].bool_param = False
    assert codec.wants_raw(raw) is False
    ignored = request(tensor("x", "FP32", (1, 2), fp32_contents=[1, 2]))
    ignored.parameters["binary_data_output"].string_param = "true"  # not a bool: ignored
    assert codec.wants_raw(ignored) is False


# -- parsing ---------------------------------------------------------------------------------


def test_parse_infer_request() -> None:
    req = raw_request(("x", DataType.FP32, np.ones((1, 2), np.float32)))
    assert codec.parse_infer_request(req.SerializeToString()) == req
    with pytest.raises(InvalidRequest, match="not a valid ModelInferRequest"):
        codec.parse_infer_request(b"\xff\xff\xff")
    with pytest.raises(InvalidRequest, match="above the limit"):
        codec.parse_infer_request(b"\x00" * 100, CodecLimits(max_request_bytes=10))
