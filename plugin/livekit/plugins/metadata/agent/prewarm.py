"""Load once per worker what every job would otherwise load again (README "Load once per
worker, not per job"): :func:`preload_modules` for the forkserver, :func:`prepare_process`
in the setup function, :func:`job_sessions` in the entrypoint."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from livekit.agents import JobContext, JobProcess

    from ..sessions.manager import SessionManager

__all__ = ["USERDATA_KEY", "job_sessions", "preload_modules", "prepare_process"]

USERDATA_KEY = "livekit.plugins.metadata"  # this plugin's entry in JobProcess.userdata

_AGENT_SIDE = (
    "livekit.plugins.metadata.agent.adapter",
    "livekit.plugins.metadata.agent.requests",
    "livekit.plugins.metadata.agent.selection",
    "livekit.plugins.metadata.routing.router",
    "livekit.plugins.metadata.sessions.manager",
    "livekit.plugins.metadata.sessions.memory",
)
# Loaded by a rule set only when it needs them: preloaded when this process did.
_IF_LOADED = ("phonenumbers", "livekit.plugins.metadata._yaml")
_REDIS = (
    "redis.asyncio",
    "redis.asyncio.cluster",
    "redis.backoff",
    "redis.retry",
    "livekit.plugins.metadata.sessions.redis",
)


def preload_modules(*, redis: bool = False) -> list[str]:
    """Modules for ``AgentServer(preload_modules=...)``: the plugin's agent side, the
    phone-number and YAML libraries if this process loaded them (call it after building the
    router), the Redis client with ``redis=True``. Under ``spawn`` the option does nothing."""
    names = list(_AGENT_SIDE)
    names += [name for name in _IF_LOADED if name in sys.modules]
    if redis:
        names += _REDIS
    return names


@dataclass
class _Prepared:
    redis_url: str | None
    options: Mapping[str, Any]
    ready: SessionManager | None = None

    def __post_init__(self) -> None:
        self.ready = self.build()

    def build(self) -> SessionManager:
        from ..sessions.manager import SessionManager

        if self.redis_url:
            from ..sessions.redis import RedisStore

            return SessionManager(RedisStore.from_url(self.redis_url), **self.options)
        return SessionManager(**self.options)


def prepare_process(
    proc: JobProcess, *, redis_url: str | None = None, **manager_options: Any
) -> None:
    """The body of an ``AgentServer`` setup function: a SessionManager (``manager_options``)
    over a RedisStore at ``redis_url`` (else memory), kept in ``proc.userdata[USERDATA_KEY]``.

    Raises ConfigError (``redis_url`` without the ``redis`` extra) or ValueError (an invalid
    ``redis_url`` or option; never showing the password).
    """
    proc.userdata[USERDATA_KEY] = _Prepared(redis_url or None, manager_options)


def job_sessions(ctx: JobContext) -> SessionManager:
    """This job's SessionManager, closed at shutdown; a later job of the process gets a new
    one (a client never spans event loops). Raises ConfigError without :func:`prepare_process`."""
    prepared = ctx.proc.userdata.get(USERDATA_KEY)
    if not isinstance(prepared, _Prepared):
        raise ConfigError(
            "no sessions prepared for this process: call prepare_process(proc, ...) in the "
            "AgentServer's setup_fnc"
        )
    sessions, prepared.ready = prepared.ready or prepared.build(), None
    ctx.add_shutdown_callback(sessions.aclose)
    return sessions
