"""How the CLI prints node tables and tensors: aligned at any duration, wide tensors on one line."""

from __future__ import annotations

import re

import numpy as np

from engine.cli import tables


def _row(name: str, start_ns: int, took_ns: int, **outputs: np.ndarray) -> tables.NodeRow:
    return tables.NodeRow(
        name=name, kind="model", start_ns=start_ns, duration_ns=took_ns, rows=2, outputs=outputs
    )


def test_durations_pick_a_unit_and_stay_one_word() -> None:
    assert [tables.duration(ns) for ns in (870, 12_400, 4_560_000, 3_020_000_000, 75_000_000_000)] == [
        "0.9µs", "12.4µs", "4.6ms", "3.02s", "75.0s",
    ]  # fmt: skip


def test_columns_stay_aligned_above_a_second_and_with_long_names() -> None:
    rows = [
        _row("a", 0, 900),
        _row("a_much_longer_node_name", 2_000_000, 1_500_000_000),
        _row("slow", 1_600_000_000, 65_000_000_000),
    ]
    lines = tables.node_table(rows).splitlines()
    header = lines[0]
    order = ("node", "kind", "start", "took", "rows")
    for column in order[2:]:
        ends = {[m.end() for m in re.finditer(r"\S+", line)][order.index(column)] for line in lines}
        assert ends == {header.index(column) + len(column)}, column
    kinds = {line.index("model") for line in lines[1:]}
    assert kinds == {header.index("kind")}


def test_a_wide_tensor_is_summarised_on_one_line_without_cutting_a_row() -> None:
    wide = np.arange(2 * 300, dtype=np.float32).reshape(2, 300)
    text = tables.tensor_text(wide)
    assert "\n" not in text
    assert text == "FP32 [2, 300]: 0, 1, 2, 3, 4, 5, 6, 7, … (600 values)"
    assert tables.tensor_text(np.array([[0.5], [0.25]], dtype=np.float32)) == "[[0.5], [0.25]]"
    assert tables.tensor_text(np.array([b"eu", b"uk"], dtype=object)) == '["eu", "uk"]'
    line = tables.node_table([_row("embed", 0, 1000, z=wide)])
    assert len(line.splitlines()) == 2


def test_outputs_print_one_array_per_line_as_json() -> None:
    text = tables.outputs_json(
        {"score": np.array([[0.1], [0.7]], dtype=np.float32), "label": np.array([b"eu", b"uk"], dtype=object)}
    )
    assert text.splitlines() == ["{", '  "score": [[0.1], [0.7]],', '  "label": ["eu", "uk"]', "}"]
