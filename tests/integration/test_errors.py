"""Every malformed request gets a precise status and a message naming the tensor; the
server keeps serving afterwards. Requests tritonclient refuses to build are sent as
hand-made protobuf (or plain garbage bytes) on a raw channel."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests import fraud_example as fraud
from tests.server_thread import ServerThread

ALL_TYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def _slow_model(path: Path, matmuls: int = 12, size: int = 384) -> None:
    """x [N, size] -> y [N, size] through many MatMuls: tens of milliseconds per run."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor(
        "w",
        TensorProto.FLOAT,
        [size, size],
        (rng.normal(size=(size, size)) / size).astype(np.float32).ravel().tolist(),
    )
    nodes, prev = [], "x"
    for i in range(matmuls):
        out = "y" if i == matmuls - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", size])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    import shutil

    shutil.copytree(example_graphs / "fraud", root / "fraud")
    types = root / "types"
    types.mkdir()
    lines = ["graph: types", "inputs:"]
    typed = [t for t in ALL_TYPES if t != "FP16"]  # V2 has no typed FP16: it gets a graph of its own
    lines += [f"  {t.lower()}: {{datatype: {t}, shape: [-1, 2]}}" for t in typed]
    lines += ["nodes:"] + [
        f"  {t.lower()}_echo: {{transform: identity, inputs: inputs.{t.lower()}}}" for t in typed
    ]
    lines += ["outputs:"] + [f"  {t.lower()}: {t.lower()}_echo" for t in typed]
    (types / "graph.yaml").write_text("\n".join(lines) + "\n")
    for name, datatype in (("ints", "INT8"), ("text", "BYTES"), ("halfs", "FP16")):
        (root / name).mkdir()
        (root / name / "graph.yaml").write_text(
            f"inputs: {{v: {{datatype: {datatype}, shape: [-1, 2]}}}}\n"
            "nodes: {echo: {transform: identity, inputs: inputs.v}}\noutputs: {v: echo}\n"
        )
    slow = root / "slow"
    slow.mkdir()
    _slow_model(slow / "slow.onnx")
    (slow / "graph.yaml").write_text(
        textwrap.dedent("""\
        graph: slow
        inputs:
          x: {datatype: FP32, shape: [-1, 384]}
        nodes:
          work: {model: slow.onnx, inputs: {x: inputs.x}, execution: pool, timeout: 2ms}
        outputs:
          y: work.y
        """)
    )
    return root


@pytest.fixture(scope="module")
def server(graphs: Path) -> Iterator[ServerThread]:
    with ServerThread(graphs, max_elements=1_000_000, feature_sources=fraud.feature_sources()) as running:
        assert all(e.versions for e in running.server.repository.entries()), [
            (e.name, e.last_error) for e in running.server.repository.entries()
        ]
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def raw(server: ServerThread) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(server.url)
    yield channel
    channel.close()


