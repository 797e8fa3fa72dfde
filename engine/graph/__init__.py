"""The graph language: YAML -> typed spec -> validation -> compiled ``Plan``.

One subpackage per phase; each imports only the ones listed below it, never one above::

    loader, draw     the public entry points; drawings of a plan
    compiling/       Analysis -> Plan; the logging policy extended over the compiled nodes
    checking/        GraphSpec -> Analysis: references, models, ops, routes, features, shadows
    reading/         YAML with positions -> GraphSpec
    ops/             expressions, built-in ops, routers: checked and compiled to numpy functions
    values/          positions and diagnostics, GraphSpec, LoggingPolicy, the Plan types
"""

from engine.graph.loader import CompiledGraph, check_graph, find_graph_files, load_graph, model_references

__all__ = ["CompiledGraph", "check_graph", "find_graph_files", "load_graph", "model_references"]
