"""Load once per worker what every job would otherwise load again.

LiveKit runs each job in a process of its own (from a forkserver on Linux), so what
the entrypoint imports or builds, every job pays for again: the plugin's modules,
``redis.asyncio`` (about 0.2 s of CPU and 20 MB per process), a Redis client. Two
documented ``AgentServer`` hooks move that out of the job: :func:`preload_modules`
(imported once, in the forkserver, shared copy-on-write) and, in the setup function,
:func:`prepare_process` (this process's SessionManager, built before it gets a job);
the entrypoint takes it with :func:`job_sessions`, which closes it at shutdown::

    server = AgentServer(setup_fnc=prewarm, preload_modules=preload_modules(redis=True))
    # prewarm(proc): prepare_process(proc, redis_url=os.environ.get("REDIS_URL"))
    # entrypoint:    adapter = MetadataAdapter(job_sessions(ctx))
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
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

    The plugin's agent side (adapter, selection, router, session manager); the
    phone-number and YAML libraries if this process has loaded them (call it after
    building the router: a rule set without phone operators, or not read from YAML,
    leaves them out); with ``redis=True``, the Redis client library.

    LiveKit imports these in its forkserver (Linux), before any job process
    starts; under ``spawn`` (macOS, Windows) the option does nothing.
    """
    names = list(_AGENT_SIDE)
    names += [name for name in _IF_LOADED if name in sys.modules]
    if redis:
        names += _REDIS
    return names


class _Prepared:
    """This process's SessionManager, waiting for its job, and how to build another."""

    def __init__(self, redis_url: str | None, options: Mapping[str, Any]) -> None:
        self.redis_url = redis_url
        self.options = dict(options)
        self.ready: SessionManager | None = self.build()

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

    Builds a :class:`~..sessions.manager.SessionManager` over a
    :class:`~..sessions.redis.RedisStore` at ``redis_url`` (imported here, if the
    forkserver has not already), or over this process's memory when ``redis_url``
    is empty, and keeps it in ``proc.userdata[USERDATA_KEY]`` for
    :func:`job_sessions`. Runs outside any event loop; the Redis client connects on
    the job's first command, on the job's loop.

    Args:
        proc: The ``JobProcess`` LiveKit passes to the setup function.
        redis_url: A URL for :meth:`RedisStore.from_url`, or ``None``/``""`` for memory.
        **manager_options: Passed to ``SessionManager`` (``secret_key``,
            ``session_ttl``, ...).

    Raises:
        ConfigError: ``redis_url`` is set but the ``redis`` extra is not installed.
        ValueError: ``redis_url`` or an option is invalid (never showing the password).
    """
    proc.userdata[USERDATA_KEY] = _Prepared(redis_url or None, manager_options)


def job_sessions(ctx: JobContext) -> SessionManager:
    """This job's SessionManager, prepared by :func:`prepare_process`; closed at shutdown.

    The first job of the process takes the prepared one; any later job (a process
    never runs two in livekit-agents 1.8, but nothing here relies on it) gets a new
    one with the same settings, so no client opened on one job's event loop is used
    on another's.

    Raises:
        ConfigError: The server's setup function did not call :func:`prepare_process`.
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
