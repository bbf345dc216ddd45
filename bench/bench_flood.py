"""A flood of metadata updates (issue 34): re-routes and settle time, now vs before.

One caller sends N metadata updates at 80/s (LiveKit delivered a flood at ~78/s),
alternating ``department``; ``on_change`` re-routes, which takes 30 ms (a handoff and
its acknowledgement on a real server). Reported per N: how many re-routes ran and the
seconds from the last update to the re-route of the final state, for this checkout and
for the code before the change (``--base``), each in its own process, in one run.

    uv run python -m bench.bench_flood [--quick] [--base REV]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import orjson

from ._harness import Table
from .bench_views import BASE, ROOT, _worktree

__all__ = ["run"]


def _child(plugin: Path, sizes: list[int]) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(plugin)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_flood_child.py"), *map(str, sizes)],
        env=env,
        capture_output=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, dict[str, float]] = orjson.loads(out.stdout.splitlines()[-1])
    return result


def run(quick: bool = False, base: str = BASE) -> list[Table]:
    sizes = [200] if quick else [200, 1000, 5000]
    with _worktree(base) as old:
        now = _child(ROOT / "plugin", sizes)
        before = _child(old / "plugin", sizes)
    rows = [
        f"| {n:,} | {before[str(n)]['reroutes']:.0f} | {before[str(n)]['settle']:.2f} s | "
        f"{now[str(n)]['reroutes']:.0f} | {now[str(n)]['settle']:.2f} s |"
        for n in sizes
    ]
    text = "\n".join(
        [
            "| updates | re-routes before | settle before | re-routes now | settle now |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    return [Table(f"Metadata flood at 80/s, 30 ms per re-route, now vs {base}", [], note=text)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--base", default=BASE)
    args = parser.parse_args()
    for table in run(args.quick, args.base):
        print(f"### {table.title}\n\n{table.note}\n")


if __name__ == "__main__":
    main()
