"""The graph language's value types, which every phase passes on (the bottom layer).

Positions and diagnostics (``diagnostics``), the typed spec (``spec``), the request-log
policy (``logging_policy``) and the compiled plan (``plan``). They import only the kernel
and ``engine.shadow``, never another phase.
"""
