"""Pay once per worker, and only for what a rule set uses (issue 33).

* a fresh interpreter that imports the router and routes a dict rule set loads
  neither ``phonenumbers`` nor ``yaml``; a YAML rule set loads the one, a phone
  operator the other (one subprocess: ``sys.modules`` must start clean);
* ``preload_modules`` names importable modules: the plugin's agent side, the
  optional libraries only when this process loaded them, Redis when asked;
* ``prepare_process`` / ``job_sessions``: the setup hook's SessionManager goes to the
  first job and is closed at its shutdown; a later job gets its own; a job without
  the setup hook gets a ConfigError;
* both examples wire the hook (``setup_fnc``) and the preload list.
"""

from __future__ import annotations

import importlib.util
import json
import runpy
import subprocess
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

_PROBE = """
import json, sys
from livekit.plugins.metadata.routing.router import MetadataRouter

seen = {}
def loaded(step):
    seen[step] = {name: name in sys.modules for name in ("phonenumbers", "yaml")}

loaded("import")
router = MetadataRouter.from_dict(
    {"rules": [{"name": "s", "when": {"department": "support"}, "agent": "support"}],
     "default": "general"})
assert router.route({"department": "support"}).agent == "support"
assert router.route({}).agent == "general"
loaded("dict rules routed")
from livekit.plugins.metadata.loader import load_text
MetadataRouter.from_dict(load_text('{"rules": [], "default": "general"}', "json"))
loaded("json rules")
MetadataRouter.from_dict(load_text("rules: []\\ndefault: general\\n", "yaml"))
loaded("yaml rules")
phone = MetadataRouter.from_dict(
    {"rules": [{"name": "line", "when_attributes": {"sip.trunkPhoneNumber": {"phone": "+34 910 000 000"}},
                "agent": "sales"}], "default": "general"})
assert phone.route({}, attributes={"sip.trunkPhoneNumber": "0034910000000"}).agent == "sales"
loaded("phone rules")
print(json.dumps(seen))
"""


def test_router_loads_phonenumbers_and_yaml_only_when_a_rule_set_needs_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    none = {"phonenumbers": False, "yaml": False}
    assert seen["import"] == none
    assert seen["dict rules routed"] == none
    assert seen["json rules"] == none
    assert seen["yaml rules"] == {"phonenumbers": False, "yaml": True}
    assert seen["phone rules"] == {"phonenumbers": True, "yaml": True}


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
