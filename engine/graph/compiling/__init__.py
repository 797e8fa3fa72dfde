"""Compiling a checked ``Analysis`` into the executor's ``Plan`` (``compiler``).

``redactions`` extends a graph's logging policy over the compiled nodes. Imports any
phase below it (``values``, ``ops``, ``reading``, ``checking``).
"""
