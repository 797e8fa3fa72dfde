"""Shadow comparisons: compare rules, the online aggregator, the pool that runs shadows, the report.

Independent of the graph language, protobuf and gRPC (``docs/shadows.md``). ``offline``
(reports from request logs, replay) is imported on its own by the CLI.
"""

from engine.shadow.compare import ShadowComparison, ShadowComparisons, ShadowConfig, Verdict
from engine.shadow.outcome import RequestShadows, ShadowOutcome, shadow_field
from engine.shadow.report import ShadowReport, render_table
from engine.shadow.rules import CompareKind, CompareRule, parse_rules, rule_problems
from engine.shadow.runner import LiveResult, ShadowPool, ShadowRun

__all__ = [
    "CompareKind",
    "CompareRule",
    "LiveResult",
    "RequestShadows",
    "ShadowComparison",
    "ShadowComparisons",
    "ShadowConfig",
    "ShadowOutcome",
    "ShadowPool",
    "ShadowReport",
    "ShadowRun",
    "Verdict",
    "parse_rules",
    "render_table",
    "rule_problems",
    "shadow_field",
]
