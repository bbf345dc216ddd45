"""A write-load process for the failover tests (run as ``python -m tests.failover_writer``).

It prints ``{"ready": true}``, then serves one job per stdin line, a JSON object
with ``url``, ``sid``, ``tag``, ``durability``, ``seconds``, ``count``: it replies
``{"connected": true}``, waits for a ``go`` line, merges one new key per write
(``<tag><i>``) into the session until ``count`` writes were attempted or
``seconds`` passed, and prints one JSON line: the indices Redis acknowledged, the
number of failed writes, and the outage (first failure to the next success, in s).
It exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import orjson

from livekit.plugins.metadata.errors import StoreUnavailable
from livekit.plugins.metadata.sessions.redis import RedisStore


def _say(message: dict[str, Any]) -> None:
    print(orjson.dumps(message).decode(), flush=True)


async def _readline() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


async def run_job(job: dict[str, Any]) -> None:
    store = RedisStore.from_url(job["url"], durability=job["durability"], timeout=1.0)
    sid, tag = job["sid"], job["tag"]
    acked: list[int] = []
    failures = 0
    first_fail: float | None = None
    outage: float | None = None
    await store.ping()
    _say({"connected": True})
    await _readline()
    start = time.monotonic()
    i = 0
    while i < job["count"] and time.monotonic() - start < job["seconds"]:
        try:
            await store.merge(sid, {f"{tag}{i}": b"1"}, ttl=600.0, max_bytes=100_000_000)
        except StoreUnavailable:
            failures += 1
            if first_fail is None:
                first_fail = time.monotonic()
            await asyncio.sleep(0.02)
        else:
            acked.append(i)
            if first_fail is not None and outage is None:
                outage = time.monotonic() - first_fail
        i += 1
    await store.aclose()
    _say({"acked": acked, "failures": failures, "outage": outage, "attempts": i})


async def main() -> None:
    _say({"ready": True})
    while line := await _readline():
        await run_job(orjson.loads(line))


if __name__ == "__main__":
    logging.getLogger("livekit.plugins.metadata").setLevel(logging.ERROR)  # failures are counted
    asyncio.run(main())
