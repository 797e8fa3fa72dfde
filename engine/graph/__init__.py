"""The graph language: YAML -> typed spec -> validation -> compiled ``Plan``."""

from engine.graph.loader import CompiledGraph, check_graph, find_graph_files, load_graph

__all__ = ["CompiledGraph", "check_graph", "find_graph_files", "load_graph"]
