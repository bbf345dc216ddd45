"""Load once per worker what every job would otherwise load again.

LiveKit runs each job in its own process, so what the entrypoint imports or builds (the
plugin's modules, ``redis.asyncio``: about 0.2 s of CPU and 20 MB, a Redis client) every
job pays again. :func:`preload_modules` (imported once in the forkserver) and
:func:`prepare_process` (this process's SessionManager, built in the setup function and
taken by :func:`job_sessions`, which closes it at shutdown) move that out of the job::

    server = AgentServer(setup_fnc=prewarm, preload_modules=preload_modules(redis=True))
    # prewarm(proc): prepare_process(proc, redis_url=os.environ.get("REDIS_URL"))
    # entrypoint:    adapter = MetadataAdapter(job_sessions(ctx))
"""

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

USERDATA_KEY = "livekit.plugins.metadata"
"""The key of this plugin's entry in ``JobProcess.userdata``."""

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
    """Modules for ``AgentServer(preload_modules=...)``: imported once, shared by every job.

    The plugin's agent side; the phone-number and YAML libraries if this process has
    loaded them (call it after building the router); with ``redis=True`` the Redis
    client. Under ``spawn`` (macOS, Windows) the option does nothing.
    """
    names = list(_AGENT_SIDE)
    names += [name for name in _IF_LOADED if name in sys.modules]
    if redis:
        names += _REDIS
    return names


@dataclass
class _Prepared:
    """This process's SessionManager, waiting for its job, and how to build another."""

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
    """The body of an ``AgentServer`` setup function: this process's sessions, ready early.

    A :class:`~..sessions.manager.SessionManager` (``manager_options``) over a
    :class:`~..sessions.redis.RedisStore` at ``redis_url`` (else over memory), kept in
    ``proc.userdata[USERDATA_KEY]``; the Redis client connects on the job's loop.

    Raises:
        ConfigError: ``redis_url`` is set but the ``redis`` extra is not installed.
        ValueError: ``redis_url`` or an option is invalid (never showing the password).
    """
    proc.userdata[USERDATA_KEY] = _Prepared(redis_url or None, manager_options)


def job_sessions(ctx: JobContext) -> SessionManager:
    """This job's SessionManager, prepared by :func:`prepare_process`; closed at shutdown.

    A later job of the same process gets a new one with the same settings (a client is
    never shared across event loops). Raises ConfigError without :func:`prepare_process`.
    """
    prepared = ctx.proc.userdata.get(USERDATA_KEY)
    if not isinstance(prepared, _Prepared):
        raise ConfigError(
            "no sessions prepared for this process: call prepare_process(proc, ...) in the "
            "AgentServer's setup_fnc"
        )
    sessions, prepared.ready = prepared.ready or prepared.build(), None
    ctx.add_shutdown_callback(sessions.aclose)
    return sessions