def _send(channel: grpc.Channel, payload: bytes, method: str = "ModelInfer") -> tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(
        f"/inference.GRPCInferenceService/{method}", request_serializer=None, response_deserializer=None
    )
    try:
        call(payload, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _input(name: str, array: np.ndarray, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _fraud_ok() -> list[triton.InferInput]:
    return [
        _input("amount", np.ones((2, 1), np.float32)),
        _input("user_id", fraud.user_ids("u0001", "nobody"), "BYTES"),
        _input("txn", np.ones((2, 3), np.float32)),
    ]


def _expect(client, inputs, code: str, *needles: str, model: str = "fraud", **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer(model, inputs, **kwargs)
    assert info.value.status() == f"StatusCode.{code}", info.value
    for needle in needles:
        assert needle in info.value.message(), info.value.message()
    return info.value.message()


def _fraud_request(**tensors: tuple[str, list[int]]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="fraud")
    for name, (datatype, shape) in tensors.items():
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


def test_every_datatype_round_trips_raw(client: triton.InferenceServerClient) -> None:
    rng = np.random.default_rng(1)
    inputs, expected = [], {}
    for name, dtype in ALL_TYPES.items():
        if name == "FP16":
            continue
        if name == "BYTES":
            array = np.array([[b"a", b""], [b"\x00\xff", "é".encode()]], dtype=object)
        elif name == "BOOL":
            array = np.array([[True, False], [False, True]])
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            array = np.array([[info.min, info.max], [0, 1]], dtype=dtype)
        else:
            array = rng.normal(size=(2, 2)).astype(dtype)
        inputs.append(_input(name.lower(), array, name))
        expected[name.lower()] = array
    result = client.infer("types", inputs)
    for name, array in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == array.dtype or name == "bytes", name
        np.testing.assert_array_equal(got, array, err_msg=name)


def test_typed_contents_are_answered_typed(raw: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="types")
    typed = {
        "BOOL": ("bool_contents", [True, False]),
        "UINT8": ("uint_contents", [0, 255]),
        "UINT16": ("uint_contents", [0, 65535]),
        "UINT32": ("uint_contents", [0, 2**32 - 1]),
        "UINT64": ("uint64_contents", [0, 2**64 - 1]),
        "INT8": ("int_contents", [-128, 127]),
        "INT16": ("int_contents", [-1, 1]),
        "INT32": ("int_contents", [-(2**31), 2**31 - 1]),
        "INT64": ("int64_contents", [-(2**63), 2**63 - 1]),
        "FP32": ("fp32_contents", [0.5, -1.5]),
        "FP64": ("fp64_contents", [1e300, -0.25]),
        "BYTES": ("bytes_contents", [b"x", b"yz"]),
    }
    for name, (field, values) in typed.items():
        tensor = request.inputs.add(name=name.lower(), datatype=name, shape=[1, 2])
        getattr(tensor.contents, field).extend(values)
    call = raw.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    response = call(request, timeout=10)
    assert not response.raw_output_contents
    by_name = {t.name: t for t in response.outputs}
    for name, (field, values) in typed.items():
        assert list(getattr(by_name[name.lower()].contents, field)) == values, name


def test_fp16_travels_raw_only(client: triton.InferenceServerClient, raw: grpc.Channel) -> None:
    halves = np.array([[0.5, -2.0], [65504.0, 0.0]], dtype=np.float16)
    np.testing.assert_array_equal(client.infer("halfs", [_input("v", halves, "FP16")]).as_numpy("v"), halves)
    request = pb.ModelInferRequest(model_name="halfs")
    request.inputs.add(name="v", datatype="FP16", shape=[1, 2]).contents.fp32_contents.extend([1.0, 2.0])
    code, details = _send(raw, request.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'v'" in details and "FP16" in details


@pytest.mark.parametrize(
    ("inputs", "needles"),
    [
        (lambda: _fraud_ok()[:2], ["txn", "missing"]),
        (lambda: _fraud_ok()[:1], ["2 inputs missing: 'user_id' (BYTES [-1, 1]), 'txn' (FP32 [-1, 3])"]),
        (lambda: [*_fraud_ok(), _input("bonus", np.ones((2, 1), np.float32))], ["bonus"]),
        (lambda: [*_fraud_ok(), _input("amount", np.ones((2, 1), np.float32))], ["amount", "more than once"]),
        (
            lambda: [_input("amount", np.ones((2, 1), np.float64), "FP64"), *_fraud_ok()[1:]],
            ["amount", "FP64"],
        ),
        (
            lambda: [_fraud_ok()[0], _input("user_id", np.ones((2, 1), np.float32)), _fraud_ok()[2]],
            ["user_id", "FP32", "BYTES"],
        ),
        (lambda: [*_fraud_ok()[:2], _input("txn", np.ones((2, 3, 1), np.float32))], ["txn"]),
        (lambda: [*_fraud_ok()[:2], _input("txn", np.ones((2, 6), np.float32))], ["txn"]),  # the old [-1, 6]
        (lambda: [*_fraud_ok()[:2], _input("txn", np.ones((3, 3), np.float32))], ["batch"]),
    ],
    ids=[
        "missing",
        "missing-several",
        "extra",
        "duplicate",
        "datatype",
        "bytes-datatype",
        "rank",
        "dimension",
        "batch-mismatch",
    ],
)
def test_malformed_inputs_are_invalid_argument(client, inputs, needles) -> None:  # type: ignore[no-untyped-def]
    _expect(client, inputs(), "INVALID_ARGUMENT", *needles)


def test_unknown_output_is_invalid_argument(client: triton.InferenceServerClient) -> None:
    _expect(
        client, _fraud_ok(), "INVALID_ARGUMENT", "verdict", outputs=[triton.InferRequestedOutput("verdict")]
    )


def test_unknown_graph_and_version_are_not_found(client: triton.InferenceServerClient) -> None:
    _expect(client, _fraud_ok(), "NOT_FOUND", "nope", model="nope")
    _expect(client, _fraud_ok(), "NOT_FOUND", "version '7'", model_version="7")


def _raw_case(name: str) -> pb.ModelInferRequest:
    ones = np.ones((2, 1), np.float32).tobytes()
    ids = b"".join(len(i).to_bytes(4, "little") + i for i in (b"u0001", b"nobody"))  # BYTES: length-prefixed
    txn = np.ones((2, 3), np.float32).tobytes()
    rest = {"user_id": ("BYTES", [2, 1]), "txn": ("FP32", [2, 3])}
    if name == "negative-dim":
        r = _fraud_request(amount=("FP32", [-2, 1]), **rest)
        r.raw_input_contents.extend([ones, ids, txn])
    elif name == "raw-size":
        r = _fraud_request(amount=("FP32", [2, 1]), **rest)
        r.raw_input_contents.extend([ones[:-1], ids, txn])
    elif name == "typed-and-raw":
        r = _fraud_request(amount=("FP32", [2, 1]), **rest)
        r.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
        r.raw_input_contents.extend([ones, ids, txn])
    elif name == "overflow":
        r = _fraud_request(amount=("FP32", [2**40, 2**40]), **rest)
        r.raw_input_contents.extend([ones, ids, txn])
    elif name == "too-many-elements":
        r = _fraud_request(amount=("FP32", [2_000_000, 1]), **rest)
        r.raw_input_contents.extend([ones, ids, txn])
    elif name == "typed-count":
        r = _fraud_request(amount=("FP32", [2, 1]), **rest)
        r.inputs[0].contents.fp32_contents.extend([1.0])
        r.inputs[1].contents.bytes_contents.extend([b"u0001", b"nobody"])
        r.inputs[2].contents.fp32_contents.extend([1.0] * 6)
    elif name == "out-of-range":
        r = pb.ModelInferRequest(model_name="ints")
        r.inputs.add(name="v", datatype="INT8", shape=[1, 2]).contents.int_contents.extend([300, 1])
    elif name == "bytes-framing":
        r = pb.ModelInferRequest(model_name="text")
        r.inputs.add(name="v", datatype="BYTES", shape=[1, 2])
        r.raw_input_contents.append((5).to_bytes(4, "little") + b"ab")
    else:
        raise AssertionError(name)
    return r


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("negative-dim", "amount"),
        ("raw-size", "amount"),
        ("typed-and-raw", "amount"),
        ("overflow", "amount"),
        ("too-many-elements", "amount"),
        ("typed-count", "amount"),
        ("out-of-range", "'v'"),
        ("bytes-framing", "'v'"),
    ],
)
def test_hand_made_bad_requests_are_invalid_argument(raw: grpc.Channel, case: str, needle: str) -> None:
    code, details = _send(raw, _raw_case(case).SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert needle in details


@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x0a\xff\x01", bytes(range(256))])
def test_unparseable_bytes_are_invalid_argument_not_unknown(raw: grpc.Channel, payload: bytes) -> None:
    code, details = _send(raw, payload)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    code, _ = _send(raw, payload, method="ModelMetadata")
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_node_timeout_is_deadline_exceeded_naming_the_node(client: triton.InferenceServerClient) -> None:
    x = np.ones((512, 384), np.float32)
    _expect(client, [_input("x", x)], "DEADLINE_EXCEEDED", "work", model="slow")


def test_server_still_serves_after_every_error(client: triton.InferenceServerClient) -> None:
    result = client.infer("fraud", _fraud_ok())
    assert result.as_numpy("score").shape == (2, 1)
    assert client.is_server_ready()


def test_unimplemented_rpcs_say_so(raw: grpc.Channel) -> None:
    code, _ = _send(raw, b"", method="CudaSharedMemoryStatus")
    assert code == grpc.StatusCode.UNIMPLEMENTED
