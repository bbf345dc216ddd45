"""Run every benchmark and write ``bench/RESULTS.md``.

Usage::

    uv run --group bench python -m bench            # full run (several minutes)
    uv run --group bench python -m bench --quick    # smaller sizes; writes bench/out/ (git-ignored)
    uv run --group bench python -m bench --only session,router --no-plots

Each figure is the median of at least five interleaved repetitions with its
min–max, and its ratio against a baseline measured in the same run. Absolute
times depend on the machine; the ratios are what carry over.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

from ._harness import Table, format_table

__all__ = ["SUITES", "default_out", "machine_facts", "main"]

SUITES = [
    "session",
    "codec",
    "issuer",
    "router",
    "redis",
    "server",
    "workers",
    "e2e",
    "agent",
    "cli",
    "views",
    "tools",
]
"""Benchmark modules, ``bench/bench_<name>.py``, each exposing ``run(quick) -> list[Table]``."""

_PACKAGES = [
    "livekit-plugins-metadata",
    "livekit-agents",
    "livekit-api",
    "livekit",
    "orjson",
    "PyJWT",
    "redis",
    "aiohttp",
    "signalwire-agents",
    "matplotlib",
]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_facts() -> list[str]:
    """Markdown bullets: CPUs, OS, Python and the versions of the compared libraries."""
    versions = []
    for name in _PACKAGES:
        try:
            versions.append(f"{name} {importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    try:
        load = "- Load average at start (1/5/15 min): " + " / ".join(
            f"{x:.2f}" for x in os.getloadavg()
        )
    except OSError:
        load = "- Load average: unavailable"
    servers = []
    for binary in ("redis-server", "livekit-server"):
        path = shutil.which(binary)
        if path is None:
            continue
        try:
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        servers.append(out.splitlines()[0] if out else binary)
    return [
        f"- CPUs: {os.cpu_count()} × {_cpu_model()} ({platform.machine()}, "
        f"{platform.system()} {platform.release()})",
        load,
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        "- Libraries: " + ", ".join(versions),
        "- Servers: " + ("; ".join(servers) or "none on PATH"),
    ]


def default_out(quick: bool) -> Path:
    """Where results go without ``--out``: the committed file, or ``bench/out/`` for ``--quick``."""
    here = Path(__file__).parent
    return here / "out" / "RESULTS.md" if quick else here / "RESULTS.md"


def _plots(quick: bool, out: Path, sections: list[str], timings: list[str]) -> None:
    """Write the scaling plots next to the results file and add their section."""
    print("== plots", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        from .plots import write_plots

        plot_tables: list[str] = []
        # next to the results file, so `--out elsewhere` leaves bench/'s plots alone
        paths = write_plots(quick=quick, tables=plot_tables, directory=out.resolve().parent)
    except ImportError as exc:
        sections.append(f"(plots skipped: {exc}; install the `bench` dependency group)\n")
        return
    elapsed = time.perf_counter() - t0
    timings.append(f"plots {elapsed:.0f} s")
    print(f"   plots: {elapsed:.1f} s", file=sys.stderr, flush=True)
    sections.append(f"## scaling\n\n_{elapsed:.0f} s_\n")
    for path in paths:
        title = Path(path).stem.replace("_", " ")
        sections.append(f"![{title}]({Path(path).name})\n")
    sections += plot_tables
    print("\n".join(plot_tables), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites and the plots, write the results file; 1 if a suite failed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--only", default="", help="comma-separated suites: " + ",".join(SUITES))
    parser.add_argument(
        "--out",
        default=None,
        help="results file (default: bench/RESULTS.md; with --quick, the git-ignored "
        "bench/out/RESULTS.md, so a quick run never overwrites the committed results)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the scaling plots")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(default_out(args.quick))
    chosen = [s for s in args.only.split(",") if s] or SUITES
    unknown = sorted(set(chosen) - set(SUITES))
    if unknown:
        parser.error(f"unknown suites: {', '.join(unknown)}")

    started = time.perf_counter()
    facts = machine_facts()  # before the run: the load average is the machine's, not ours
    sections: list[str] = []
    timings: list[str] = []
    failed: list[str] = []
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            tables: list[Table] = module.run(quick=args.quick)
        except Exception as exc:  # one broken suite must not lose the others' results
            failed.append(name)
            sections.append(f"## {name}\n\nFAILED: {type(exc).__name__}: {exc}\n")
            print(f"!! {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        elapsed = time.perf_counter() - t0
        timings.append(f"{name} {elapsed:.0f} s")
        print(f"   {name}: {elapsed:.1f} s", file=sys.stderr, flush=True)
        body = "\n".join(format_table(t) for t in tables) or "(no tables: see notes above)\n"
        sections.append(f"## {name}\n\n_{elapsed:.0f} s_\n\n{body}")
        print(body, flush=True)

    if not args.no_plots:
        _plots(args.quick, Path(args.out), sections, timings)

    header = [
        "# Benchmark results",
        "",
        f"Generated by `uv run --group bench python -m bench{' --quick' if args.quick else ''}` "
        f"in {time.perf_counter() - started:.0f} s ({', '.join(timings)}).",
        "Medians of at least 5 interleaved repetitions (min–max shown); ratios are",
        "against the baseline measured in the same run. Absolute times are machine-specific.",
        "",
        *facts,
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(header) + "\n" + "\n".join(sections), encoding="utf-8")
    print(
        f"wrote {args.out} in {time.perf_counter() - started:.0f} s ({', '.join(timings)})",
        file=sys.stderr,
    )
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _exit(status: int) -> None:
    """Exit with ``status``, skipping the teardown of LiveKit's native rtc runtime.

    The e2e suite joins rooms in-process; that runtime can abort the interpreter's
    shutdown with a Rust panic ("cannot unwind") after the results are written.
    """
    if sys.modules.get("livekit.rtc._ffi_client") is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    raise SystemExit(status)


if __name__ == "__main__":
    _exit(main())
