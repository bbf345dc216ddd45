"""Integration: the setup hook's Redis client on a real redis-server (issue 33).

``prepare_process`` runs in LiveKit's setup function, outside any event loop; the
job then runs on a loop of its own. The prepared client must work on that loop,
be closed by the job's shutdown, and never be handed to a second job's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from livekit.agents import JobExecutorType, JobProcess

from livekit.plugins.metadata.agent.prewarm import USERDATA_KEY, job_sessions, prepare_process
from livekit.plugins.metadata.sessions.redis import RedisStore

pytestmark = pytest.mark.integration


class _Ctx:
    def __init__(self, proc: JobProcess) -> None:
        self.proc = proc
        self.shutdown: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def add_shutdown_callback(self, callback: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.shutdown.append(callback)


def test_prepared_client_serves_one_job_loop_and_a_second_job_gets_its_own(
    redis_url: str,
) -> None:
    proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
    prepare_process(proc, redis_url=redis_url, secret_key="k" * 32)  # no event loop here
    prepared = proc.userdata[USERDATA_KEY].ready
    assert isinstance(prepared.store, RedisStore)

    async def job(name: str) -> tuple[Any, dict[str, Any]]:
        ctx = _Ctx(proc)
        sessions = job_sessions(ctx)  # type: ignore[arg-type]
        await sessions.set_session_metadata("call-1", {name: True})
        seen = await sessions.get_session_metadata("call-1")
        for callback in ctx.shutdown:
            await callback()
        return sessions, seen

    # Two jobs, two event loops (as two job processes or thread executors would have).
    first, seen_first = asyncio.run(job("first"))
    second, seen_second = asyncio.run(job("second"))
    assert first is prepared
    assert second is not first
    assert second.store is not first.store
    assert seen_first == {"first": True}
    assert seen_second == {"first": True, "second": True}  # the same Redis, another client
