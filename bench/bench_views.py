"""``amint`` and ``MetadataAdapter.attach`` (1 and 10 callers), against the code before
the trust-boundaries change, in the same run.

Two package versions cannot share one interpreter, so each repetition runs
``bench/_views_child.py`` twice, once with this checkout's ``plugin/`` and once with
the baseline revision's (a detached ``git worktree`` of ``--base``, default the
commit before the change), alternating which goes first; each child reports the
median time per operation of its own repetitions. Figures are medians over the
children, with min–max, and ratios against the baseline of the same run.

    uv run python -m bench.bench_views [--quick] [--base REV]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson

from ._harness import Result, Table, format_table

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
BASE = "528ca82"  # main before "Key spaces that never meet" and the new adapter model


@contextlib.contextmanager
def _worktree(rev: str) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-views-"))
    path = tmp / "base"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False
        )


def _child(plugin: Path, reps: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(plugin)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_views_child.py"), str(reps)],
        env=env,
        capture_output=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = orjson.loads(out.stdout.splitlines()[-1])
    return result


def run(quick: bool = False, base: str = BASE) -> list[Table]:
    rounds, reps = (3, 2) if quick else (7, 3)
    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] = {}
    with _worktree(base) as old:
        for i in range(rounds):
            order = [("new", ROOT / "plugin"), ("old", old / "plugin")]
            for name, plugin in order if i % 2 == 0 else order[::-1]:
                target = ours if name == "new" else theirs
                for case, seconds in _child(plugin, reps).items():
                    target.setdefault(case, []).append(seconds)
    tables = []
    for case in ours:
        tables.append(
            Table(
                f"{case}: this checkout vs {base} (before the trust boundaries)",
                [
                    Result(f"{case}, before ({base})", theirs[case], baseline=True),
                    Result(f"{case}, now", ours[case]),
                ],
                note=(
                    f"median of {rounds} children x {reps} repetitions each; target ≤ 1.1x: "
                    + (
                        "met"
                        if statistics.median(ours[case]) <= 1.1 * statistics.median(theirs[case])
                        else "MISSED"
                    )
                ),
            )
        )
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--base", default=BASE)
    args = parser.parse_args()
    for table in run(args.quick, args.base):
        print(format_table(table))


if __name__ == "__main__":
    main()
