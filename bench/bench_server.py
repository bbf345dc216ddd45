"""``lk-metadata serve`` vs a minimal ``AccessToken`` endpoint: requests/second, p99, memory.

Each server its own process on loopback: ``lk-metadata serve --config FILE`` as an
operator starts it (memory store; a local ``redis-server``, its commands per request
from ``INFO commandstats``); ``TokenASGI`` under uvicorn next to the FastAPI +
``AccessToken`` endpoint of LiveKit's examples; the bare aiohttp + ``AccessToken``
reference (``reference_endpoint.py``); a constant-201 aiohttp floor. A separate,
cheap load-generator process (raw asyncio streams, keep-alive) sends the same
standard token request; ours checks it all (bearer key, rate limit, metadata
allowlist and schema, attributes, routing, a session per token, metrics, a log line
to ``os.devnull``). Repetitions rotate the order; medians, ratios against the
reference of the same run. A second table: memory per stored token session.

Run: ``uv run python -m bench.bench_server [--quick] [--base COMMIT]`` (``--base``: that
commit's ``serve`` on the memory store as one more case, in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from bench._harness import Result, Table, cpu_seconds, format_table, free_port

__all__ = ["run"]

_KEY = "APIbenchkey"
_SECRET = "bench-secret-" + "x" * 40
_BEARER = "bench-bearer-key-" + "y" * 24
_ROOT = Path(__file__).resolve().parent.parent

_REQUEST = {
    "room_name": "bench-room",
    "participant_identity": "caller-1",
    "participant_name": "Bench Caller",
    "participant_metadata": orjson.dumps(
        {
            "department": "support",
            "language": "es",
            "tier": "gold",
            "customer_id": "cust-000123",
            "topic": "billing question",
        }
    ).decode(),
    "participant_attributes": {"plan": "pro"},
}


# ----------------------------------------------------------------------------- servers


class BenchMetadata(BaseModel):
    """The bench's metadata schema (``metadata.model`` of the served config)."""

    department: str
    language: str = "en"
    tier: str = "standard"
    customer_id: str | None = None
    topic: str | None = None


