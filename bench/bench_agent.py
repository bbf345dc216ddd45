"""The agent side against a bare worker: connect -> route, CPU per job, USS per job (issue 33).

One local-only livekit-server (``tests/fixtures/livekit_server.py``), one redis-server,
and three real workers run as in production (``bench/agent_worker.py``: job processes
from LiveKit's forkserver, idle processes prewarmed):

* ``bare`` (baseline): ``bench/bare_agent.py``: ``json.loads`` + if/elif, the same four
  Agents and ``route`` attributes as the example, no plugin code;
* ``memory``: ``examples/agent.py`` as shipped (adapter, rules, sessions in memory);
* ``redis``: the same with ``REDIS_URL`` (sessions in Redis, one client per process).

Each call is a new room: a Python rtc caller joins with a token dispatching the case's
worker (metadata ``{"department": "support", "language": "es"}`` on the caller and the
job), waits until the agent's ``route`` attribute is visible, leaves, and the room is
deleted so the job ends. Measured per case:

* connect -> route: from just before ``room.connect`` until ``route`` is visible;
* CPU per job: user + system CPU of every process of the worker (main process,
  forkserver, job processes, reaped ones included) over a batch of calls, once the
  worker has settled again (job processes gone, replacements prewarmed), / calls;
* USS per job process: unique memory of the job process (a worker process holding a
  connection to the server other than the main one) while its call is routed
  (sequential calls: one job at a time).

Batches alternate between the cases in rotating order, sequential (one call at a time)
and concurrent (10 calls at once). Figures are medians with min-max, and ratios against
``bare`` measured in the same run.

Run: ``uv run python -m bench.bench_agent`` (a few minutes). ``run(quick=True)`` and a
missing livekit-server or redis-server binary print why and return no table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._harness import Table

__all__ = ["run"]

CASES = ("bare", "memory", "redis")
_NAMES = {"bare": "bench-agent-bare", "memory": "bench-agent-mem", "redis": "bench-agent-redis"}
_METADATA = '{"department":"support","language":"es"}'
_EXPECTED = "support-es"
CONCURRENT = 10
_CALL_TIMEOUT = 45.0  # a failure timeout on a loaded machine, never a measurement
_IDLE = 2  # idle (prewarmed) job processes per worker
TARGETS = {  # (metric, case) -> most allowed ratio against bare
    ("latency", "redis"): 1.1,
    ("cpu", "memory"): 1.3,
    ("cpu", "redis"): 1.5,
    ("uss", "memory"): 1.2,
    ("uss", "redis"): 1.2,
}


# ---------------------------------------------------------------- worker processes


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants, reaped children included."""
    import psutil

    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def job_processes(pid: int, port: int) -> list[Any]:
    """The worker's processes with a TCP connection to the server, the main one excepted."""
    import psutil

    found = []
    for proc in _tree(pid)[1:]:
        with contextlib.suppress(psutil.Error):
            if any(c.raddr and c.raddr.port == port for c in proc.net_connections(kind="tcp")):
                found.append(proc)
    return found


def job_uss(pid: int, port: int) -> list[float]:
    """USS (bytes) of each job process of the worker."""
    import psutil

    out = []
    for proc in job_processes(pid, port):
        with contextlib.suppress(psutil.Error):
            out.append(float(proc.memory_full_info().uss))
    return out


