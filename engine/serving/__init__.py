"""The inference core: one data plane and one view of the server under every front door."""

from engine.serving.admin import ServerAdmin, ShadowReportText
from engine.serving.call import Headers, InferCall, InferResult, SpanAttributes
from engine.serving.control import Answer, ControlPlane, LocalControl, Part
from engine.serving.core import EventCollector, InferenceCore
from engine.serving.failure import Failure, describe
from engine.serving.state import ServingState
from engine.serving.views import FailedGraphView, GraphSummary, GraphView, IndexRow, ReloadOutcome

__all__ = [
    "Answer",
    "ControlPlane",
    "EventCollector",
    "FailedGraphView",
    "Failure",
    "GraphSummary",
    "GraphView",
    "Headers",
    "IndexRow",
    "InferCall",
    "InferResult",
    "InferenceCore",
    "LocalControl",
    "Part",
    "ReloadOutcome",
    "ServerAdmin",
    "ServingState",
    "ShadowReportText",
    "SpanAttributes",
    "describe",
]
