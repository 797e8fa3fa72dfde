"""Reading a graph file: YAML with positions -> ``GraphSpec``, every structural problem reported.

``source`` loads YAML with positions, ``reader`` is the typed-access helper every reader
takes, ``graph_reader`` reads the file and hands nodes, batching, features, shadows and the
``logging:`` key to their own readers. Imports ``values``, and ``ops`` for op names and keys.
"""