async def settle(pid: int, port: int, pause: float = 1.5, timeout: float = 30.0) -> None:
    """Wait until the worker runs no job process and its zombies are reaped, then ``pause``."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = job_processes(pid, port)
        zombies = [p for p in _tree(pid) if _status(p) == psutil.STATUS_ZOMBIE]
        if not busy and not zombies:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(pause)


def _status(proc: Any) -> str | None:
    import psutil

    try:
        status: str = proc.status()
    except psutil.Error:
        return None
    return status


# ---------------------------------------------------------------- calls


async def _call(server: Any, lkapi: Any, case: str, tag: str, release: Any) -> float | None:
    """One call: join, wait for ``route``, run ``release`` (a USS sample), leave, delete the room.

    Returns the connect -> route latency, or None when the call failed (no route within
    the failure timeout: on an overloaded machine a dispatch can be lost).
    """
    from livekit import api

    from tests.fixtures.e2e import (
        connected_room,
        plain_token,
        unique_room,
        wait_for_remote_attribute,
    )

    room = unique_room(f"bench-agent-{case}-{tag}")
    token = plain_token(
        server,
        "caller",
        room,
        metadata=_METADATA,
        agents=[api.RoomAgentDispatch(agent_name=_NAMES[case], metadata=_METADATA)],
    )
    elapsed: float | None = None
    try:
        t0 = time.perf_counter()
        async with connected_room(server, token) as joined:
            _, value = await wait_for_remote_attribute(joined, "route", timeout=_CALL_TIMEOUT)
            elapsed = time.perf_counter() - t0
            if value != _EXPECTED:
                raise RuntimeError(f"{case}: route {value!r}, expected {_EXPECTED!r}")
            await release()
    except TimeoutError:
        print(f"bench_agent: {case} call {tag} failed (no route)", file=sys.stderr)
        return None
    finally:
        with contextlib.suppress(Exception):
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
    return elapsed


class _Samples:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str, str], list[float]] = {}
        self.failed: dict[str, int] = {}

    def add(self, mode: str, metric: str, case: str, values: list[float]) -> None:
        self.data.setdefault((mode, metric, case), []).extend(values)


async def _measure(
    server: Any, workers: dict[str, int], rounds: int, sequential_calls: int
) -> _Samples:
    from tests.fixtures.e2e import lk_api

    port = int(server.url.rsplit(":", 1)[1])
    samples = _Samples()
    async with lk_api(server) as lkapi:

        async def no_hold() -> None:
            return None

        # warm-up: one call per worker (the first job of a worker warms its caches)
        for case in CASES:
            await _call(server, lkapi, case, "warm", no_hold)
        for case in CASES:
            await settle(workers[case], port)

        for rnd in range(rounds):
            for k in range(len(CASES)):
                case = CASES[(rnd + k) % len(CASES)]
                await _sequential(
                    server, lkapi, case, workers[case], port, rnd, sequential_calls, samples
                )
            for k in range(len(CASES)):
                case = CASES[(rnd + k) % len(CASES)]
                await _concurrent(server, lkapi, case, workers[case], port, rnd, samples)
    return samples


async def _sequential(
    server: Any, lkapi: Any, case: str, pid: int, port: int, rnd: int, calls: int, out: _Samples
) -> None:
    """One call at a time; USS sampled while each call is routed."""
    cpu0 = tree_cpu(pid)
    uss: list[float] = []

    async def sample() -> None:
        uss.extend(job_uss(pid, port))

    done = 0
    for i in range(calls):
        latency = await _call(server, lkapi, case, f"s{rnd}-{i}", sample)
        if latency is None:
            out.failed[case] = out.failed.get(case, 0) + 1
            continue
        done += 1
        out.add("sequential", "latency", case, [latency])
    await settle(pid, port)
    if done:
        out.add("sequential", "cpu", case, [(tree_cpu(pid) - cpu0) / done])
    out.add("sequential", "uss", case, uss)


async def _concurrent(
    server: Any, lkapi: Any, case: str, pid: int, port: int, rnd: int, out: _Samples
) -> None:
    """CONCURRENT calls at once, each leaving as soon as it is routed (as sequential ones do)."""

    async def leave() -> None:
        return None

    cpu0 = tree_cpu(pid)
    calls = [_call(server, lkapi, case, f"c{rnd}-{i}", leave) for i in range(CONCURRENT)]
    latencies = [x for x in await asyncio.gather(*calls) if x is not None]
    out.failed[case] = out.failed.get(case, 0) + CONCURRENT - len(latencies)
    await settle(pid, port)
    out.add("concurrent", "latency", case, latencies)
    if latencies:  # per job that ran: a lost dispatch costs the worker nothing
        out.add("concurrent", "cpu", case, [(tree_cpu(pid) - cpu0) / len(latencies)])


# ---------------------------------------------------------------- report

_UNITS = {
    "latency": ("s", 1.0, "{:.3f}"),
    "cpu": ("s", 1.0, "{:.3f}"),
    "uss": ("MB", 1e-6, "{:.1f}"),
}
_LABELS = {
    "latency": "connect -> route visible",
    "cpu": "worker CPU per job",
    "uss": "USS per job process",
}


def _cell(values: list[float], metric: str) -> str:
    unit, scale, fmt = _UNITS[metric]
    if not values:
        return "n/a"
    med = fmt.format(statistics.median(values) * scale)
    lo, hi = fmt.format(min(values) * scale), fmt.format(max(values) * scale)
    return f"{med} {unit} ({lo}–{hi}, n={len(values)})"


def report(samples: _Samples) -> tuple[str, list[str]]:
    """A markdown table (rows: mode x metric; columns: cases) and the target checks."""
    lines = [
        "| measure | bare (baseline) | memory | ratio | Redis | ratio |",
        "|---|---|---|---|---|---|",
    ]
    checks: list[str] = []
    for mode in ("sequential", "concurrent"):
        for metric in ("latency", "cpu", "uss") if mode == "sequential" else ("latency", "cpu"):
            base = samples.data.get((mode, metric, "bare"), [])
            row = [f"{_LABELS[metric]}, {mode}", _cell(base, metric)]
            for case in ("memory", "redis"):
                values = samples.data.get((mode, metric, case), [])
                row.append(_cell(values, metric))
                if base and values:
                    ratio = statistics.median(values) / statistics.median(base)
                    row.append(f"{ratio:.2f}×")
                    target = TARGETS.get((metric, case))
                    if target is not None:
                        verdict = "met" if ratio <= target else "MISSED"
                        checks.append(
                            f"{_LABELS[metric]} ({mode}, {case}): {ratio:.2f}× bare, "
                            f"target ≤ {target}× — {verdict}"
                        )
                else:
                    row.append("—")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), checks


# ---------------------------------------------------------------- entry point


@contextlib.contextmanager
def _workers(server: Any, redis_url: str, log_dir: Path) -> Iterator[dict[str, int]]:
    from tests.fixtures.e2e import REPO, worker_process

    launcher = str(REPO / "bench" / "agent_worker.py")
    # BENCH_AGENT_EXAMPLE: another worker file to compare (e.g. an older examples/agent.py)
    example = os.environ.get("BENCH_AGENT_EXAMPLE") or str(REPO / "examples" / "agent.py")
    files = {"bare": str(REPO / "bench" / "bare_agent.py"), "memory": example, "redis": example}
    with contextlib.ExitStack() as stack:
        started = {
            case: stack.enter_context(
                worker_process(
                    server,
                    [launcher, files[case]],
                    log_path=log_dir / f"worker-{case}.log",
                    env={
                        "LK_AGENT_NAME": _NAMES[case],
                        "REDIS_URL": redis_url if case == "redis" else "",
                        "LIVEKIT_METADATA_SECRET": "bench-" + "s" * 40,
                        "BENCH_IDLE_PROCESSES": str(_IDLE),
                        # no local VAD / turn-detector weights in the forkserver (no worker
                        # here uses them): the same for all three, and a faster start
                        "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0",
                    },
                    wait=False,
                )
            )
            for case in CASES
        }
        for worker in started.values():
            worker.wait_registered(180)
        # the forkserver and the first idle processes take long to start on a busy
        # machine: measure only once every worker has its prewarmed processes
        deadline = time.monotonic() + 300
        while any(w.log().count("process initialized") < _IDLE for w in started.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not prewarm their idle processes in 300 s")
            time.sleep(1)
        yield {case: worker.pid for case, worker in started.items()}


def run(quick: bool = False, rounds: int = 5, sequential_calls: int = 3) -> list[Table]:
    """Measure the three workers; [] in quick mode or without the server binaries."""
    from tests.fixtures.livekit_server import find_binary, running_livekit_server
    from tests.fixtures.redis_server import RedisServer

    if quick:
        print(
            "bench_agent: skipped in --quick mode (a server and three workers take ~30 s to "
            "start); run `uv run python -m bench.bench_agent`",
            file=sys.stderr,
        )
        return []
    binary = find_binary()
    redis_binary = shutil.which("redis-server")
    if binary is None or redis_binary is None:
        reason = "skipped: needs livekit-server (bash .ci/install-livekit-server) and redis-server"
        print(f"bench_agent: {reason}", file=sys.stderr)
        return [Table("Agent side", [], note=reason)]
    workdir = Path(tempfile.mkdtemp(prefix="lkmeta-bench-agent-"))
    load_before = os.getloadavg()
    redis = RedisServer(redis_binary)
    redis.start()
    try:
        with (
            running_livekit_server(binary, workdir=workdir / "server") as server,
            _workers(server, redis.url, workdir) as workers,
        ):
            samples = asyncio.run(_measure(server, workers, rounds, sequential_calls))
    finally:
        redis.close()
    load_after = os.getloadavg()
    table, checks = report(samples)
    note = "\n".join(
        [
            "Real livekit-server v1.13.5 and redis-server on loopback; three real workers "
            "(`bench/agent_worker.py`: PROCESS executor, forkserver, 2 idle processes, "
            "production mode): `bench/bare_agent.py` (baseline), `examples/agent.py` in "
            f"memory and with `REDIS_URL`. {rounds} rounds, each a batch per case in rotating "
            f"order: {sequential_calls} sequential calls, then {CONCURRENT} concurrent calls; "
            "each call a new room. Median (min–max, n samples); ratio of medians against "
            "bare in the same run. CPU per job: one sample per batch (all processes of the "
            "worker). USS: the job process while its (sequential) call is routed.",
            f"Load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load_before)}, "
            f"after: {'/'.join(f'{x:.2f}' for x in load_after)} (2 cores shared).",
            "",
            table,
            "",
            "Failed calls (no route within the failure timeout; left out): "
            + (", ".join(f"{k} {v}" for k, v in samples.failed.items() if v) or "none")
            + ".",
            "",
            "Targets (issue 33):",
            "",
            *[f"- {c}" for c in checks],
        ]
    )
    return [Table("Agent side: examples/agent.py against a bare worker", [], note=note)]


def main() -> None:
    from bench._harness import format_table

    for table in run(quick="--quick" in sys.argv):
        print(format_table(table))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # skip the rtc runtime's teardown (see bench/__main__.py: _exit)
