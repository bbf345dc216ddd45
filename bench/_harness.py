"""Shared timing harness for every benchmark in ``bench/``.

Method (the same as ``perf-baseline.md``): each case is a zero-argument callable
that runs ``loops`` operations; the loop count is calibrated once so that one
repetition takes about ``target`` seconds; repetitions are interleaved across
all cases of a table in rotating order, so drift on a shared, noisy machine hits
every case alike. A figure is the median time per operation over the
repetitions, with its min and max, and its ratio against the table's baseline
case measured in the same run. No absolute threshold is ever asserted.
"""

from __future__ import annotations

import gc
import os
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Case",
    "Result",
    "Table",
    "cpu_seconds",
    "format_table",
    "free_port",
    "measure",
    "run_async_loop",
]


@dataclass
class Case:
    """One thing to time. ``fn(loops)`` must perform ``loops`` operations."""

    name: str
    fn: Callable[[int], object]
    baseline: bool = False


@dataclass
class Result:
    name: str
    per_op: list[float] = field(default_factory=list)
    baseline: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.per_op)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.per_op), max(self.per_op)


@dataclass
class Table:
    title: str
    results: list[Result]
    note: str = ""
    columns: dict[str, list[str]] = field(default_factory=dict)

    def baseline(self) -> Result | None:
        return next((r for r in self.results if r.baseline), None)


def _calibrate(fn: Callable[[int], object], target: float) -> int:
    loops = 1
    while True:
        t0 = time.perf_counter()
        fn(loops)
        dt = time.perf_counter() - t0
        if dt >= target / 4 or loops >= 1 << 24:
            return max(1, int(loops * target / max(dt, 1e-9)))
        loops *= 4


def measure(
    title: str, cases: Sequence[Case], *, repeats: int = 7, target: float = 0.2, note: str = ""
) -> Table:
    """Time every case ``repeats`` times, interleaved in rotating order."""
    if repeats < 5:
        raise ValueError("repeats must be at least 5 (medians of >= 5 repetitions)")
    loops = [_calibrate(c.fn, target) for c in cases]
    results = [Result(c.name, baseline=c.baseline) for c in cases]
    n = len(cases)
    # Everything alive now (imported libraries, the cases' fixtures) outlives the table:
    # freeze it, so the collect before each repetition only walks the previous
    # repetition's garbage instead of the whole heap (~0.1 s per call once
    # livekit-agents is imported).
    gc.collect()
    gc.freeze()
    try:
        for rep in range(repeats):
            for k in range(n):
                i = (rep + k) % n
                gc.collect()
                t0 = time.perf_counter()
                cases[i].fn(loops[i])
                dt = time.perf_counter() - t0
                results[i].per_op.append(dt / loops[i])
    finally:
        gc.unfreeze()
    return Table(title, results, note=note)


def run_async_loop(make: Callable[[int], Awaitable[object]]) -> Callable[[int], object]:
    """Adapt an async ``make(loops)`` coroutine factory to a sync case on one event loop.

    The loop is closed when the returned function is garbage-collected (or at exit).
    """
    import asyncio
    import weakref

    loop = asyncio.new_event_loop()

    def fn(loops: int) -> object:
        return loop.run_until_complete(make(loops))

    weakref.finalize(fn, loop.close)
    return fn


def _fmt_time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def _fmt_rate(seconds: float) -> str:
    rate = 1.0 / seconds if seconds > 0 else float("inf")
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f} k/s"
    return f"{rate:.0f}/s"


def format_table(table: Table) -> str:
    """Markdown: case, median per op, rate, min–max, ratio vs the baseline (time ratio)."""
    base = table.baseline()
    lines = [f"### {table.title}", ""]
    if table.note:
        lines += [table.note, ""]
    if not table.results:
        return "\n".join(lines) + "\n"
    lines += [
        "| case | median per op | rate | min–max per op | time vs baseline |",
        "|---|---|---|---|---|",
    ]
    for r in table.results:
        lo, hi = r.spread
        ratio = f"{r.median / base.median:.2f}×" if base else "—"
        mark = " (baseline)" if r.baseline else ""
        lines.append(
            f"| {r.name}{mark} | {_fmt_time(r.median)} | {_fmt_rate(r.median)} | "
            f"{_fmt_time(lo)}–{_fmt_time(hi)} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
