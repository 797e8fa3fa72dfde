"""The committed stubs match the .proto sources, and our bytes are Triton's bytes."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from engine.protocol import codec
from engine.protocol.generated.inference import grpc_service_pb2 as ours
from engine.protocol.generated.inference import model_config_pb2 as ours_config

REPO = Path(__file__).resolve().parents[2]

triton_pb = pytest.importorskip("tritonclient.grpc.service_pb2")
triton_config = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generator = load_generator()
    generator.generate(tmp_path)
    fresh = files_under(tmp_path)
    committed = files_under(generator.OUT_DIR)
    stale = sorted(rel for rel in fresh.keys() | committed.keys() if fresh.get(rel) != committed.get(rel))
    assert not stale, f"generated stubs are stale ({', '.join(stale)}): run make proto"
    assert generator.stale_files() == [], "generated stubs are stale: run make proto"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generator = load_generator()
    generator.generate(tmp_path / "a")
    generator.generate(tmp_path / "b")
    assert files_under(tmp_path / "a") == files_under(tmp_path / "b")


# -- field-by-field agreement with tritonclient's generated classes --------------------------


def walk(descriptor: Descriptor) -> Iterator[Descriptor]:
    yield descriptor
    for nested in descriptor.nested_types:
        yield from walk(nested)


def triton_message(full_name: str) -> Descriptor:
    for module in (triton_pb, triton_config):
        for top in module.DESCRIPTOR.message_types_by_name.values():
            for descriptor in walk(top):
                if descriptor.full_name == full_name:
                    return descriptor
    raise AssertionError(f"{full_name} is not in tritonclient's protocol")


def kind(field: FieldDescriptor) -> tuple[object, ...]:
    target = field.message_type or field.enum_type
    return (field.type, field.is_repeated, target.full_name if target else None)


def check_enum(mine: EnumDescriptor, theirs: EnumDescriptor) -> None:
    their_values = {v.name: v.number for v in theirs.values}
    for value in mine.values:
        assert their_values.get(value.name) == value.number, f"{mine.full_name}.{value.name}"


@pytest.mark.parametrize("module", [ours, ours_config], ids=["grpc_service", "model_config"])
def test_every_field_number_and_type_matches_triton(module: ModuleType) -> None:
    checked = 0
    for top in module.DESCRIPTOR.message_types_by_name.values():
        for mine in walk(top):
            theirs = triton_message(mine.full_name)
            for field in mine.fields:
                their_field = theirs.fields_by_name.get(field.name)
                assert their_field is not None, f"{mine.full_name}.{field.name} is not in Triton's protocol"
                assert field.number == their_field.number, f"{mine.full_name}.{field.name} number"
                assert kind(field) == kind(their_field), f"{mine.full_name}.{field.name} type"
                if field.enum_type is not None:
                    check_enum(field.enum_type, their_field.enum_type)
                checked += 1
    assert checked > 20
    for enum in module.DESCRIPTOR.enum_types_by_name.values():
        check_enum(enum, triton_config.DESCRIPTOR.enum_types_by_name[enum.name])


def test_service_methods_match_triton() -> None:
    mine = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert mine.full_name == "inference.GRPCInferenceService"
    for method in mine.methods:
        their = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == their.input_type.full_name
        assert method.output_type.full_name == their.output_type.full_name


def fill(message: Message, depth: int = 0) -> Message:
    """Set every field (every oneof member in turn, the last one winning) to a non-default value."""
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields
            key = "k" if key_field.type == FieldDescriptor.TYPE_STRING else 7
            container = getattr(message, field.name)
            if value_field.message_type is not None:
                if depth < 3:
                    fill(container[key], depth + 1)
            else:
                container[key] = scalar(value_field, 1)
        elif field.message_type is not None:
            if depth >= 3:
                continue
            if field.is_repeated:
                fill(getattr(message, field.name).add(), depth + 1)
                fill(getattr(message, field.name).add(), depth + 1)
            else:
                fill(getattr(message, field.name), depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).extend([scalar(field, 1), scalar(field, 2)])
        else:
            setattr(message, field.name, scalar(field, 3))
    return message


def scalar(field: FieldDescriptor, seed: int) -> object:
    t = field.type
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t == FieldDescriptor.TYPE_STRING:
        return f"s{seed}"
    if t == FieldDescriptor.TYPE_BYTES:
        return bytes([seed, 0, 255])
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return seed + 0.5
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return -seed * 1000
    return seed * 1000


def to_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@pytest.mark.parametrize("name", sorted(ours.DESCRIPTOR.message_types_by_name))
def test_our_bytes_parse_as_tritons(name: str) -> None:
    mine = fill(getattr(ours, name)())
    theirs = getattr(triton_pb, name).FromString(mine.SerializeToString())
    assert to_dict(theirs) == to_dict(mine)


def test_model_infer_response_reads_back_in_tritonclient() -> None:
    from tritonclient.grpc import InferResult

    response = codec.encode_response(
        model_name="fraud",
        model_version="3",
        request_id="req-9",
        outputs=[
            ("score", np.array([[0.25], [0.75]], np.float32)),
            ("label", np.array([b"ok", b"fraud"], object)),
        ],
        raw=True,
    )
    response.parameters["note"].string_param = "x"
    theirs = triton_pb.ModelInferResponse.FromString(response.SerializeToString())
    assert to_dict(theirs) == to_dict(response)
    result = InferResult(theirs)
    np.testing.assert_array_equal(result.as_numpy("score"), np.array([[0.25], [0.75]], np.float32))
    assert result.as_numpy("label").tolist() == [b"ok", b"fraud"]
    assert result.get_response().id == "req-9"


def test_model_config_response_reads_back_in_tritonclient() -> None:
    config = ours_config.ModelConfig(
        name="fraud",
        platform="ensemble",
        backend="",
        max_batch_size=0,
        input=[
            ours_config.ModelInput(name="amount", data_type=ours_config.TYPE_FP32, dims=[-1, 1]),
            ours_config.ModelInput(
                name="user_id", data_type=ours_config.TYPE_STRING, dims=[-1], optional=True
            ),
        ],
        output=[ours_config.ModelOutput(name="score", data_type=ours_config.TYPE_FP32, dims=[-1, 1])],
        version_policy=ours_config.ModelVersionPolicy(
            specific=ours_config.ModelVersionPolicy.Specific(versions=[3])
        ),
    )
    step = config.ensemble_scheduling.step.add(model_name="fraud.deep", model_version=-1)
    step.input_map["x"] = "x"
    step.output_map["prob"] = "deep_prob"
    config.parameters["source"].string_value = "graphs/fraud/graph.yaml"
    response = ours.ModelConfigResponse(config=config)
    theirs = triton_pb.ModelConfigResponse.FromString(response.SerializeToString())
    assert to_dict(theirs) == to_dict(response)
    assert theirs.config.input[1].data_type == triton_config.TYPE_STRING
    assert theirs.config.ensemble_scheduling.step[0].output_map["prob"] == "deep_prob"
    assert theirs.config.WhichOneof("scheduling_choice") == "ensemble_scheduling"


def test_stubs_coexist_with_tritonclient_in_one_process() -> None:
    """Our stubs use a private descriptor pool, so tritonclient's copy does not clash."""
    from engine.protocol.generated import POOL

    assert ours.ModelInferRequest.DESCRIPTOR.file.pool is POOL
    assert triton_pb.ModelInferRequest.DESCRIPTOR.full_name == ours.ModelInferRequest.DESCRIPTOR.full_name


