"""``lk-metadata serve --workers 2`` vs ``--workers 1``: token requests/second on one port.

Both servers are the real command (``python -m livekit.plugins.metadata.cli serve``)
with the same config: one bearer key, no rate limit, the in-memory store, the
bundled example rules, one log line per request (to ``/dev/null``). Each
measurement starts a separate load-generator process (``bench.bench_server``'s
raw-asyncio HTTP/1.1 client: keep-alive, ``concurrency`` connections, the
standard token request back to back) and reports:

* requests/second (median over repetitions, min–max) and the ratio against one
  worker measured in the same run;
* the servers' CPU per request (parent + workers, from ``/proc``);
* the load generator's own CPU share: its CPU seconds over the wall time (1.0 =
  one core busy). On a 2-core machine a generator near 1.0 leaves about one core
  for the servers, which caps what a second worker can add.

Repetitions alternate which server goes first. Run:
``uv run python -m bench.bench_workers [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from bench._harness import Result, Table, cpu_seconds, format_table, free_port

__all__ = ["run"]

_KEY = "APIbenchkey"
_SECRET = "bench-secret-" + "x" * 40
_BEARER = "bench-bearer-key-" + "y" * 24
_ROOT = Path(__file__).resolve().parent.parent


def _cpu(pid: int) -> float:
    seconds = cpu_seconds(pid)
    if seconds is None:
        raise RuntimeError("this benchmark reads process CPU time from /proc (Linux only)")
    return seconds


def _tree(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [pid, *children]


def _spawn(workers: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = workdir / f"serve-{port}.json"
    config.write_bytes(
        orjson.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "api_key": _KEY,
                "auth": {"keys": [{"id": "bench", "key": _BEARER}]},
                "rate_limit": None,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env["LIVEKIT_API_SECRET"] = _SECRET
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT / "plugin"), str(_ROOT)])
    cmd = [sys.executable, "-m", "livekit.plugins.metadata.cli", "serve", "-c", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--workers", str(workers)],
        cwd=_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp,
        ):
            if resp.status == 200 and len(_tree(proc.pid)) == workers + (workers > 1):
                return proc, port
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError(f"serve --workers {workers} did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _measure(pid: int, port: int, requests: int, concurrency: int) -> dict[str, Any]:
    pids = _tree(pid)
    cpu0 = sum(_cpu(p) for p in pids)
    cmd = [sys.executable, "-m", "bench.bench_server", "--loadgen", "--port", str(port)]
    cmd += ["--requests", str(requests), "--concurrency", str(concurrency), "--bearer", _BEARER]
    t0 = time.perf_counter()
    gen = subprocess.Popen(cmd, cwd=_ROOT, stdout=subprocess.PIPE)
    assert gen.stdout is not None
    out = gen.stdout.read()
    _, status, usage = os.wait4(gen.pid, 0)
    gen.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if gen.returncode != 0:
        raise RuntimeError("the load generator failed")
    result: dict[str, Any] = orjson.loads(out)
    bad = {k: v for k, v in result["statuses"].items() if k != "201"}
    if bad:
        raise RuntimeError(f"load generator saw non-201 answers: {bad}")
    result["server_cpu"] = (sum(_cpu(p) for p in pids) - cpu0) / requests
    result["gen_share"] = (usage.ru_utime + usage.ru_stime) / wall
    return result


def run(quick: bool = False) -> list[Table]:
    """Measure one and two workers; one table of requests/second and CPU shares."""
    requests = 600 if quick else 4000
    repeats = 3 if quick else 5
    concurrency = 16
    names = {1: "serve --workers 1", 2: "serve --workers 2"}
    samples: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    procs: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for workers in names:
                procs[workers] = _spawn(workers, Path(tmp))
            for proc, port in procs.values():  # warm-up, not recorded
                _measure(proc.pid, port, max(200, requests // 5), concurrency)
            for rep in range(repeats):
                order = [1, 2] if rep % 2 == 0 else [2, 1]
                for workers in order:
                    proc, port = procs[workers]
                    samples[workers].append(_measure(proc.pid, port, requests, concurrency))
        finally:
            for proc, _ in procs.values():
                _stop(proc)
    return [_table(samples, names, requests, repeats, concurrency)]


def _table(
    samples: dict[int, list[dict[str, Any]]],
    names: dict[int, str],
    requests: int,
    repeats: int,
    concurrency: int,
) -> Table:
    def med(workers: int, key: str) -> float:
        return statistics.median(s[key] for s in samples[workers])

    base = med(1, "rps")
    lines = [
        f"{requests} token requests per repetition over {concurrency} keep-alive connections "
        f"from a separate load-generator process; {repeats} repetitions, alternating order; "
        f"medians. {os.cpu_count()} CPUs.",
        "",
        "| case | req/s (min–max) | vs 1 worker | server CPU/req | load generator CPU share |",
        "|---|---|---|---|---|",
    ]
    for workers, name in names.items():
        rps = [s["rps"] for s in samples[workers]]
        lines.append(
            f"| {name} | {med(workers, 'rps'):,.0f} ({min(rps):,.0f}–{max(rps):,.0f}) | "
            f"{med(workers, 'rps') / base:.2f}× | {med(workers, 'server_cpu') * 1e6:.0f} µs | "
            f"{med(workers, 'gen_share'):.2f} of a core |"
        )
    results = [
        Result(name, per_op=[1.0 / s["rps"] for s in samples[w]], baseline=w == 1)
        for w, name in names.items()
    ]
    return Table(
        "lk-metadata serve: --workers 2 vs --workers 1 (per op = 1 / req/s)",
        results,
        note="\n".join(lines),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for table in run(quick=args.quick):
        print(format_table(table))


if __name__ == "__main__":
    main()
