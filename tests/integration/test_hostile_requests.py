"""Hostile request parameters against a live server: capped, and none silently ignored."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from engine.protocol.generated.inference import grpc_service_pb2 as pb
from tests.integration.slow_model import ROWS, WIDTH, slow_graph
from tests.server_thread import ServerThread


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, example_graphs: Path) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("graphs")
    shutil.copytree(example_graphs / "quickstart", root / "quickstart")
    slow_graph(root / "slow")
    with ServerThread(root) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.url)
    yield c
    c.close()


def _x() -> list[triton.InferInput]:
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
    return [tensor]


def _raw_call(server: ServerThread, request: pb.ModelInferRequest) -> grpc.RpcError:
    with grpc.insecure_channel(server.url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(request.SerializeToString(), timeout=10)
    return info.value


def _quickstart_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="quickstart")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
    return request


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"sequence_id": 7, "sequence_start": True}, "sequence_id"),
        ({"priority": 2}, "priority"),
        ({"parameters": {"my_custom_parameter": 42}}, "my_custom_parameter"),
    ],
)
def test_a_parameter_the_engine_does_not_implement_is_invalid_argument_naming_it(
    client: triton.InferenceServerClient, options: dict[str, object], named: str
) -> None:
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("quickstart", _x(), **options)  # type: ignore[arg-type]
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"'{named}'" in info.value.message() and "parameter" in info.value.message()


def test_default_valued_schedule_parameters_mean_their_absence(server: ServerThread) -> None:
    request = _quickstart_request()
    request.parameters["sequence_id"].int64_param = 0
    request.parameters["priority"].uint64_param = 0
    request.parameters["binary_data_output"].bool_param = True
    with grpc.insecure_channel(server.url) as channel:
        reply = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(
            request.SerializeToString(), timeout=10
        )
    assert pb.ModelInferResponse.FromString(reply).raw_output_contents


def test_a_string_timeout_is_invalid_argument(server: ServerThread) -> None:
    request = _quickstart_request()
    request.parameters["timeout"].string_param = "5s"
    error = _raw_call(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'timeout'" in (error.details() or "")


def test_an_integer_timeout_bounds_the_call(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("x", [ROWS, WIDTH], "FP32")
    tensor.set_data_from_numpy(np.ones((ROWS, WIDTH), np.float32))
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("slow", [tensor], timeout=1000, client_timeout=30)  # 1 ms, in microseconds
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_a_flood_of_parameters_is_refused(server: ServerThread, client: triton.InferenceServerClient) -> None:
    request = _quickstart_request()
    for i in range(100_000):
        request.parameters[f"p{i}"].int64_param = i
    error = _raw_call(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "100000 parameters" in (error.details() or "")
    request = _quickstart_request()
    request.parameters["binary_data_output"].bool_param = True
    request.parameters["k" * 5000].bool_param = True
    error = _raw_call(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "5000 characters" in (error.details() or "")
    assert client.infer("quickstart", _x()).as_numpy("prob").shape == (1, 1)
