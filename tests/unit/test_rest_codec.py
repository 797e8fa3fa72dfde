"""The REST tensor codec and status table on their own: every datatype both ways, and every check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import GraphNotFound, Overloaded, Status, TensorError
from engine.rest import codec
from engine.rest.status import HTTP_CODES, error_reply
from engine.tensors import DataType, TensorSpec

LIMITS = codec.RestLimits(max_elements=1000, max_request_bytes=1 << 20)


def _sample(datatype: DataType) -> np.ndarray:
    if datatype is DataType.BYTES:
        return np.array([[b"a", b""], [b"\xc3\xa9t\xc3\xa9", b"zz"]], dtype=object)
    if datatype is DataType.BOOL:
        return np.array([[True, False], [False, True]])
    info = np.finfo if datatype.is_float else np.iinfo
    dtype = datatype.numpy_dtype
    return np.array([[info(dtype).min, 0], [1, info(dtype).max]], dtype=dtype)


def _round_trip(array: np.ndarray, datatype: DataType, binary: bool) -> np.ndarray:
    spec = TensorSpec("t", datatype, (-1, 2))
    choice = codec.OutputChoice("t", binary)
    body, header_length = codec.encode_response(
        model_name="m", model_version="1", request_id="", outputs=[(choice, array)]
    )
    header = json.loads(body[: header_length or len(body)])
    tensor = header["outputs"][0]
    tensor.pop("parameters", None)
    if binary:
        tensor["parameters"] = {"binary_data_size": len(body) - (header_length or 0)}
    request = json.dumps({"inputs": [tensor]}).encode()
    blob = body[header_length:] if header_length else b""
    parsed = codec.parse_request(request + blob, str(len(request)) if binary else None, LIMITS)
    (decoded,) = codec.decode_inputs(parsed, [spec], LIMITS)
    return decoded


@pytest.mark.parametrize("datatype", [d for d in DataType if d is not DataType.FP16], ids=lambda d: d.value)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_round_trips(datatype: DataType, binary: bool) -> None:
    array = _sample(datatype)
    decoded = _round_trip(array, datatype, binary)
    assert decoded.shape == array.shape and decoded.tolist() == array.tolist()


def test_fp16_round_trips_in_binary_and_json() -> None:
    array = np.array([[0.5, -2.0], [65504.0, 1e-3]], dtype=np.float16)
    for binary in (False, True):
        np.testing.assert_array_equal(_round_trip(array, DataType.FP16, binary), array)


def _decode(tensor: dict[str, object], spec: TensorSpec, blob: bytes = b"") -> np.ndarray:
    header = json.dumps({"inputs": [tensor]}).encode()
    parsed = codec.parse_request(header + blob, str(len(header)) if blob else None, LIMITS)
    return codec.decode_inputs(parsed, [spec], LIMITS)[0]


@pytest.mark.parametrize(
    ("tensor", "needle"),
    [
        ({"name": "x", "datatype": "INT8", "shape": [1, 2], "data": [1, 300]}, "out of range"),
        ({"name": "x", "datatype": "INT8", "shape": [1, 2], "data": [1, 2.5]}, "integers"),
        ({"name": "x", "datatype": "INT8", "shape": [1, 2], "data": [1, "2"]}, "numbers"),
        ({"name": "x", "datatype": "INT8", "shape": [1, 2], "data": [True, 1]}, "numbers"),
        ({"name": "x", "datatype": "INT8", "shape": [1, -2], "data": []}, "negative"),
        ({"name": "x", "datatype": "INT8", "shape": [1, 2000], "data": []}, "limit"),
        ({"name": "x", "datatype": "INT8", "shape": "12", "data": []}, "list of integers"),
        ({"name": "x", "datatype": "INT8", "shape": [1, 2]}, "no data"),
    ],
)
def test_json_data_is_checked(tensor: dict[str, object], needle: str) -> None:
    with pytest.raises(TensorError) as raised:
        _decode(tensor, TensorSpec("x", DataType.INT8, (-1, -1)))
    assert needle in str(raised.value) and raised.value.tensor == "x"


def test_nested_json_is_flattened_in_row_major_order() -> None:
    decoded = _decode(
        {"name": "x", "datatype": "INT32", "shape": [2, 2, 1], "data": [[[1], [2]], [[3], [4]]]},
        TensorSpec("x", DataType.INT32, (2, 2, 1)),
    )
    assert decoded.ravel().tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (b"\x05\x00\x00\x00ab", "declares 5 bytes"),
        (b"\x01\x00", "ends inside the length"),
        (b"\x01\x00\x00\x00a\x00", "left after"),
    ],
)
def test_bytes_framing_is_checked(blob: bytes, needle: str) -> None:
    tensor = {"name": "k", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(blob)}}
    with pytest.raises(TensorError) as raised:
        _decode(tensor, TensorSpec("k", DataType.BYTES, (-1,)), blob)
    assert needle in str(raised.value)


def test_every_status_has_an_http_code_and_internal_errors_hide_their_text() -> None:
    assert set(HTTP_CODES) == set(Status)
    reply = error_reply(RuntimeError("secret at /srv/engine/0x7f3a"))
    body = json.loads(reply.body)
    assert reply.code == 500 and "secret" not in body["error"] and "/srv" not in body["error"]
    assert body["error"] == f"internal error (id {body['error_id']})"
    shed = error_reply(Overloaded("server at capacity", retry_after_ms=1500))
    assert shed.code == 429 and dict(shed.headers) == {"Retry-After": "2", "Retry-After-Ms": "1500"}
    assert error_reply(GraphNotFound("g", "")).code == 404
