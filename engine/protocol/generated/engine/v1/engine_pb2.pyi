from engine.protocol.generated.inference import grpc_service_pb2 as _grpc_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListGraphsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGraphsResponse(_message.Message):
    __slots__ = ("graphs",)
    GRAPHS_FIELD_NUMBER: _ClassVar[int]
    graphs: _containers.RepeatedCompositeFieldContainer[GraphSummary]
    def __init__(self, graphs: _Optional[_Iterable[_Union[GraphSummary, _Mapping]]] = ...) -> None: ...

class GraphSummary(_message.Message):
    __slots__ = ("name", "version", "state", "last_error", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    state: str
    last_error: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., last_error: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeGraphRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "kind", "detail", "inputs", "outputs", "branches", "model_path", "model_sha256", "model_source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    BRANCHES_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    detail: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    branches: _containers.RepeatedScalarFieldContainer[str]
    model_path: str
    model_sha256: str
    model_source: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., detail: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., branches: _Optional[_Iterable[str]] = ..., model_path: _Optional[str] = ..., model_sha256: _Optional[str] = ..., model_source: _Optional[str] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("source", "target", "tensor")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    tensor: str
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., tensor: _Optional[str] = ...) -> None: ...

class DescribeGraphResponse(_message.Message):
    __slots__ = ("name", "version", "state", "last_error", "source_path", "description", "inputs", "outputs", "nodes", "edges", "mermaid", "request_log", "logging_enabled", "logging_sample")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    MERMAID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_LOG_FIELD_NUMBER: _ClassVar[int]
    LOGGING_ENABLED_FIELD_NUMBER: _ClassVar[int]
    LOGGING_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    state: str
    last_error: str
    source_path: str
    description: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    mermaid: str
    request_log: RequestLogCounters
    logging_enabled: bool
    logging_sample: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., last_error: _Optional[str] = ..., source_path: _Optional[str] = ..., description: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., mermaid: _Optional[str] = ..., request_log: _Optional[_Union[RequestLogCounters, _Mapping]] = ..., logging_enabled: _Optional[bool] = ..., logging_sample: _Optional[float] = ...) -> None: ...

class RequestLogCounters(_message.Message):
    __slots__ = ("written", "dropped", "failed", "pending", "truncated")
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    written: int
    dropped: int
    failed: int
    pending: int
    truncated: int
    def __init__(self, written: _Optional[int] = ..., dropped: _Optional[int] = ..., failed: _Optional[int] = ..., pending: _Optional[int] = ..., truncated: _Optional[int] = ...) -> None: ...

class ValidateGraphRequest(_message.Message):
    __slots__ = ("yaml", "filename", "graph_dir")
    YAML_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    GRAPH_DIR_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    filename: str
    graph_dir: str
    def __init__(self, yaml: _Optional[str] = ..., filename: _Optional[str] = ..., graph_dir: _Optional[str] = ...) -> None: ...

class Diagnostic(_message.Message):
    __slots__ = ("file", "line", "col", "severity", "message")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COL_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    col: int
    severity: str
    message: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., col: _Optional[int] = ..., severity: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ValidateGraphResponse(_message.Message):
    __slots__ = ("ok", "diagnostics")
    OK_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    def __init__(self, ok: _Optional[bool] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("request", "include_tensors", "show_redacted")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TENSORS_FIELD_NUMBER: _ClassVar[int]
    SHOW_REDACTED_FIELD_NUMBER: _ClassVar[int]
    request: _grpc_service_pb2.ModelInferRequest
    include_tensors: bool
    show_redacted: bool
    def __init__(self, request: _Optional[_Union[_grpc_service_pb2.ModelInferRequest, _Mapping]] = ..., include_tensors: _Optional[bool] = ..., show_redacted: _Optional[bool] = ...) -> None: ...

class NodeTrace(_message.Message):
    __slots__ = ("name", "kind", "start_ns", "duration_ns", "rows", "inputs", "outputs", "branch_rows", "error", "feature_status", "redacted")
    class BranchRowsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class FeatureStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_NS_FIELD_NUMBER: _ClassVar[int]
    DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    BRANCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FEATURE_STATUS_FIELD_NUMBER: _ClassVar[int]
    REDACTED_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    start_ns: int
    duration_ns: int
    rows: int
    inputs: _containers.RepeatedCompositeFieldContainer[_grpc_service_pb2.ModelInferResponse.InferOutputTensor]
    outputs: _containers.RepeatedCompositeFieldContainer[_grpc_service_pb2.ModelInferResponse.InferOutputTensor]
    branch_rows: _containers.ScalarMap[str, int]
    error: str
    feature_status: _containers.ScalarMap[str, str]
    redacted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., start_ns: _Optional[int] = ..., duration_ns: _Optional[int] = ..., rows: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[_grpc_service_pb2.ModelInferResponse.InferOutputTensor, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[_grpc_service_pb2.ModelInferResponse.InferOutputTensor, _Mapping]]] = ..., branch_rows: _Optional[_Mapping[str, int]] = ..., error: _Optional[str] = ..., feature_status: _Optional[_Mapping[str, str]] = ..., redacted: _Optional[_Iterable[str]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("graph", "version", "total_ns", "nodes", "response")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    graph: str
    version: str
    total_ns: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeTrace]
    response: _grpc_service_pb2.ModelInferResponse
    def __init__(self, graph: _Optional[str] = ..., version: _Optional[str] = ..., total_ns: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeTrace, _Mapping]]] = ..., response: _Optional[_Union[_grpc_service_pb2.ModelInferResponse, _Mapping]] = ...) -> None: ...

class ReloadGraphsRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadResult(_message.Message):
    __slots__ = ("name", "version", "action", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    action: str
    error: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., action: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ReloadGraphsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReloadResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReloadResult, _Mapping]]] = ...) -> None: ...

class ShadowReportRequest(_message.Message):
    __slots__ = ("graph",)
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    graph: str
    def __init__(self, graph: _Optional[str] = ...) -> None: ...

class ShadowReportResponse(_message.Message):
    __slots__ = ("json", "table")
    JSON_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    json: str
    table: str
    def __init__(self, json: _Optional[str] = ..., table: _Optional[str] = ...) -> None: ...

class MonitorReportRequest(_message.Message):
    __slots__ = ("graph",)
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    graph: str
    def __init__(self, graph: _Optional[str] = ...) -> None: ...

class MonitorReportResponse(_message.Message):
    __slots__ = ("json", "table")
    JSON_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    json: str
    table: str
    def __init__(self, json: _Optional[str] = ..., table: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("graph", "labels")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    graph: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, graph: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("request_id", "row", "value")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    row: int
    value: float
    def __init__(self, request_id: _Optional[str] = ..., row: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("matched", "duplicate", "late", "unknown", "invalid")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    matched: int
    duplicate: int
    late: int
    unknown: int
    invalid: int
    def __init__(self, matched: _Optional[int] = ..., duplicate: _Optional[int] = ..., late: _Optional[int] = ..., unknown: _Optional[int] = ..., invalid: _Optional[int] = ...) -> None: ...

class RolloutRequest(_message.Message):
    __slots__ = ("graph", "action")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    graph: str
    action: str
    def __init__(self, graph: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class RolloutResponse(_message.Message):
    __slots__ = ("json", "table")
    JSON_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    json: str
    table: str
    def __init__(self, json: _Optional[str] = ..., table: _Optional[str] = ...) -> None: ...