def _config_mapping(port: int, store: str = "memory") -> dict[str, Any]:
    """The served config: every check on, limits high enough never to refuse."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "api_key": _KEY,
        "api_secret": _SECRET,
        "store": store,
        "auth": {"keys": [{"id": "bench", "key": _BEARER}]},
        "rate_limit": {"rate": 1e9, "burst": 1_000_000_000},
        "max_sessions": 10_000_000,
        "max_sessions_per_principal": 10_000_000,
        "private_keys": ["customer_id"],
        "metadata": {
            "allowed_keys": ["department", "language", "tier", "customer_id", "topic"],
            "allowed_attribute_keys": ["plan"],
            "model": "bench.bench_server:BenchMetadata",
        },
    }


def _serve_command(port: int, store: str, workdir: Path) -> list[str]:
    """``lk-metadata serve --config FILE``: the command an operator runs, as it is."""
    path = workdir / f"serve-{port}.yaml"
    path.write_bytes(orjson.dumps(_config_mapping(port, store)))  # JSON is YAML
    return [str(Path(sys.executable).with_name("lk-metadata")), "serve", "--config", str(path)]


def _serve_asgi(port: int) -> None:
    """``TokenASGI`` (same config) under uvicorn, as a FastAPI user would run it."""
    import uvicorn

    from livekit.plugins.metadata.server.asgi import TokenASGI
    from livekit.plugins.metadata.server.config import ServerConfig

    _log_to_devnull()
    app = TokenASGI(ServerConfig.from_mapping(_config_mapping(port)))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _serve_fastapi_reference(port: int) -> None:
    """The FastAPI + ``AccessToken`` endpoint of LiveKit's Python examples, under uvicorn."""
    import secrets

    import uvicorn
    from fastapi import FastAPI
    from livekit import api

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/token", status_code=201)
    async def token(body: dict[str, Any]) -> dict[str, str]:
        identity = body.get("participant_identity") or "user-" + secrets.token_urlsafe(16)
        room = body.get("room_name") or "room-" + secrets.token_urlsafe(16)
        metadata = body.get("participant_metadata") or ""
        at = (
            api.AccessToken(_KEY, _SECRET)
            .with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .with_name(body.get("participant_name") or "")
            .with_metadata(metadata)
            .with_attributes(body.get("participant_attributes") or {})
            .with_room_config(
                api.RoomConfiguration(
                    agents=[api.RoomAgentDispatch(agent_name="support", metadata=metadata)]
                )
            )
        )
        return {"server_url": "ws://127.0.0.1:7880", "participant_token": at.to_jwt()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _log_to_devnull() -> None:
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    log = logging.getLogger("livekit.plugins.metadata")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _serve_ours(port: int) -> None:
    from aiohttp import web

    from livekit.plugins.metadata.server.app import create_app
    from livekit.plugins.metadata.server.config import ServerConfig
    from livekit.plugins.metadata.server.run import prepare_process

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    log = logging.getLogger("livekit.plugins.metadata")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    config = ServerConfig.from_mapping(_config_mapping(port))
    app = create_app(config)
    prepare_process()  # as `lk-metadata serve` (server.run) does
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _serve_reference(port: int) -> None:
    from aiohttp import web

    from bench.reference_endpoint import create_reference_app

    app = create_reference_app(_KEY, _SECRET, server_url="ws://127.0.0.1:7880")
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _serve_floor(port: int) -> None:
    from aiohttp import web

    body = orjson.dumps({"server_url": "ws://127.0.0.1:7880", "participant_token": "x" * 600})

    async def token(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201, body=body, content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _spawn_server(
    kind: str, workdir: Path, redis_url: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    plugin = workdir / "base" / "plugin" if kind == "serve-base" else _ROOT / "plugin"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(_ROOT)])}
    if kind in ("serve-memory", "serve-base"):
        cmd = _serve_command(port, "memory", workdir)
    elif kind == "serve-redis":
        cmd = _serve_command(port, redis_url, workdir)
    else:
        cmd = [sys.executable, "-m", "bench.bench_server", "--serve", kind, "--port", str(port)]
    # The server's log (one line per request for serve) goes to a file, never a pipe.
    log = open(workdir / f"{kind}.log", "wb")  # noqa: SIM115 - closed with the bench's tempdir
    proc = subprocess.Popen(cmd, cwd=_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    proc.stderr = open(workdir / f"{kind}.log", "rb")  # noqa: SIM115 - read on early exit
    return proc, port


def _wait_ready(kind: str, proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{kind} server exited early:\n{err[-2000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{kind} server did not become ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- load generator


async def _loadgen(
    port: int, requests: int, concurrency: int, bearer: str | None
) -> dict[str, Any]:
    body = orjson.dumps(_REQUEST)
    head = (
        f"POST /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    if bearer:
        head += f"Authorization: Bearer {bearer}\r\n"
    raw = (head + "\r\n").encode() + body
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                writer.write(raw)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                status = int(status_line.split(b" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "statuses": statuses,
    }


def _measure(
    pid: int, port: int, requests: int, concurrency: int, bearer: str | None
) -> dict[str, Any]:
    cpu0 = cpu_seconds(pid)
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_server",
        "--loadgen",
        "--port",
        str(port),
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
    ]
    if bearer:
        cmd += ["--bearer", bearer]
    out = subprocess.run(cmd, cwd=_ROOT, capture_output=True, check=True, timeout=300)
    result: dict[str, Any] = orjson.loads(out.stdout)
    cpu1 = cpu_seconds(pid)
    result["cpu"] = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / requests
    bad = {k: v for k, v in result["statuses"].items() if k != "201"}
    if bad:
        raise RuntimeError(f"load generator saw non-201 answers: {bad}")
    return result


# ----------------------------------------------------------------------------- memory


async def _memory_per_session(n: int) -> dict[str, float]:
    """Bytes per token session in a MemoryStore vs a dict of dicts with the same content."""
    import gc
    import tracemalloc

    from livekit.plugins.metadata.sessions.manager import SessionManager
    from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer

    metadata = orjson.loads(str(_REQUEST["participant_metadata"]))
    private = {"customer_id": metadata.pop("customer_id")}
    sessions = SessionManager(secret_key=b"k" * 32, cleanup_threshold=10 * n)
    issuer = TokenIssuer(_KEY, _SECRET, sessions=sessions)
    dispatch = Dispatch("support", metadata={"department": "support"})
    ids: list[str] = []
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        minted = await issuer.amint(
            f"caller-{i}",
            "bench-room",
            metadata=metadata,
            private_metadata=private,
            dispatch=dispatch,
        )
        ids.append(minted.session_id)
    gc.collect()
    store_bytes = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(ids)
    sample = await sessions.get_session_metadata(ids[0])
    plain: dict[str, dict[str, Any]] = {}
    before = tracemalloc.get_traced_memory()[0]
    for i, sid in enumerate(ids):
        plain[(sid + ".")[:-1]] = {
            **sample,
            "lk-metadata.owner": {"identity": f"caller-{i}", "room": "bench-room"},
        }
    gc.collect()
    dict_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # Both figures include their key strings (the dict gets its own copies) and neither
    # the list of ids (its pointer array is subtracted).
    return {"n": n, "store": store_bytes / n, "dict": dict_bytes / n}


def _memory_table(n: int) -> Table:
    cmd = [sys.executable, "-m", "bench.bench_server", "--memory", str(n)]
    out = subprocess.run(cmd, cwd=_ROOT, capture_output=True, check=True, timeout=600)
    m = orjson.loads(out.stdout)
    note = "\n".join(
        [
            f"{m['n']:,} token sessions written by `TokenIssuer.amint` (4 public keys, 1 private "
            "key, owner record) into a `MemoryStore`, tokens discarded; live heap growth counted "
            "with `tracemalloc` in a fresh process. Baseline: a plain "
            "`dict` of `dict` holding the same stored content under the same ids.",
            "",
            "| case | bytes/session | vs dict |",
            "|---|---|---|",
            f"| MemoryStore token sessions | {m['store']:,.0f} | {m['store'] / m['dict']:.2f}× |",
            f"| dict of dict, same content | {m['dict']:,.0f} | 1.00× |",
        ]
    )
    return Table("Memory per stored token session", [], note=note)


# ----------------------------------------------------------------------------- run


def _redis_calls(url: str, only: tuple[str, ...] = ()) -> int:
    """Commands the Redis server has run so far (``INFO commandstats``, INFO itself left out;
    commands run inside scripts included); ``only``: just these (e.g. the script calls)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    names = [f"cmdstat_{name}" for name in only]
    return sum(
        int(v["calls"])
        for k, v in stats.items()
        if k != "cmdstat_info" and (not only or k in names)
    )


_SCRIPT_CALLS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            _redis_calls(url)
            return proc, url
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _extract_base(commit: str, workdir: Path) -> None:
    """The plugin package of ``commit`` under ``workdir/base`` (``git archive``)."""
    archive = subprocess.run(
        ["git", "archive", commit, "plugin"], cwd=_ROOT, capture_output=True, check=True
    ).stdout
    (workdir / "base").mkdir()
    subprocess.run(["tar", "-x", "-C", str(workdir / "base")], input=archive, check=True)


def run(quick: bool = False, base: str | None = None) -> list[Table]:
    """Measure the servers; one table of requests/second, latency and server CPU per request.

    ``base``: a commit whose ``lk-metadata serve`` (memory) runs as one more case.
    """
    import tempfile

    requests = 400 if quick else 6000
    repeats = 3
    concurrency = 16
    procs: list[subprocess.Popen[bytes]] = []
    redis_per_request: list[float] = []
    script_calls: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            redis_proc, redis_url = _start_redis(workdir)
            procs.append(redis_proc)
            targets: dict[str, tuple[int, int, str | None]] = {}
            spawned = []
            cases = [(f"{OURS_BASE} `{base}`", "serve-base", _BEARER)] if base else []
            if base:
                _extract_base(base, workdir)
            for name, kind, bearer in (
                *cases,
                (OURS, "serve-memory", _BEARER),
                (OURS_REDIS, "serve-redis", _BEARER),
                (REFERENCE, "reference", None),
                (ASGI, "asgi", _BEARER),
                (FASTAPI_REFERENCE, "fastapi-reference", None),
                (FLOOR, "floor", None),
            ):
                proc, port = _spawn_server(kind, workdir, redis_url)
                procs.append(proc)
                spawned.append((name, kind, proc, port, bearer))
            for name, kind, proc, port, bearer in spawned:
                _wait_ready(kind, proc, port)
                targets[name] = (proc.pid, port, bearer)
            for pid, port, bearer in targets.values():  # warm-up, not recorded
                _measure(pid, port, max(200, requests // 5), concurrency, bearer)
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            names = list(targets)
            for rep in range(repeats):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                if rep % 2:
                    order.reverse()
                for name in order:  # a short unrecorded burst first: the case measured
                    # after another (the floor most of all) ran slow, whichever it was
                    _measure(*targets[name][:2], requests // 20, concurrency, targets[name][2])
                    before = _redis_calls(redis_url) if name == OURS_REDIS else 0
                    scripts = _redis_calls(redis_url, _SCRIPT_CALLS) if name == OURS_REDIS else 0
                    samples[name].append(
                        _measure(*targets[name][:2], requests, concurrency, targets[name][2])
                    )
                    if name == OURS_REDIS:
                        redis_per_request.append((_redis_calls(redis_url) - before) / requests)
                        scripts = _redis_calls(redis_url, _SCRIPT_CALLS) - scripts
                        script_calls.append(scripts / requests)
        finally:
            for proc in procs:
                _stop(proc)
    table = _table(samples, requests, repeats, concurrency)
    if redis_per_request:
        table.note += (
            f"\nRedis commands per request (`INFO commandstats` before and after, "
            f"`lk-metadata serve` on Redis): {statistics.median(redis_per_request):.2f}, "
            f"of which script calls (the client's commands): "
            f"{statistics.median(script_calls):.2f}; the rest run inside the scripts."
        )
    return [table, _memory_table(20_000 if quick else 100_000)]


OURS = "`lk-metadata serve`, store: memory (all checks, a session per token)"
OURS_BASE = "`lk-metadata serve`, store: memory, before: commit"
OURS_REDIS = "`lk-metadata serve`, store: local redis-server"
ASGI = "TokenASGI under uvicorn (same config, memory)"
FASTAPI_REFERENCE = "FastAPI + AccessToken under uvicorn"
REFERENCE = "reference: aiohttp + AccessToken"
FLOOR = "floor: aiohttp, constant 201 reply"


def _table(
    samples: dict[str, list[dict[str, Any]]], requests: int, repeats: int, concurrency: int
) -> Table:
    def med(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    has_cpu = all(s["cpu"] is not None for rows in samples.values() for s in rows)
    ref_rps = med(REFERENCE, "rps")
    ref_cpu = med(REFERENCE, "cpu") if has_cpu else 0.0
    floor_cpu = med(FLOOR, "cpu") if has_cpu else 0.0
    lines = [
        f"{requests} requests per repetition over {concurrency} keep-alive connections from a "
        f"separate load-generator process; {repeats} repetitions in rotating order; medians.",
        "Server CPU = user+system CPU seconds of the server process per request (from /proc), "
        "which is robust to other load on the machine; capacity = 1 / server CPU.",
        "",
        "| case | req/s | vs reference | p50 | p99 (min–max) | server CPU/req | "
        "capacity vs reference | CPU above floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in samples:
        rps = med(name, "rps")
        p99s = [s["p99"] for s in samples[name]]
        cpu_cols = "— | — | —"
        if has_cpu:
            cpu = med(name, "cpu")
            cpu_cols = (
                f"{cpu * 1e6:.0f} µs | {ref_cpu / cpu:.2f}× | "
                f"{max(cpu - floor_cpu, 0.0) * 1e6:.0f} µs"
            )
        lines.append(
            f"| {name} | {rps:,.0f} | {rps / ref_rps:.2f}× | {med(name, 'p50') * 1e3:.2f} ms | "
            f"{statistics.median(p99s) * 1e3:.2f} ms ({min(p99s) * 1e3:.1f}–"
            f"{max(p99s) * 1e3:.1f}) | {cpu_cols} |"
        )
    results = [
        Result(name, per_op=[1.0 / s["rps"] for s in samples[name]], baseline=name == REFERENCE)
        for name in samples
    ]
    return Table(
        "Token endpoint on loopback: wall-clock throughput (per op = 1 / req/s)",
        results,
        note="\n".join(lines),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--serve", choices=["ours", "reference", "floor", "asgi", "fastapi-reference"]
    )
    parser.add_argument("--loadgen", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bearer", default=None)
    parser.add_argument("--memory", type=int, default=0, help="measure N token sessions")
    parser.add_argument("--base", default=None, help="also serve this commit's plugin (memory)")
    args = parser.parse_args(argv)
    if args.serve == "ours":
        _serve_ours(args.port)
    elif args.serve == "reference":
        _serve_reference(args.port)
    elif args.serve == "floor":
        _serve_floor(args.port)
    elif args.serve == "asgi":
        _serve_asgi(args.port)
    elif args.serve == "fastapi-reference":
        _serve_fastapi_reference(args.port)
    elif args.memory:
        sys.stdout.write(orjson.dumps(asyncio.run(_memory_per_session(args.memory))).decode())
    elif args.loadgen:
        result = asyncio.run(_loadgen(args.port, args.requests, args.concurrency, args.bearer))
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode())
    else:
        for table in run(quick=args.quick, base=args.base):
            print(format_table(table))


if __name__ == "__main__":
    main()
