"""Per-node breakdown: ModelStatistics deltas between the start and the end of the measurement.

Our engine reports each graph node as a composing model named
``<graph>.<node>`` (Triton's ensemble convention); any V2 server that reports
the graph itself still gets the graph row. The counters are cumulative and
server-wide, so the delta includes any other traffic the server received during
the run — the report says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.protocol.generated.inference import grpc_service_pb2 as pb

NODE_SEPARATOR = "."


def node_breakdown(
    before: Mapping[str, pb.ModelStatistics] | None,
    after: Mapping[str, pb.ModelStatistics] | None,
    graph: str,
    version: str,
    start_late_us: int = 0,
) -> dict[str, Any] | None:
    """Graph and node rows; ``start_late_us``: how long after the warm-up the start snapshot was
    taken (the answers in between are missing from the deltas)."""
    if before is None or after is None:
        return None
    rows: list[dict[str, Any]] = []
    graph_row: dict[str, Any] | None = None
    for key, stats in after.items():
        name, stats_version = key.split("\0", 1)
        if version and stats_version != version:
            continue
        if name != graph and not name.startswith(graph + NODE_SEPARATOR):
            continue
        old = before.get(key)
        row = _delta(stats, old)
        if name == graph:
            row["name"] = graph
            row["version"] = stats_version
            graph_row = row
        else:
            row["node"] = name[len(graph) + 1 :]
            row["version"] = stats_version
            rows.append(row)
    if graph_row is None and not rows:
        return None
    graph_ns = (graph_row or {}).get("success_ns", 0)
    for row in rows:
        row["share_of_graph"] = round(row["success_ns"] / graph_ns, 4) if graph_ns else None
    rows.sort(key=lambda r: r["success_ns"], reverse=True)
    return {"graph": graph_row, "nodes": rows, "start_late_us": start_late_us}


def _delta(new: pb.ModelStatistics, old: pb.ModelStatistics | None) -> dict[str, Any]:
    def d(counter: Callable[[pb.ModelStatistics], int]) -> int:
        return max(0, counter(new) - (counter(old) if old is not None else 0))

    calls = d(lambda s: s.inference_stats.success.count)
    success_ns = d(lambda s: s.inference_stats.success.ns)
    fails = d(lambda s: s.inference_stats.fail.count)
    queue_ns = d(lambda s: s.inference_stats.queue.ns)
    compute_ns = d(lambda s: s.inference_stats.compute_infer.ns)
    return {
        "calls": calls,
        "failures": fails,
        "rows": d(lambda s: s.inference_count),
        "executions": d(lambda s: s.execution_count),
        "success_ns": success_ns,
        "mean_us": round(success_ns / calls / 1000, 1) if calls else None,
        "queue_mean_us": round(queue_ns / calls / 1000, 1) if calls else None,
        "compute_mean_us": round(compute_ns / calls / 1000, 1) if calls else None,
    }
