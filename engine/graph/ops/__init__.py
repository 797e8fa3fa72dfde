"""Expressions, built-in ops and routers: checked against their input specs, compiled to numpy.

The expression parser (``expressions``) and evaluator (``expression_eval``), the op table
(``table``) with its transforms and combines, what an op sees (``call``), and the switch and
split routers (``routers``). Imports ``values`` only.
"""
