"""Running compiled plans: the per-request walk, and the counters it keeps."""

from engine.execution.runner import PlanRunner
from engine.execution.stats import Duration, GraphStats, NodeStats

__all__ = ["Duration", "GraphStats", "NodeStats", "PlanRunner"]
