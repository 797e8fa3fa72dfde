"""Generated requests against a live server: every answer is a defined status, never
INTERNAL or UNKNOWN, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.server_thread import ServerThread

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip
DATATYPES = ["FP32", "FP64", "FP16", "INT8", "INT64", "UINT8", "BOOL", "BYTES", "fp32", "", "QUUX"]


@pytest.fixture(scope="module")
def channel(example_graphs: Path) -> Iterator[grpc.Channel]:
    with (
        ServerThread(example_graphs, max_elements=100_000) as server,
        grpc.insecure_channel(server.url) as ch,
    ):
        yield ch


def _call(channel: grpc.Channel, payload: bytes) -> grpc.StatusCode:
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    try:
        infer(payload, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


tensors = st.builds(
    lambda name, datatype, shape, raw, floats, ints, strings: (
        name,
        datatype,
        shape,
        raw,
        floats,
        ints,
        strings,
    ),
    st.sampled_from(["amount", "user_id", "txn", "x", "amount", ""]),
    st.sampled_from(DATATYPES),
    st.lists(st.integers(-3, 2**40), max_size=4),
    st.one_of(st.none(), st.binary(max_size=64)),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=8),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
    st.lists(st.binary(max_size=8), max_size=4),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.sampled_from(["fraud", "quickstart", "nope", ""]),
    version=st.sampled_from(["", "1", "2", "x"]),
    inputs=st.lists(tensors, max_size=4),
    outputs=st.lists(st.sampled_from(["score", "decision", "prob", "z", "nope"]), max_size=3),
    garble=st.one_of(st.none(), st.integers(0, 200)),
)
def test_generated_requests_get_defined_statuses(channel, model, version, inputs, outputs, garble) -> None:  # type: ignore[no-untyped-def]
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, raw, floats, ints, strings in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw is not None:
            request.raw_input_contents.append(raw)
        elif datatype.upper() in ("FP32", "FP16"):
            tensor.contents.fp32_contents.extend(floats)
        elif datatype.upper() == "BYTES":
            tensor.contents.bytes_contents.extend(strings)
        else:
            tensor.contents.int64_contents.extend(ints)
    for name in outputs:
        request.outputs.add(name=name)
    payload = request.SerializeToString()
    if garble is not None and payload:  # flip one byte: often no longer valid protobuf
        i = garble % len(payload)
        payload = payload[:i] + bytes([payload[i] ^ 0xFF]) + payload[i + 1 :]
    assert _call(channel, payload) in ALLOWED


def test_the_server_still_serves_after_the_fuzzing(channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="quickstart")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0, 0, 0, 0])
    assert _call(channel, request.SerializeToString()) == grpc.StatusCode.OK
