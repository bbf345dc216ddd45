"""Tool reads and writes of the caller's session (issue 26) vs bare ``SessionManager``.

Per store (MemoryStore; Redis when ``redis-server`` is on PATH), two tables, each
interleaved in one run:

* read: ``CallerSessionTools.read_key`` (allow-list check, the caller's view, JSON
  answer) vs ``SessionManager.get_session_metadata`` of a session of the same size;
* write: ``CallerSessionTools.write_key`` (allow-list, checks like client metadata,
  persisted in the store, then applied to the view) vs
  ``SessionManager.set_session_metadata`` (one merge).

The view is built by a real ``MetadataAdapter.attach`` over a stand-in room (no
LiveKit server); ``on_change`` is not installed, so the write is the tool path alone.

    uv run python -m bench.bench_tools [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import orjson
from livekit import rtc
from livekit.agents.testing import fake_job_context

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.agent.handle import SessionHandle
from livekit.plugins.metadata.agent.tools import CallerSession, CallerSessionTools
from livekit.plugins.metadata.codec import SESSION_KEY, SESSION_OWNER_KEY
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.redis import RedisStore

from ._harness import Case, Table, format_table, measure

__all__ = ["run"]

SECRET = "bench-tools-secret-0123456789abcdefghijkl"
PUBLIC = {"department": "support", "language": "es", "channel": "web", "caller": "Ada"}


class _Participant:
    def __init__(self, identity: str, attributes: dict[str, str]) -> None:
        self.identity = identity
        self.sid = "PA_" + identity
        self.metadata = orjson.dumps(PUBLIC).decode()
        self.attributes = attributes
        self.kind = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
        self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE


class _Room(rtc.EventEmitter[str]):
    def __init__(self) -> None:
        super().__init__()
        self.name = "bench-room"
        self.metadata = ""
        self.remote_participants: dict[str, _Participant] = {}

    def isconnected(self) -> bool:
        return True


@contextlib.contextmanager
def _handle(
    loop: asyncio.AbstractEventLoop, sessions: SessionManager
) -> Iterator[tuple[SessionHandle, CallerSession]]:
    room = _Room()

    async def setup(ctx: Any) -> SessionHandle:
        sid = sessions.create_session()
        owner = {"identity": "ada", "room": room.name, "protected": ["customer"]}
        await sessions.token_sessions.update(
            sid, {**PUBLIC, "customer": "C-1", SESSION_OWNER_KEY: owner}
        )
        ada = _Participant("ada", {SESSION_KEY: sid})
        room.remote_participants["ada"] = ada
        return await MetadataAdapter(sessions).attach(ctx, ada)  # type: ignore[arg-type]

    with fake_job_context(room=room) as ctx:  # type: ignore[arg-type]
        handle = loop.run_until_complete(setup(ctx))
        try:
            yield handle, CallerSession(handle, "ada")
        finally:
            loop.run_until_complete(handle.aclose(delete=True))
            with contextlib.suppress(Exception):
                ctx._tempdir.cleanup()


def _case(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], Coroutine[Any, Any, object]]
) -> Callable[[int], object]:
    return lambda loops: loop.run_until_complete(make(loops))


def _tables(label: str, sessions: SessionManager, repeats: int, target: float) -> list[Table]:
    loop = asyncio.new_event_loop()
    tools = CallerSessionTools(read=["customer"], write=["note"])
    try:
        with _handle(loop, sessions) as (_, caller):
            bare = loop.run_until_complete(_bare_session(sessions))

            async def tool_read(n: int) -> None:
                for _ in range(n):
                    await tools.read_key(caller, "customer")

            async def bare_get(n: int) -> None:
                for _ in range(n):
                    await sessions.get_session_metadata(bare)

            async def tool_write(n: int) -> None:
                for i in range(n):
                    await tools.write_key(caller, "note", f"n{i & 255}")

            async def bare_merge(n: int) -> None:
                for i in range(n):
                    await sessions.set_session_metadata(bare, {"note": f"n{i & 255}"})

            read = measure(
                f"tool read vs SessionManager get ({label})",
                [
                    Case("SessionManager.get_session_metadata", _case(loop, bare_get), True),
                    Case("CallerSessionTools.read_key", _case(loop, tool_read)),
                ],
                repeats=repeats,
                target=target,
            )
            write = measure(
                f"tool write vs SessionManager merge ({label})",
                [
                    Case("SessionManager.set_session_metadata", _case(loop, bare_merge), True),
                    Case("CallerSessionTools.write_key", _case(loop, tool_write)),
                ],
                repeats=repeats,
                target=target,
            )
            return [read, write]
    finally:
        loop.run_until_complete(sessions.aclose())
        loop.close()


async def _bare_session(sessions: SessionManager) -> str:
    sid = sessions.create_session()
    await sessions.set_session_metadata(sid, {**PUBLIC, "customer": "C-1"})
    return sid


def run(quick: bool = False) -> list[Table]:
    repeats, target = (5, 0.05) if quick else (9, 0.2)
    tables = _tables("MemoryStore", SessionManager(secret_key=SECRET), repeats, target)
    if shutil.which("redis-server") is None:
        return tables
    from .bench_redis import _Server

    server = _Server()
    try:
        sessions = SessionManager(RedisStore.from_url(server.url), secret_key=SECRET)
        tables += _tables("Redis, loopback", sessions, repeats, target)
    finally:
        server.stop()
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for table in run(quick=args.quick):
        print(format_table(table))
        print()


if __name__ == "__main__":
    main()
