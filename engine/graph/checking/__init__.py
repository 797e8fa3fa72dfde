"""Checking a ``GraphSpec`` against its models, ops and feature sources -> an ``Analysis``.

``validate`` walks the graph in dependency order over a ``scope``; node, route, feature,
shadow and logging checks each own their kind; ``model_files`` loads each model once.
Imports ``values``, ``ops`` and ``reading``.
"""
