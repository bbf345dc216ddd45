"""Two workers sharing one session through Redis (RedisStore + SessionManager).

A "token server" process writes the caller's metadata into the session named
after the room; a separate "agent worker" process reads it, adds its own keys
and validates a tool token the token server signed. Both use the same
tool-token secret from configuration, as every worker sharing Redis must.

Run (needs a Redis server; the `redis` extra)::

    REDIS_URL=redis://127.0.0.1:6379/0 uv run python examples/redis_sessions.py

Environment: ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and
``LIVEKIT_METADATA_SECRET`` (a demo secret is used when unset).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
from urllib.parse import urlsplit

from livekit.plugins.metadata import RedisStore, SessionManager, StoreUnavailable

__all__ = ["main"]

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = os.environ.get("LIVEKIT_METADATA_SECRET", "demo-only-secret-change-me-" + "0" * 16)
ROOM = "example-room-1"


async def token_server(queue: multiprocessing.Queue[str]) -> None:
    """Writes the session when a client asks for a token, and signs a tool token."""
    async with SessionManager(store=RedisStore.from_url(URL), secret_key=SECRET) as sm:
        await sm.delete_session_metadata(ROOM)
        await sm.set_session_metadata(ROOM, {"caller": "Ada", "tier": "gold", "lang": "en"})
        queue.put(sm.generate_token("transfer_call", ROOM))


async def agent_worker(queue: multiprocessing.Queue[str]) -> None:
    """Reads what the token server wrote, adds to it, checks the tool token."""
    token = queue.get(timeout=60)
    async with SessionManager(store=RedisStore.from_url(URL), secret_key=SECRET) as sm:
        print("worker sees:", await sm.get_session_metadata(ROOM))
        await sm.set_session_metadata(ROOM, "agent", "support")
        print("after merge:", await sm.get_session_metadata(ROOM))
        print("tool token valid:", sm.validate_token(ROOM, "transfer_call", token))
        await sm.delete_session_metadata(ROOM)


def _run(role: str, queue: multiprocessing.Queue[str]) -> None:
    asyncio.run(token_server(queue) if role == "server" else agent_worker(queue))


async def _check_redis() -> None:
    store = RedisStore.from_url(URL, timeout=2.0)
    try:
        await store.ping()
    finally:
        await store.aclose()


def main() -> int:
    logging.getLogger("livekit.plugins.metadata").setLevel(logging.ERROR)  # the line below says it
    try:
        asyncio.run(_check_redis())
    except StoreUnavailable:
        print(
            f"error: nothing answers at REDIS_URL ({urlsplit(URL).netloc.rsplit('@', 1)[-1]}): "
            "start `redis-server`, "
            "or set REDIS_URL to your Redis",
            file=sys.stderr,
        )
        return 1
    logging.getLogger("livekit.plugins.metadata").setLevel(logging.NOTSET)
    queue: multiprocessing.Queue[str] = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_run, args=(role, queue)) for role in ("server", "worker")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return max(p.exitcode or 0 for p in procs)


if __name__ == "__main__":
    sys.exit(main())
