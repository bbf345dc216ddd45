"""Scaling plots: cost per operation against size, for the README.

* ``bench/scaling_memory_store.png`` — ``SessionManager`` over the default
  ``MemoryStore``: set (5-key merge) and get (a copy) per operation against the
  number of stored sessions (1k, 10k, 100k; full run also 1M), on the same axes
  as a plain dict-of-dicts doing the same work (``setdefault(sid, {}).update(m)``
  and ``dict(d.get(sid))``) on the same random order of existing ids.
* ``bench/scaling_router.png`` — ``MetadataRouter.route()`` per decision against
  the number of rules (10, 100, 1,000; full run also 5,000), indexed against the
  same compiled rules checked one by one (``LinearScan``).

Every point is the median of at least 5 interleaved repetitions measured with
``bench/_harness.py``; the error bars span min–max. matplotlib is a bench-only
dependency (the ``bench`` dependency group).

Run: ``uv run --group bench python -m bench.plots [--quick]``.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
from collections.abc import Callable, Coroutine
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from ._harness import Case, Result, measure

__all__ = ["MEMORY_PNG", "ROUTER_PNG", "write_plots"]

_HERE = Path(__file__).resolve().parent
MEMORY_PNG = _HERE / "scaling_memory_store.png"
"""Where :func:`write_plots` writes the memory-store plot."""
ROUTER_PNG = _HERE / "scaling_router.png"
"""Where :func:`write_plots` writes the router plot."""

_M: dict[str, Any] = {
    "user_id": "user-00000001",
    "room": "room-0001",
    "lang": "en",
    "plan": "pro",
    "started_at": "2025-11-22T02:51:01Z",
}
_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"

Series = dict[str, list[tuple[int, Result]]]
"""Line label -> [(size, result)] in size order."""


def _on_loop(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], Coroutine[Any, Any, None]]
) -> Callable[[int], object]:
    def fn(loops: int) -> object:
        return loop.run_until_complete(make(loops))

    return fn


def _memory_point(n: int, repeats: int, target: float) -> dict[str, Result]:
    from livekit.plugins.metadata.sessions.manager import SessionManager

    sids = [f"sess-{i:023d}" for i in range(n)]
    rng = random.Random(n)
    order = [sids[rng.randrange(n)] for _ in range(min(200_000, max(n, 10_000)))]
    d: dict[str, dict[str, Any]] = {sid: dict(_M) for sid in sids}
    sm = SessionManager(secret_key=_SECRET, session_ttl=10**9)
    loop = asyncio.new_event_loop()

    async def fill() -> None:
        for sid in sids:
            await sm.set_session_metadata(sid, dict(_M))

    loop.run_until_complete(fill())

    def dict_set(loops: int) -> None:
        m = _M
        for sid in islice(cycle(order), loops):
            d.setdefault(sid, {}).update(m)

    def dict_get(loops: int) -> None:
        g = d.get
        for sid in islice(cycle(order), loops):
            dict(g(sid))  # type: ignore[arg-type]

    async def sm_set(loops: int) -> None:
        m = _M
        s = sm.set_session_metadata
        for sid in islice(cycle(order), loops):
            await s(sid, m)

    async def sm_get(loops: int) -> None:
        g = sm.get_session_metadata
        for sid in islice(cycle(order), loops):
            await g(sid)

    # Millions of live objects: freeze them so the harness's gc.collect() stays cheap.
    gc.collect()
    gc.freeze()
    try:
        table = measure(
            f"memory store at {n:,} sessions",
            [
                Case("dict-of-dicts set", dict_set, baseline=True),
                Case("SessionManager set", _on_loop(loop, sm_set)),
                Case("dict-of-dicts get + copy", dict_get),
                Case("SessionManager get", _on_loop(loop, sm_get)),
            ],
            repeats=repeats,
            target=target,
        )
    finally:
        gc.unfreeze()
        loop.close()
    return {r.name: r for r in table.results}


def _rules(n: int) -> dict[str, Any]:
    """``n`` two-equality rules, with a non-indexable rule at every 100th position (50)."""
    rules: list[dict[str, Any]] = []
    for i in range(n):
        if i % 100 == 50:
            when: dict[str, Any] = {"phone": {"prefix": f"+{i}"}, "amount": {"gt": i}}
            rules.append({"name": f"scan-{i}", "when": when, "agent": f"agent-{i % 20}"})
        else:
            when = {"tenant": f"t{i}", "department": f"d{i % 5}"}
            rules.append({"name": f"tenant-{i}", "when": when, "agent": f"agent-{i % 20}"})
    return {"rules": rules, "default": "general"}


def _samples(n: int) -> list[dict[str, Any]]:
    """Hits at the start, a quarter, the middle and the end, near misses and the default."""
    hits = [0, n // 4, n // 2, n - 1]
    out: list[dict[str, Any]] = [
        {"tenant": f"t{i}", "department": f"d{i % 5}"} for i in hits if i % 100 != 50
    ]
    out += [
        {"tenant": f"t{n - 1}", "department": f"d{(n - 1 + 1) % 5}"},  # tenant hit, dept miss
        {"tenant": f"t{n * 10}", "department": "d1"},  # no such tenant
        {"department": "d1"},
        {},
    ]
    return out


def _router_point(n: int, repeats: int, target: float) -> dict[str, Result]:
    from livekit.plugins.metadata.routing.router import MetadataRouter

    from .bench_router import LinearScan, route_case

    config = _rules(n)
    samples = _samples(n)
    indexed = MetadataRouter.from_dict(config)
    naive = LinearScan(indexed)
    for md in samples:
        if indexed.route(md).rule_index != naive.route(md).rule_index:
            raise AssertionError("indexed and scanning routers disagree")

    table = measure(
        f"router at {n:,} rules",
        [
            route_case("naive scan", naive, samples, baseline=True),
            route_case("indexed", indexed, samples),
        ],
        repeats=repeats,
        target=target,
    )
    return {r.name: r for r in table.results}


def _collect(
    sizes: list[int], point: Callable[[int, int, float], dict[str, Result]], repeats: int, t: float
) -> Series:
    series: Series = {}
    for n in sizes:
        print(f"   plot point {n:,}", file=sys.stderr, flush=True)
        for name, result in point(n, repeats, t).items():
            series.setdefault(name, []).append((n, result))
    return series


_STYLE = {
    "dict-of-dicts set": ("tab:gray", "s", "--"),
    "SessionManager set": ("tab:blue", "o", "-"),
    "dict-of-dicts get + copy": ("tab:gray", "^", ":"),
    "SessionManager get": ("tab:green", "D", "-"),
    "naive scan": ("tab:gray", "s", "--"),
    "indexed": ("tab:blue", "o", "-"),
}


def _leading(v: float) -> int:
    """First significant digit of ``v`` (for labelling the 2 and 5 minor ticks)."""
    return int(f"{v:e}"[0]) if v > 0 else 0


def _markdown(series: Series, *, title: str, size: str, baselines: dict[str, str]) -> str:
    """The plotted points as a table: median (min–max) and the ratio to the baseline line."""
    names = list(series)
    sizes = [n for n, _ in series[names[0]]]
    lines = [f"### {title}", "", f"| {size} | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for i, n in enumerate(sizes):
        cells = []
        for name in names:
            r = series[name][i][1]
            lo, hi = r.spread
            cell = f"{r.median * 1e6:.2f} µs ({lo * 1e6:.2f}–{hi * 1e6:.2f})"
            base = baselines.get(name)
            if base is not None:
                cell += f", {r.median / series[base][i][1].median:.2f}× {base}"
            cells.append(cell)
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(series: Series, *, title: str, xlabel: str, path: Path, subtitle: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=110)
    for name, points in series.items():
        xs = [n for n, _ in points]
        ys = [r.median * 1e6 for _, r in points]
        lo = [(r.median - r.spread[0]) * 1e6 for _, r in points]
        hi = [(r.spread[1] - r.median) * 1e6 for _, r in points]
        color, marker, ls = _STYLE.get(name, ("black", "o", "-"))
        ax.errorbar(
            xs, ys, yerr=[lo, hi], label=name, color=color, marker=marker, linestyle=ls, capsize=3
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if _leading(v) in {2, 5} else "")
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("µs per operation (median, min–max bars)")
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(
    quick: bool = False, *, tables: list[str] | None = None, directory: Path | None = None
) -> list[Path]:
    """Measure and draw both scaling plots; returns the PNG paths.

    Args:
        quick: Smaller sizes and shorter repetitions (still 5 repetitions per point).
        tables: If given, the plotted points are appended to it as markdown tables.
        directory: Where the PNGs go (default: ``bench/``, next to ``RESULTS.md``).
    """
    import matplotlib  # noqa: F401  (fail before measuring when the bench group is missing)

    repeats = 5 if quick else 7
    target = 0.005 if quick else 0.1
    mem_sizes = [1_000, 10_000, 100_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    rule_counts = [10, 100, 1_000] if quick else [10, 100, 1_000, 5_000]
    note = f"median of {repeats} interleaved reps{' (--quick)' if quick else ''}"
    mem = _collect(mem_sizes, _memory_point, repeats, target)
    router = _collect(rule_counts, _router_point, repeats, target)
    if tables is not None:
        tables.append(
            _markdown(
                mem,
                title="Scaling: memory store, µs per operation",
                size="sessions",
                baselines={
                    "SessionManager set": "dict-of-dicts set",
                    "SessionManager get": "dict-of-dicts get + copy",
                },
            )
        )
        tables.append(
            _markdown(
                router,
                title="Scaling: router, µs per decision",
                size="rules",
                baselines={"indexed": "naive scan"},
            )
        )
    return [
        _plot(
            mem,
            title="SessionManager + MemoryStore vs dict-of-dicts",
            xlabel="sessions stored",
            path=MEMORY_PNG if directory is None else directory / MEMORY_PNG.name,
            subtitle=f"5-key set / get on random existing ids; {note}",
        ),
        _plot(
            router,
            title="MetadataRouter.route(): indexed vs naive scan",
            xlabel="rules",
            path=ROUTER_PNG if directory is None else directory / ROUTER_PNG.name,
            subtitle=f"match + Route; 1% of rules not indexable; {note}",
        ),
    ]


if __name__ == "__main__":
    out: list[str] = []
    for p in write_plots(quick="--quick" in sys.argv[1:], tables=out):
        print(p)
    print("\n".join(out))
