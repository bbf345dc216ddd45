"""Child of ``bench_views``: times ``amint`` and ``attach`` of whichever package is on the path.

Run as ``python bench/_views_child.py REPS`` with ``PYTHONPATH`` pointing at one
checkout's ``plugin/``; prints one JSON object of per-operation medians (seconds)
over REPS repetitions. Uses only the API both the old and the new code share.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import sys
import time

import orjson
from livekit import rtc
from livekit.agents.testing import fake_job_context

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.tokens.issuer import TokenIssuer

SECRET = "bench-views-secret-0123456789abcdefghijkl"
PUBLIC = {"department": "support", "language": "es", "channel": "web", "caller": "Ada"}


class _Participant:
    def __init__(self, identity: str, metadata: str, attributes: dict[str, str]) -> None:
        self.identity = identity
        self.sid = "PA_" + identity
        self.metadata = metadata
        self.attributes = attributes
        self.kind = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
        self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE


class _Room(rtc.EventEmitter[str]):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.metadata = ""
        self.remote_participants: dict[str, _Participant] = {}

    def isconnected(self) -> bool:
        return True


async def _callers(issuer: TokenIssuer, room: str, n: int) -> list[_Participant]:
    import jwt

    out = []
    for i in range(n):
        minted = await issuer.amint(
            f"caller-{i}", room, metadata=PUBLIC, private_metadata={"crm_id": f"C-{i}"}
        )
        claims = jwt.decode(minted.token, SECRET, algorithms=["HS256"])
        out.append(_Participant(claims["sub"], claims["metadata"], dict(claims["attributes"])))
    return out


async def _attach_once(sessions: SessionManager, people: list[_Participant], room: _Room) -> float:
    job = orjson.dumps({"department": "support"}).decode()
    with fake_job_context(room=room, job_metadata=job) as ctx:  # type: ignore[arg-type]
        adapter = MetadataAdapter(sessions, track="all")
        t0 = time.perf_counter()
        handle = await adapter.attach(ctx, people[0])  # type: ignore[arg-type]
        await handle.wait_idle()
        dt = time.perf_counter() - t0
        await handle.aclose()
        with contextlib.suppress(Exception):
            ctx._tempdir.cleanup()
    return dt


async def main(reps: int) -> dict[str, float]:
    sessions = SessionManager(secret_key=SECRET)
    issuer = TokenIssuer("devkey", SECRET, sessions=sessions)
    results: dict[str, list[float]] = {"amint": [], "attach 1": [], "attach 10": []}
    rooms = {}
    for n in (1, 10):
        room = _Room(f"room-{n}")
        people = await _callers(issuer, room.name, n)
        for p in people:
            room.remote_participants[p.identity] = p
        rooms[n] = (room, people)
    gc.collect()
    gc.freeze()
    for _ in range(reps):
        loops = 2000
        t0 = time.perf_counter()
        for i in range(loops):
            await issuer.amint(f"u{i}", "r", metadata=PUBLIC, private_metadata={"crm_id": "C"})
        results["amint"].append((time.perf_counter() - t0) / loops)
        for n in (1, 10):
            room, people = rooms[n]
            times = [await _attach_once(sessions, people, room) for _ in range(40)]
            results[f"attach {n}"].append(statistics.median(times))
    return {k: statistics.median(v) for k, v in results.items()}


if __name__ == "__main__":
    print(orjson.dumps(asyncio.run(main(int(sys.argv[1])))).decode())
