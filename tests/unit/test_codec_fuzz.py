"""Property tests: whatever a client sends, the codec answers a request error, never a crash."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InvalidRequest, Unimplemented
from engine.protocol import codec
from engine.protocol.codec import CodecLimits
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.tensors import DataType, TensorSpec

ALLOWED = (InvalidRequest, Unimplemented)  # TensorError is an InvalidRequest
LIMITS = CodecLimits(max_elements=4096, max_request_bytes=1 << 20)
FIELDS = [
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

datatype_names = st.sampled_from([dt.value for dt in DataType] + ["", "fp32", "BF16", "STRING", "\x00"])
dims = st.one_of(st.integers(-3, 6), st.integers(-(2**63), 2**63 - 1))
shapes = st.lists(dims, max_size=4)
names = st.sampled_from(["a", "b", "c", "", "ü"])


def field_values(field: str) -> st.SearchStrategy[list]:
    element = {
        "bool_contents": st.booleans(),
        "int_contents": st.integers(-(2**31), 2**31 - 1),
        "int64_contents": st.integers(-(2**63), 2**63 - 1),
        "uint_contents": st.integers(0, 2**32 - 1),
        "uint64_contents": st.integers(0, 2**64 - 1),
        "fp32_contents": st.floats(width=32, allow_nan=True),
        "fp64_contents": st.floats(allow_nan=True),
        "bytes_contents": st.binary(max_size=8),
    }[field]
    return st.lists(element, max_size=12)


@st.composite
def input_tensors(draw: st.DrawFn) -> pb.ModelInferRequest.InferInputTensor:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=draw(names), datatype=draw(datatype_names), shape=draw(shapes)
    )
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=2, unique=True)):
        getattr(tensor.contents, field).extend(draw(field_values(field)))
    return tensor


@st.composite
def length_framed(draw: st.DrawFn) -> bytes:
    """Raw BYTES contents: mostly well framed, sometimes lying about lengths."""
    parts = []
    for element in draw(st.lists(st.binary(max_size=6), max_size=6)):
        length = draw(st.one_of(st.just(len(element)), st.integers(0, 2**32 - 1)))
        parts.append(length.to_bytes(4, "little") + element)
    return b"".join(parts) + draw(st.binary(max_size=3))


raw_entries = st.lists(st.one_of(st.binary(max_size=64), length_framed()), max_size=4)


@st.composite
def requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(inputs=draw(st.lists(input_tensors(), max_size=3)))
    if draw(st.booleans()):
        request.raw_input_contents.extend(draw(raw_entries))
    for name in draw(st.lists(names, max_size=2)):
        request.outputs.add(name=name)
    return request


@st.composite
def expectations(draw: st.DrawFn) -> list[TensorSpec]:
    chosen = draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True))
    return [
        TensorSpec(
            name,
            draw(st.sampled_from(list(DataType))),
            tuple(draw(st.lists(st.sampled_from([-1, 0, 1, 2, 3]), max_size=3))),
        )
        for name in chosen
    ]


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_parse_or_raise_invalid_request(data: bytes) -> None:
    try:
        request = codec.parse_infer_request(data, LIMITS)
    except InvalidRequest:
        return
    assert isinstance(request, pb.ModelInferRequest)
    specs = [TensorSpec("a", DataType.FP32, (-1,)), TensorSpec("", DataType.BYTES, (-1,))]
    with contextlib.suppress(*ALLOWED):
        codec.decode_inputs(request, specs, LIMITS)
    with contextlib.suppress(*ALLOWED):
        codec.requested_outputs(request, specs)
    codec.wants_raw(request)


@FUZZ
@given(requests())
def test_mutated_valid_requests_parse_or_raise_invalid_request(request: pb.ModelInferRequest) -> None:
    data = bytearray(request.SerializeToString())
    for index in range(0, len(data), 7):
        data[index] ^= 0x5A
    with contextlib.suppress(InvalidRequest):
        codec.parse_infer_request(bytes(data), LIMITS)


@FUZZ
@given(requests(), expectations())
def test_decode_never_raises_anything_but_request_errors(
    request: pb.ModelInferRequest, expected: list[TensorSpec]
) -> None:
    try:
        decoded = codec.decode_inputs(request, expected, LIMITS)
    except ALLOWED:
        pass
    else:
        assert list(decoded) == [spec.name for spec in expected]
        for spec in expected:
            array = decoded[spec.name]
            assert isinstance(array, np.ndarray)
            assert spec.accepts_shape(array.shape)
            assert array.dtype == spec.datatype.numpy_dtype
            assert array.size <= LIMITS.max_elements
    with contextlib.suppress(*ALLOWED):
        codec.requested_outputs(request, expected)
    assert isinstance(codec.wants_raw(request), bool)


@FUZZ
@given(
    st.sampled_from([dt for dt in DataType if dt is not DataType.BYTES]),
    st.lists(st.integers(0, 5), max_size=3),
    st.data(),
)
def test_well_formed_raw_round_trips(datatype: DataType, shape: list[int], data: st.DataObject) -> None:
    count = int(np.prod(shape))
    itemsize = datatype.numpy_dtype.itemsize
    payload = data.draw(st.binary(min_size=count * itemsize, max_size=count * itemsize))
    if datatype is DataType.BOOL:
        payload = bytes(b & 1 for b in payload)
    request = pb.ModelInferRequest(
        inputs=[pb.ModelInferRequest.InferInputTensor(name="a", datatype=datatype.value, shape=shape)],
        raw_input_contents=[payload],
    )
    array = codec.decode_inputs(request, [TensorSpec("a", datatype, tuple(-1 for _ in shape))], LIMITS)["a"]
    assert array.shape == tuple(shape)
    response = codec.encode_response(
        model_name="m", model_version="", request_id="", outputs=[("a", array)], raw=True
    )
    assert response.raw_output_contents[0] == payload


@st.composite
def matching(draw: st.DrawFn) -> tuple[pb.ModelInferRequest, list[TensorSpec]]:
    """A request aimed at ``expected``: right names and datatypes, shapes and data drawn near the mark."""
    expected = draw(expectations())
    request = pb.ModelInferRequest()
    use_raw = draw(st.booleans())
    for spec in expected:
        shape = [draw(st.integers(0, 3)) if d == -1 else d for d in spec.shape]
        if draw(st.integers(0, 9)) == 0:
            shape = draw(shapes)
        tensor = request.inputs.add(name=spec.name, datatype=spec.datatype.value, shape=shape)
        count = int(np.prod(shape)) if all(0 <= d < 8 for d in shape) else 1
        if use_raw:
            if spec.datatype is DataType.BYTES:
                raw = draw(length_framed())
            else:
                size = count * spec.datatype.numpy_dtype.itemsize
                raw = draw(st.one_of(st.binary(min_size=size, max_size=size), st.binary(max_size=size + 2)))
            request.raw_input_contents.append(raw)
        else:
            field = draw(st.sampled_from(FIELDS))
            getattr(tensor.contents, field).extend(draw(field_values(field)))
    return request, expected


@FUZZ
@given(matching())
def test_decode_of_near_miss_requests_never_crashes(
    case: tuple[pb.ModelInferRequest, list[TensorSpec]],
) -> None:
    request, expected = case
    try:
        decoded = codec.decode_inputs(request, expected, LIMITS)
    except ALLOWED:
        return
    for spec in expected:
        assert spec.accepts_shape(decoded[spec.name].shape)
        assert decoded[spec.name].dtype == spec.datatype.numpy_dtype
