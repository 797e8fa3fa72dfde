"""The REST door's routes: one table of every path, its handler, credentials and documentation.

The table is the single source of the aiohttp router (``engine.rest.server``) and of the
OpenAPI document (``engine.rest.openapi``). Handlers translate only: they read the request,
ask the inference core (``InferenceCore``) or the server's admin (``ServerAdmin``, so that
``--workers N`` answers as one server) and render JSON. Every exception goes through the
one table in ``engine.rest.status``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from engine import __version__
from engine.errors import InvalidRequest
from engine.protocol.metadata import (
    graph_statistics,
    model_config,
    model_metadata,
    node_config,
    node_statistics,
)
from engine.rest import codec, openapi, render
from engine.rest.calls import HttpInferCall
from engine.rest.spec import Route
from engine.serving import InferenceCore, ServerAdmin
from engine.serving.auth import ADMIN, OPEN, TokenGuard

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
JSON: Final = "application/json"
BINARY: Final = "application/octet-stream"
EXTENSIONS: Final = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")

Handler = Callable[["RestDoor", web.Request], Awaitable[web.StreamResponse]]

__all__ = ["ROUTES", "RestDoor", "RestOptions", "Route", "openapi_bytes"]


@dataclass(frozen=True)
class RestOptions:
    limits: codec.RestLimits = field(default_factory=codec.RestLimits)
    guard: TokenGuard = field(default_factory=TokenGuard)
    max_batch_size: int = 1024


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(value).encode(), status=status, content_type=JSON)


def _model(request: web.Request) -> tuple[str, str]:
    info = request.match_info
    return info["model"], info.get("version", "")


async def _json_body(request: web.Request, limits: codec.RestLimits) -> dict[str, Any]:
    body = await request.read()
    if not body:
        return {}
    return codec.parse_request(body, None, limits).header


class RestDoor:
    """The handlers, bound to the core and the server's admin."""

    def __init__(self, core: InferenceCore, admin: ServerAdmin, options: RestOptions) -> None:
        self.core = core
        self.admin = admin
        self.options = options

    # -- health and metadata -----------------------------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        live = self.admin.state.live
        return json_response({"live": live}, 200 if live else 503)

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.admin.state.serving
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response({"name": "graph-engine", "version": __version__, "extensions": list(EXTENSIONS)})

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        ready = self.admin.model_ready(name, version)
        return json_response({"name": name, "ready": ready}, 200 if ready else 400)

    async def model_metadata(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        return json_response(render.message_json(model_metadata(self.admin.view(name, version))))

    async def model_config(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        view, node = self.admin.resolve(name, version)
        config = model_config(view, self.options.max_batch_size) if node is None else node_config(view, node)
        return json_response(render.message_json(config))

    async def statistics(self, request: web.Request) -> web.Response:
        info = request.match_info
        name, version = info.get("model", ""), info.get("version", "")
        stats = []
        if not name:
            for graph in await self.admin.statistics():
                stats.append(graph_statistics(graph))
                stats.extend(node_statistics(graph.name, graph.version, n) for n in graph.nodes.values())
        else:
            view, node = self.admin.resolve(name, version)
            graph = next(s for s in await self.admin.statistics(view.name) if s.version == view.version)
            if node is None:
                stats.append(graph_statistics(graph))
            else:
                stats.append(node_statistics(graph.name, graph.version, graph.nodes[node.name]))
        return json_response({"model_stats": [render.message_json(s) for s in stats]})

    # -- repository --------------------------------------------------------------------------
    async def repository_index(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self.options.limits)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidRequest("'ready' must be true or false")
        return json_response([render.index_row(row) for row in await self.admin.index(ready_only=ready)])

    async def repository_load(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self.options.limits)
        if body.get("parameters"):
            raise InvalidRequest(
                "load parameters (config, files) are not supported: graphs load from their folder"
            )
        await self.admin.load(request.match_info["model"])
        return json_response({})

    async def repository_unload(self, request: web.Request) -> web.Response:
        await _json_body(request, self.options.limits)
        await self.admin.unload(request.match_info["model"])
        return json_response({})

    # -- inference ---------------------------------------------------------------------------
    async def _call(self, request: web.Request) -> HttpInferCall:
        name, version = _model(request)
        body = await request.read()
        header_length = request.headers.get(HEADER_LENGTH)
        limits = self.options.limits
        # Parsed on the event loop, as gRPC parses its messages: a thread would not help, json.loads
        # holds the GIL throughout. Big tensors belong in binary tensor data (docs/http.md).
        parsed = codec.parse_request(body, header_length, limits)
        return HttpInferCall(name, version, parsed, request.headers, limits)

    async def infer(self, request: web.Request) -> web.Response:
        call = await self._call(request)
        body, header_length = await self.core.infer(call)
        return _infer_response(body, header_length)

    # -- our admin API -----------------------------------------------------------------------
    async def list_graphs(self, request: web.Request) -> web.Response:
        return json_response({"graphs": [render.summary(g) for g in await self.admin.graphs()]})

    async def describe_graph(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        return json_response(render.describe(self.admin.describe(name, version)))

    async def explain(self, request: web.Request) -> web.Response:
        call = await self._call(request)
        if call.wants_binary():  # refused before it runs: the answer nests the response in JSON
            raise InvalidRequest("explain answers JSON only: do not ask for binary outputs")
        include_tensors = request.query.get("include_tensors", "false").lower() in ("1", "true", "yes")
        (body, _), events = await self.core.explain(call)
        return json_response(
            {
                "response": json.loads(body),
                "run_ns": call.run_ns,
                "nodes": [render.node_event(e, include_tensors) for e in events],
            }
        )

    async def reload(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self.options.limits)
        names = body.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidRequest("'names' must be a list of graph names")
        return json_response({"results": [render.outcome(o) for o in await self.admin.reload(names)]})

    async def validate(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self.options.limits)
        text, filename, graph_dir = body.get("yaml"), body.get("filename", ""), body.get("graph_dir", "")
        if not isinstance(text, str) or not isinstance(filename, str) or not isinstance(graph_dir, str):
            raise InvalidRequest("give 'yaml' (the graph's text) and optionally 'filename' and 'graph_dir'")
        diagnostics = await self.admin.validate(text, filename, graph_dir)
        return json_response(
            {
                "valid": not any(d.severity == "error" for d in diagnostics),
                "diagnostics": [
                    {
                        "file": d.file,
                        "line": d.line,
                        "column": d.col,
                        "severity": d.severity,
                        "message": d.message,
                    }
                    for d in diagnostics
                ],
            }
        )

    async def shadow_report(self, request: web.Request) -> web.Response:
        report = await self.admin.shadow_report(request.query.get("graph", ""))
        if request.query.get("format") == "table":
            return web.Response(text=report.table, content_type="text/plain")
        return web.Response(text=report.json, content_type=JSON)

    async def monitor_report(self, request: web.Request) -> web.Response:
        report = await self.admin.monitor_report(request.query.get("graph", ""))
        if request.query.get("format") == "table":
            return web.Response(text=report.table, content_type="text/plain")
        return web.Response(text=report.json, content_type=JSON)

    async def feedback(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self.options.limits)
        graph, raw = body.get("graph"), body.get("labels")
        if not isinstance(graph, str) or not graph:
            raise InvalidRequest("give 'graph' (the graph the labels are for)")
        if not isinstance(raw, list):
            raise InvalidRequest("'labels' must be a list of {request_id, row, value}")
        labels: list[tuple[str, int, float]] = []
        for index, label in enumerate(raw):
            if not isinstance(label, dict):
                raise InvalidRequest(f"labels[{index}] must be an object {{request_id, row, value}}")
            request_id, row, value = label.get("request_id"), label.get("row", 0), label.get("value")
            if not isinstance(request_id, str) or not request_id:
                raise InvalidRequest(f"labels[{index}].request_id must be a non-empty string")
            if isinstance(row, bool) or not isinstance(row, int) or row < 0:
                raise InvalidRequest(f"labels[{index}].row must be a whole number >= 0")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequest(f"labels[{index}].value must be a number")
            labels.append((request_id, row, float(value)))
        return json_response(await self.admin.feedback(graph, labels))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=openapi_bytes(), content_type=JSON)


_DOCUMENT: list[bytes] = []


def openapi_bytes() -> bytes:
    """The OpenAPI document of ``ROUTES`` as served and as written to docs/openapi.json."""
    if not _DOCUMENT:  # built once, on first ask
        _DOCUMENT.append((json.dumps(openapi.document(ROUTES), indent=2) + "\n").encode())
    return _DOCUMENT[0]


def _infer_response(body: bytes, header_length: int | None) -> web.Response:
    if header_length is None:
        return web.Response(body=body, content_type=JSON)
    response = web.Response(body=body, content_type=BINARY)
    response.headers[HEADER_LENGTH] = str(header_length)
    return response


def _versioned(method: str, path: str, handler: Handler, summary: str, **extra: Any) -> list[Route]:
    """``/v2/models/{model}<path>`` and ``/v2/models/{model}/versions/{version}<path>``."""
    return [
        Route(method, "/v2/models/{model}" + path, handler, summary, **extra),
        Route(
            method,
            "/v2/models/{model}/versions/{version}" + path,
            handler,
            summary + " (one version)",
            **extra,
        ),
    ]


NOT_FOUND = (404,)
ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/v2/health/live", RestDoor.live, "Liveness", OPEN, answer="Live", tag="health"),
    Route(
        "GET",
        "/v2/health/ready",
        RestDoor.ready,
        "Readiness (503 while starting or draining)",
        OPEN,
        answer="Ready",
        tag="health",
        codes=(503,),
    ),
    Route("GET", "/v2", RestDoor.server_metadata, "Server metadata", answer="ServerMetadata", tag="health"),
    *_versioned(
        "GET",
        "/ready",
        RestDoor.model_ready,
        "Graph readiness (400 when not ready)",
        answer="ModelReady",
        tag="health",
        codes=(400,),
    ),
    Route(
        "GET",
        "/v2/models/stats",
        RestDoor.statistics,
        "Statistics of every graph and node",
        answer="Statistics",
        tag="statistics",
    ),
    *_versioned(
        "GET",
        "/stats",
        RestDoor.statistics,
        "Statistics of a graph or a node (<graph>.<node>)",
        answer="Statistics",
        tag="statistics",
        codes=NOT_FOUND,
    ),
    *_versioned(
        "GET",
        "/config",
        RestDoor.model_config,
        "Model configuration of a graph or a node (<graph>.<node>)",
        answer="ModelConfig",
        tag="metadata",
        codes=NOT_FOUND,
    ),
    *_versioned(
        "GET",
        "",
        RestDoor.model_metadata,
        "Graph metadata",
        answer="ModelMetadata",
        tag="metadata",
        codes=(*NOT_FOUND, 503),
    ),
    *_versioned(
        "POST",
        "/infer",
        RestDoor.infer,
        "Inference (JSON, or Triton's binary tensor data)",
        body="InferRequest",
        answer="InferResponse",
        codes=(400, 404, 429, 501, 503, 504),
    ),
    Route(
        "POST",
        "/v2/repository/index",
        RestDoor.repository_index,
        "Every graph version and its state",
        body="IndexRequest",
        answer="Index",
        tag="repository",
    ),
    Route(
        "POST",
        "/v2/repository/models/{model}/load",
        RestDoor.repository_load,
        "Load or reload a graph on every worker",
        ADMIN,
        body="LoadRequest",
        answer="Empty",
        tag="repository",
        codes=(400, 404),
    ),
    Route(
        "POST",
        "/v2/repository/models/{model}/unload",
        RestDoor.repository_unload,
        "Unload a graph on every worker",
        ADMIN,
        body="LoadRequest",
        answer="Empty",
        tag="repository",
        codes=NOT_FOUND,
    ),
    Route(
        "GET",
        "/v2/engine/graphs",
        RestDoor.list_graphs,
        "Every graph (ListGraphs)",
        ADMIN,
        answer="Graphs",
        tag="engine",
    ),
    Route(
        "GET",
        "/v2/engine/graphs/{model}",
        RestDoor.describe_graph,
        "Describe a graph (DescribeGraph)",
        ADMIN,
        answer="Description",
        tag="engine",
        codes=NOT_FOUND,
    ),
    Route(
        "GET",
        "/v2/engine/graphs/{model}/versions/{version}",
        RestDoor.describe_graph,
        "Describe one version of a graph",
        ADMIN,
        answer="Description",
        tag="engine",
        codes=NOT_FOUND,
    ),
    Route(
        "POST",
        "/v2/engine/graphs/{model}/explain",
        RestDoor.explain,
        "Inference with every node's timing and branch (Explain; ?include_tensors=true for its tensors)",
        ADMIN,
        body="InferRequest",
        answer="Explanation",
        tag="engine",
        codes=(400, 404, 429, 503, 504),
    ),
    Route(
        "POST",
        "/v2/engine/graphs/{model}/versions/{version}/explain",
        RestDoor.explain,
        "Explain on one version",
        ADMIN,
        body="InferRequest",
        answer="Explanation",
        tag="engine",
        codes=(400, 404, 429, 503, 504),
    ),
    Route(
        "POST",
        "/v2/engine/reload",
        RestDoor.reload,
        "Re-read graph folders on every worker (ReloadGraphs)",
        ADMIN,
        body="ReloadRequest",
        answer="ReloadResults",
        tag="engine",
        codes=(400,),
    ),
    Route(
        "POST",
        "/v2/engine/validate",
        RestDoor.validate,
        "Check a graph's YAML without serving it",
        ADMIN,
        body="ValidateRequest",
        answer="Validation",
        tag="engine",
        codes=(400, 403),
    ),
    Route(
        "GET",
        "/v2/engine/shadows",
        RestDoor.shadow_report,
        "Shadow comparisons over every worker (?graph=, ?format=table)",
        ADMIN,
        answer="ShadowReport",
        tag="engine",
        codes=NOT_FOUND,
    ),
    Route(
        "GET",
        "/v2/engine/monitor",
        RestDoor.monitor_report,
        "Drift and live quality over every worker (MonitorReport; ?graph=, ?format=table)",
        ADMIN,
        answer="MonitorReport",
        tag="engine",
        codes=NOT_FOUND,
    ),
    Route(
        "POST",
        "/v2/engine/feedback",
        RestDoor.feedback,
        "Attach ground truth to earlier predictions by request id (Feedback)",
        ADMIN,
        body="FeedbackRequest",
        answer="FeedbackCounts",
        tag="engine",
        codes=(400, 404),
    ),
    Route("GET", "/v2/openapi.json", RestDoor.openapi, "This document", OPEN, tag="health"),
)
