"""Where a token request's server CPU goes: each step, timed inside a serving process.

Serves the app as ``lk-metadata serve`` does (``create_app`` through the edge,
the bench's config: memory store, every check on, a session per token, the log
line written as ``serve`` writes it) in this process, drives it with
``bench_server``'s load generator (a separate process), and takes this process's
CPU per request; a second pass times each step by wrapping it (the wrappers'
own cost spread in proportion). The HTTP layer is the served CPU outside the core.

Run: ``uv run python -m bench.where_time_goes [--requests 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import os
import socket
import sys
import time
from typing import Any

import orjson

from bench.bench_server import _BEARER, _config_mapping
from livekit.plugins.metadata.server import admission, core, parsing, pipeline
from livekit.plugins.metadata.server.app import create_app
from livekit.plugins.metadata.server.config import ServerConfig
from livekit.plugins.metadata.server.core import TokenEndpoint
from livekit.plugins.metadata.server.edge import edge_runner, serve_edge
from livekit.plugins.metadata.server.run import (
    LOG_FORMAT,
    CachedTimeFormatter,
    LoopFlushedHandler,
)
from livekit.plugins.metadata.sessions.manager import SessionSpace
from livekit.plugins.metadata.tokens.issuer import TokenIssuer

__all__ = ["main"]

STEPS = [
    ("framing (size, content type)", parsing, "check_framing"),
    ("authorize (bearer key, rate buckets)", pipeline, "_authorize"),
    ("parse (JSON, request model, metadata codec, attributes)", parsing, "parse"),
    ("policy (schema, keys, room and identity)", pipeline, "_apply_policy"),
    ("routing (rules index, dispatch)", pipeline, "_choose_dispatch"),
    ("admission (rate limits, session cap)", admission, "admit"),
    ("answer (JSON body)", pipeline, "_answer"),
    ("log line (format, write)", core, "_log_request"),
]


def _wrap(owner: Any, name: str, spent: dict[str, int], label: str) -> None:
    fn = getattr(owner, name)
    clock = time.thread_time_ns  # CPU time: a preempted step costs nothing extra
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return await fn(*args, **kwargs)
            finally:
                spent[label] += clock() - t0

        setattr(owner, name, timed_async)
    else:

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += clock() - t0

        setattr(owner, name, timed)


async def _served(port: int, n: int) -> float:
    """Server CPU seconds per request of this process while the bench's load generator runs."""
    cmd = [sys.executable, "-m", "bench.bench_server", "--loadgen", "--port", str(port)]
    cmd += ["--requests", str(n), "--concurrency", "16", "--bearer", _BEARER]
    t0 = time.process_time()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    cpu = (time.process_time() - t0) / n
    statuses = orjson.loads(out)["statuses"]
    if set(statuses) != {"201"}:
        raise RuntimeError(f"non-201 answers: {statuses}")
    return cpu


async def _measure(n: int) -> tuple[float, dict[str, float]]:
    config = ServerConfig.from_mapping(_config_mapping(0))
    runner = edge_runner(create_app(config, warn_dev_keys=False), config.edge)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    servers = await serve_edge(runner, [sock], config.edge)
    port = sock.getsockname()[1]
    mint, write, handler = "mint (claims, HS256 signing)", "session write (memory store)", "-"
    try:
        gc.collect()
        gc.freeze()
        await _served(port, n // 5)  # warm-up
        total = await _served(port, n)
        spent: dict[str, int] = {label: 0 for label, _, _ in STEPS}
        for label, owner, name in STEPS:
            _wrap(owner, name, spent, label)
        spent[mint] = spent[write] = spent[handler] = 0
        _wrap(TokenIssuer, "amint", spent, mint)
        _wrap(SessionSpace, "update", spent, write)
        _wrap(TokenEndpoint, "handle", spent, handler)
        wrapped = await _served(port, n)
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()
    spent[mint] -= spent[write]  # amint includes the write
    scale = total / wrapped  # the wrappers' own cost, spread in proportion
    steps = {label: ns / n / 1000 * scale for label, ns in spent.items()}
    handler_us = steps.pop(handler)
    steps["core: routes, JSON errors, metrics, CORS"] = handler_us - sum(steps.values())
    steps["HTTP: aiohttp parse/write, the edge, the adapter, event loop"] = total * 1e6 - handler_us
    return total * 1e6, steps


def _quiet_log() -> None:
    """The log line as ``serve`` writes it (its handler and formatter), into /dev/null."""
    handler = LoopFlushedHandler(open(os.devnull, "w"))  # noqa: SIM115 - open until exit
    handler.setFormatter(CachedTimeFormatter(LOG_FORMAT))
    log = logging.getLogger("livekit.plugins.metadata")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args(argv)
    _quiet_log()
    total, steps = asyncio.run(_measure(args.requests))
    print("| step | µs/request | share |\n|---|---|---|")
    for label, us in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {us:.1f} | {100 * us / total:.0f} % |")
    print(f"| **server CPU per request** | **{total:.0f}** | 100 % |")


if __name__ == "__main__":
    main()
