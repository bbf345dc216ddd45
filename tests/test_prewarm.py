"""Pay once per worker, and only for what a rule set uses (issue 33).

* a fresh interpreter loads ``phonenumbers``/``yaml`` only when a rule set needs them:
  ``test_prewarm_imports.py`` (integration tier: one subprocess);
* ``preload_modules`` names importable modules: the plugin's agent side, the
  optional libraries only when this process loaded them, Redis when asked;
* ``prepare_process`` / ``job_sessions``: the setup hook's SessionManager goes to the
  first job and is closed at its shutdown; a later job gets its own; a job without
  the setup hook gets a ConfigError;
* both examples wire the hook (``setup_fnc``) and the preload list.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import JobExecutorType, JobProcess

from livekit.plugins.metadata.agent.prewarm import (
    USERDATA_KEY,
    job_sessions,
    preload_modules,
    prepare_process,
)
from livekit.plugins.metadata.errors import ConfigError
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.memory import MemoryStore

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent


def test_preload_modules_are_importable_and_redis_only_on_request() -> None:
    plain = preload_modules()
    with_redis = preload_modules(redis=True)
    assert "livekit.plugins.metadata.agent.adapter" in plain
    assert not any(name.startswith("redis") for name in plain)
    assert "redis.asyncio" in with_redis
    assert "livekit.plugins.metadata.sessions.redis" in with_redis
    for name in with_redis:
        assert importlib.util.find_spec(name) is not None, name
    # optional libraries are listed only when this process has loaded them
    for name in ("phonenumbers", "livekit.plugins.metadata._yaml"):
        assert (name in plain) == (name in sys.modules)


class _Ctx:
    """A stand-in for the part of JobContext ``job_sessions`` uses."""

    def __init__(self, proc: JobProcess) -> None:
        self.proc = proc
        self.shutdown: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def add_shutdown_callback(self, callback: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.shutdown.append(callback)


def _proc() -> JobProcess:
    return JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)


async def test_first_job_takes_the_prepared_sessions_a_later_job_gets_its_own() -> None:
    proc = _proc()
    prepare_process(proc, session_ttl=60)
    prepared = proc.userdata[USERDATA_KEY].ready
    assert isinstance(prepared, SessionManager)
    assert isinstance(prepared.store, MemoryStore)

    first = _Ctx(proc)
    sessions = job_sessions(first)  # type: ignore[arg-type]
    assert sessions is prepared
    assert first.shutdown == [sessions.aclose]
    await sessions.set_session_metadata("s1", {"a": 1})

    second = _Ctx(proc)
    other = job_sessions(second)  # type: ignore[arg-type]
    assert other is not sessions
    assert other.store is not sessions.store
    assert await other.get_session_metadata("s1") == {}
    assert second.shutdown == [other.aclose]


def test_job_without_the_setup_hook_is_told_what_to_call() -> None:
    with pytest.raises(ConfigError, match="prepare_process"):
        job_sessions(_Ctx(_proc()))  # type: ignore[arg-type]


@pytest.mark.parametrize("example", ["agent.py", "telephony/agent.py"])
def test_examples_prepare_each_process_and_preload_the_agent_side(
    example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    namespace = runpy.run_path(str(REPO / "examples" / example), run_name="prewarm_probe")
    server = namespace["server"]
    assert server.setup_fnc is namespace["prewarm"]
    proc = _proc()
    server.setup_fnc(proc)
    ctx = _Ctx(proc)
    assert isinstance(job_sessions(ctx).store, MemoryStore)  # type: ignore[arg-type]
    assert len(ctx.shutdown) == 1
