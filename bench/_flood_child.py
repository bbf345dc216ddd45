"""Child of ``bench_flood``: a flood of metadata updates into ``MetadataAdapter`` (whichever
package is on the path), ``on_change`` doing a re-route that takes ``HANDOFF`` seconds.

Prints JSON: for each flood size, the number of on_change calls (re-routes) and the
seconds from the last update to the final state's re-route having run.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time

import orjson
from livekit import rtc
from livekit.agents.testing import fake_job_context

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.sessions.manager import SessionManager

HANDOFF = 0.03  # what update_agent + set_attributes cost on a real server (~30 ms)


class _Participant:
    def __init__(self) -> None:
        self.identity = "caller"
        self.sid = "PA_caller"
        self.metadata = '{"department": "support"}'
        self.attributes: dict[str, str] = {}
        self.kind = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD


class _Room(rtc.EventEmitter[str]):
    def __init__(self) -> None:
        super().__init__()
        self.name = "flood"
        self.metadata = ""
        self.remote_participants: dict[str, _Participant] = {}

    def isconnected(self) -> bool:
        return True


async def flood(n: int, rate: float) -> dict[str, float]:
    room = _Room()
    caller = _Participant()
    routes: list[str] = []
    final = asyncio.Event()
    with fake_job_context(room=room) as ctx:  # type: ignore[arg-type]
        handle_box: list[object] = []

        async def on_change(identity: str) -> None:
            view = handle_box[0].participant_metadata(identity)  # type: ignore[attr-defined]
            if inspect.isawaitable(view):  # the baseline's method was async
                view = await view
            await asyncio.sleep(HANDOFF)
            routes.append(view.get("department"))
            if view.get("n") == n - 1:
                final.set()

        handle = await MetadataAdapter(SessionManager()).attach(ctx, caller, on_change=on_change)  # type: ignore[arg-type]
        handle_box.append(handle)
        gap = 1.0 / rate
        start = time.perf_counter()
        for i in range(n):
            doc = {"department": "sales" if i % 2 else "support", "n": i}
            new = orjson.dumps(doc).decode()
            old, caller.metadata = caller.metadata, new
            room.emit("participant_metadata_changed", caller, old, new)
            delay = start + (i + 1) * gap - time.perf_counter()
            await asyncio.sleep(max(delay, 0))
        last = time.perf_counter()
        await asyncio.wait_for(final.wait(), 600)
        settle = time.perf_counter() - last
        await handle.aclose()
        ctx._tempdir.cleanup()
    return {"reroutes": float(len(routes)), "settle": settle}


async def main() -> dict[str, dict[str, float]]:
    sizes = [int(a) for a in sys.argv[1:]] or [200, 1000]
    return {str(n): await flood(n, rate=80.0) for n in sizes}


if __name__ == "__main__":
    print(orjson.dumps(asyncio.run(main())).decode())
