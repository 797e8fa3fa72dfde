"""Graph metadata, Triton-style model config and statistics as protobuf messages.

A graph is served as a model with ``platform: "ensemble"``: its nodes are the
ensemble's steps, each answering ModelConfig / ModelStatistics as a composing
model named ``<graph>.<node>``, so tools such as perf_analyzer print a per-node
breakdown.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.execution.stats import Duration, GraphStats, NodeStats
from engine.graph.values.plan import NodeInfo
from engine.protocol.generated.inference import grpc_service_pb2 as pb
from engine.protocol.generated.inference import model_config_pb2 as mc
from engine.serving import GraphView
from engine.serving.admin import NODE_SEPARATOR
from engine.tensors import TensorSpec

PLATFORM = "ensemble"

_CONFIG_TYPES = {
    "BOOL": mc.TYPE_BOOL,
    "UINT8": mc.TYPE_UINT8,
    "UINT16": mc.TYPE_UINT16,
    "UINT32": mc.TYPE_UINT32,
    "UINT64": mc.TYPE_UINT64,
    "INT8": mc.TYPE_INT8,
    "INT16": mc.TYPE_INT16,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "FP16": mc.TYPE_FP16,
    "FP32": mc.TYPE_FP32,
    "FP64": mc.TYPE_FP64,
    "BYTES": mc.TYPE_STRING,
}


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype.value, shape=list(spec.shape)
    )


def model_metadata(view: GraphView) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=view.name,
        versions=list(view.versions),
        platform=PLATFORM,
        inputs=[_tensor_metadata(s) for s in view.inputs],
        outputs=[_tensor_metadata(s) for s in view.outputs],
    )


def batches(specs: Iterable[TensorSpec]) -> bool:
    """Whether every tensor's first dimension is the batch (-1), as Triton's max_batch_size > 0 means."""
    return all(s.shape and s.shape[0] == -1 for s in specs)


def model_config(view: GraphView, max_batch_size: int) -> mc.ModelConfig:
    batching = batches(view.inputs) and batches(view.outputs)
    skip = 1 if batching else 0
    config = mc.ModelConfig(
        name=view.name,
        platform=PLATFORM,
        max_batch_size=max_batch_size if batching else 0,
        input=[
            mc.ModelInput(name=s.name, data_type=_CONFIG_TYPES[s.datatype.value], dims=list(s.shape[skip:]))
            for s in view.inputs
        ],
        output=[
            mc.ModelOutput(name=s.name, data_type=_CONFIG_TYPES[s.datatype.value], dims=list(s.shape[skip:]))
            for s in view.outputs
        ],
    )
    config.parameters["graph_version"].string_value = view.version
    config.parameters["source_sha256"].string_value = view.source_sha256
    for node in view.nodes:
        if node.kind == "shadow":  # off the response path: not a step of the ensemble
            continue
        step = config.ensemble_scheduling.step.add()
        step.model_name = view.name + NODE_SEPARATOR + node.name
        step.model_version = int(view.version) if view.version.isdigit() else -1
        for i, ref in enumerate(node.inputs):  # the step's own input name -> the tensor it reads
            name = node.input_specs[i].name if i < len(node.input_specs) else f"input{i}"
            step.input_map[name] = ref
        for out in node.outputs:
            step.output_map[out.name] = f"{node.name}.{out.name}"
        if node.model_sha256:
            config.parameters[f"{node.name}.sha256"].string_value = node.model_sha256
    return config


def node_metadata(view: GraphView, node: NodeInfo) -> pb.ModelMetadataResponse:
    """A composing model's metadata (``<graph>.<node>``): the node's own inputs and outputs."""
    return pb.ModelMetadataResponse(
        name=view.name + NODE_SEPARATOR + node.name,
        versions=list(view.versions),
        platform="onnxruntime_onnx" if node.kind == "model" else node.kind,
        inputs=[_tensor_metadata(s) for s in node.input_specs],
        outputs=[_tensor_metadata(s) for s in node.outputs],
    )


def node_config(view: GraphView, node: NodeInfo) -> mc.ModelConfig:
    """A composing model's config: a node with its inputs and outputs."""
    config = mc.ModelConfig(
        name=view.name + NODE_SEPARATOR + node.name,
        platform="onnxruntime_onnx" if node.kind == "model" else node.kind,
        backend="onnxruntime" if node.kind == "model" else "graph",
        input=[
            mc.ModelInput(name=s.name, data_type=_CONFIG_TYPES[s.datatype.value], dims=list(s.shape))
            for s in node.input_specs
        ],
        output=[
            mc.ModelOutput(name=s.name, data_type=_CONFIG_TYPES[s.datatype.value], dims=list(s.shape))
            for s in node.outputs
        ],
    )
    config.parameters["kind"].string_value = node.kind
    config.parameters["detail"].string_value = node.detail
    if node.model_sha256:
        config.parameters["sha256"].string_value = node.model_sha256
    return config


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def graph_statistics(stats: GraphStats) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=stats.name,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
        ),
    )


def node_statistics(graph: str, version: str, stats: NodeStats) -> pb.ModelStatistics:
    """A node's counters: thread-pool wait is its queue time, the rest its compute_infer."""
    return pb.ModelStatistics(
        name=graph + NODE_SEPARATOR + stats.name,
        version=version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.rows,
        execution_count=stats.success.count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=pb.StatisticDuration(count=stats.success.count, ns=0),
            compute_infer=pb.StatisticDuration(
                count=stats.success.count, ns=stats.success.ns - stats.queue.ns
            ),
            compute_output=pb.StatisticDuration(count=stats.success.count, ns=0),
        ),
    )