def test_engine_service_stubs() -> None:
    from engine.protocol.generated.engine.v1 import engine_pb2, engine_pb2_grpc

    methods = {m.name for m in engine_pb2.DESCRIPTOR.services_by_name["Engine"].methods}
    assert methods == {
        "ListGraphs",
        "DescribeGraph",
        "ValidateGraph",
        "Explain",
        "ReloadGraphs",
        "ShadowReport",
        "MonitorReport",
        "Feedback",
        "Rollout",
    }
    assert hasattr(engine_pb2_grpc, "EngineStub") and hasattr(engine_pb2_grpc, "add_EngineServicer_to_server")
    trace = engine_pb2.NodeTrace(name="deep", kind="model", start_ns=10, duration_ns=5, rows=2)
    trace.outputs.append(codec.encode_tensor("prob", np.array([[0.5], [0.25]], np.float32)))
    trace.branch_rows["deep"] = 2
    request = ours.ModelInferRequest(model_name="fraud")
    explained = engine_pb2.ExplainResponse(graph="fraud", version="3", total_ns=20, nodes=[trace])
    explained.response.model_name = "fraud"
    again = engine_pb2.ExplainResponse.FromString(explained.SerializeToString())
    assert list(again.nodes[0].outputs[0].contents.fp32_contents) == [0.5, 0.25]
    assert engine_pb2.ExplainRequest(request=request, include_tensors=True).request.model_name == "fraud"
