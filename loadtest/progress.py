"""The live progress line: rates, p99, errors, in-flight and generator lag, once a second.

On a terminal the line is rewritten in place; otherwise (CI logs) a line is
printed every five seconds. Figures are over the last second, from the
workers' progress messages, so they describe what the server is doing now.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from loadtest import histograms
from loadtest.generator import ProgressSnapshot
from loadtest.schedule import Schedule
from loadtest.units import format_ms


class Progress:
    """The live progress line of one run, fed by the workers' snapshots and redrawn by ``tick``."""

    def __init__(self, stream: TextIO | None = None, label: str = "") -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.tty = self.stream.isatty()
        self.every_s = 1.0 if self.tty else 5.0
        self._reset()
        self.in_flight: dict[int, int] = {}
        self.schedule: Schedule | None = None
        self.start_ns = 0
        self.last_print = 0.0
        self.errors_total = 0

    def _reset(self) -> None:
        self.sent = self.ok = self.errors = 0
        self.lag_max_us = 0
        self.snapshots = 0
        self.seconds = 0.0
        self.latency = histograms.new()

    def begin(self, schedule: Schedule, start_ns: int) -> None:
        self.schedule = schedule
        self.start_ns = start_ns
        self._reset()
        self.last_print = time.monotonic()

    def update(self, worker: int, snapshot: ProgressSnapshot) -> None:
        self.snapshots += 1
        self.seconds += snapshot["seconds"]
        self.sent += snapshot["sent"]
        self.ok += snapshot["ok"]
        self.errors += snapshot["errors"]
        self.errors_total += snapshot["errors"]
        self.lag_max_us = max(self.lag_max_us, snapshot["lag_max_us"])
        self.in_flight[worker] = snapshot["in_flight"]
        histograms.add(self.latency, snapshot["latency"])

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_print < self.every_s or self.schedule is None or not self.snapshots:
            return
        self.last_print = now
        # each worker reports about once a second: rates are over the time its snapshots cover
        elapsed = max(self.seconds / max(1, len(self.in_flight)), 1e-3)
        t = (time.monotonic_ns() - self.start_ns) / 1e9
        total = self.schedule.duration_s
        warmup = self.schedule.warmup_ns / 1e9
        phase = "warm-up" if t < warmup else "measure" if t < total else "draining"
        p99 = histograms.percentile(self.latency, 99.0)
        line = (
            f"{self.label}[{phase:>8} {min(t, total):5.0f}/{total:.0f}s] "
            f"target {self.schedule.rate_at(t):7.0f}/s  sent {self.sent / elapsed:7.0f}/s  "
            f"ok {self.ok / elapsed:7.0f}/s  p99 {format_ms(p99):>9}  "
            f"errors {self.errors / elapsed:5.0f}/s ({self.errors_total} total)  "
            f"in-flight {sum(self.in_flight.values()):5d}  lag {format_ms(self.lag_max_us):>8}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._reset()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
