"""Where a token request's server CPU goes: each step of the core, timed in process.

Builds the endpoint exactly as ``bench/bench_server.py`` configures ``lk-metadata
serve`` (memory store, every check on, a session per token), answers the bench's
request in a loop without HTTP, and times each step by wrapping it. The HTTP
layer (aiohttp's parser and writer, the edge) is the rest of the served CPU per
request, which ``bench_server`` measures: pass it as ``--served-us`` to get the
table ``bench/README.md`` shows.

Run: ``uv run python -m bench.where_time_goes [--served-us 320]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import io
import logging
import time
from typing import Any

import orjson

from bench.bench_server import _BEARER, _REQUEST, _config_mapping
from livekit.plugins.metadata.server import core, pipeline
from livekit.plugins.metadata.server.config import ServerConfig
from livekit.plugins.metadata.server.core import TokenEndpoint
from livekit.plugins.metadata.server.messages import EndpointRequest
from livekit.plugins.metadata.server.run import CachedTimeFormatter, LoopFlushedHandler
from livekit.plugins.metadata.sessions.manager import SessionSpace
from livekit.plugins.metadata.tokens.issuer import TokenIssuer

__all__ = ["main"]

STEPS = [
    ("framing (size, content type)", pipeline, "_check_framing"),
    ("authorize (bearer key, rate buckets)", pipeline, "_authorize"),
    ("parse (JSON, request model, metadata codec, attributes)", pipeline, "_parse"),
    ("policy (schema, keys, room and identity)", pipeline, "_apply_policy"),
    ("routing (rules index, dispatch)", pipeline, "_choose_dispatch"),
    ("admission (rate limits, session cap)", pipeline, "_admit"),
    ("answer (JSON body)", pipeline, "_answer"),
    ("log line (record, format, write)", core, "_log_request"),
]


def _wrap(owner: Any, name: str, spent: dict[str, int], label: str) -> None:
    fn = getattr(owner, name)
    clock = time.perf_counter_ns
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


async def _loop(endpoint: TokenEndpoint, n: int) -> float:
    body = orjson.dumps(_REQUEST)
    headers = {"content-type": "application/json", "authorization": f"Bearer {_BEARER}"}
    t0 = time.process_time()
    for _ in range(n):
        answer = await endpoint.handle(
            EndpointRequest("POST", "/token", headers, body=body, client="127.0.0.1")
        )
        if answer.status != 201:
            raise RuntimeError(answer.body.decode())
    return (time.process_time() - t0) / n


def measure(n: int) -> tuple[float, dict[str, float]]:
    """CPU µs per request of ``TokenEndpoint.handle``, and µs per step (wrapped run)."""
    handler = LoopFlushedHandler(io.StringIO())
    handler.setFormatter(CachedTimeFormatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger("livekit.plugins.metadata")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    endpoint = TokenEndpoint.from_config(ServerConfig.from_mapping(_config_mapping(0)))
    gc.collect()
    gc.freeze()
    asyncio.run(_loop(endpoint, n // 5))
    total = asyncio.run(_loop(endpoint, n))
    spent: dict[str, int] = {label: 0 for label, _, _ in STEPS}
    for label, owner, name in STEPS:
        _wrap(owner, name, spent, label)
    mint, write = "mint (claims, JWT signing)", "session write (memory store)"
    spent[mint] = spent[write] = 0
    _wrap(TokenIssuer, "amint", spent, mint)
    _wrap(SessionSpace, "update", spent, write)
    t0 = time.perf_counter_ns()
    asyncio.run(_loop(endpoint, n))
    wall = time.perf_counter_ns() - t0
    spent[mint] -= spent[write]  # amint includes the write
    steps = {label: ns / n / 1000 for label, ns in spent.items()}
    scale = total * 1e6 / (wall / n / 1000)  # wrappers' own cost spread in proportion
    steps = {label: us * scale for label, us in steps.items()}
    steps["core: routes, JSON errors, metrics, CORS"] = total * 1e6 - sum(steps.values())
    return total * 1e6, steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--served-us", type=float, default=0.0, help="serve's CPU/request")
    args = parser.parse_args(argv)
    total, steps = measure(args.requests)
    served = args.served_us or total
    rows: list[tuple[str, float]] = sorted(steps.items(), key=lambda kv: -kv[1])
    if args.served_us:
        rows.append(("HTTP: aiohttp parse/write, edge, event loop", served - total))
    print("| step | µs/request | share |\n|---|---|---|")
    for label, us in rows:
        print(f"| {label} | {us:.1f} | {100 * us / served:.0f} % |")
    print(f"| **total** | **{served:.0f}** | 100 % |")


if __name__ == "__main__":
    main()
