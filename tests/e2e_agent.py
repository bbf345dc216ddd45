"""A small agent worker for the e2e tier and ``bench/bench_e2e.py`` (a real process).

    python tests/e2e_agent.py --agent-name NAME [--mode adapter|bare]
                              [--rules FILE] [--store memory|redis://...]
    python tests/e2e_agent.py --example examples/agent.py


Connects to ``LIVEKIT_URL`` with ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``, registers
``NAME`` (explicit dispatch only) and runs each job in a thread (``JobExecutorType.THREAD``).

* ``--mode adapter`` (default): ``MetadataAdapter(SessionManager(store)).attach(ctx)``
  loads the job and caller metadata into the session; the rules (if given) route it;
  the agent then publishes, in ONE ``set_attributes`` call, ``route`` (the routed agent,
  or ``adapter`` without rules), ``session`` (the call session as compact JSON) and
  ``worker`` (this process id). Afterwards it republishes ``session`` whenever the
  call session changes and each tracked caller's own view
  (``handle.participant_metadata(identity)``, private keys included) as attribute
  ``view.<identity>`` and its attributes as ``attrs.<identity>`` whenever they change (polled every 25 ms), so tests can watch
  merges from the room. ``route`` is decided on ``handle.route_input()`` (metadata and
  attributes). With ``--track all`` every caller is followed.
* ``--mode bare``: the baseline for the adapter's overhead -- no plugin code at all:
  connect, wait for the caller, publish ``route=bare`` and ``worker``.

* ``--example FILE``: run the ``AgentServer`` that FILE (e.g. ``examples/agent.py``)
  defines -- its own entrypoint, rules and agent name -- loaded with ``runpy`` (so its
  ``__main__`` block does not run), with the test overrides below.

  With ``LKMETA_E2E_SCRIPTED_LLM`` (JSON turns, see :func:`_script_the_llm`) its
  sessions get a scripted LLM that calls the example's tools, with no network.

Test overrides, for every mode: jobs run in threads (no forkserver start per job),
the worker's HTTP server binds 127.0.0.1 on a free port, and the worker reports a
load of 0. The last matters: workers report *machine* CPU load, the server offers
jobs only to workers under full load, and a busy 2-core CI box reports 1.0 ("no
workers with sufficient capacity") -- tests must not depend on machine load.

Logs go to stderr; ``registered worker`` marks readiness. SIGTERM closes the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

from livekit.agents import AgentServer, JobContext, JobExecutorType

POLL_INTERVAL = 0.025


def _json(value: Any) -> str:
    from livekit.plugins.metadata.codec import serialize_metadata

    return serialize_metadata(value, max_bytes=60_000)


async def _bare_entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    await ctx.wait_for_participant()
    await ctx.room.local_participant.set_attributes({"route": "bare", "worker": str(os.getpid())})
    await _until_disconnected(ctx)


async def _until_disconnected(ctx: JobContext) -> None:
    while ctx.room.isconnected():
        await asyncio.sleep(0.2)


def _adapter_entrypoint(rules: str | None, store: str, track: str = "first") -> Any:
    from livekit.plugins.metadata.agent.adapter import MetadataAdapter
    from livekit.plugins.metadata.sessions.manager import SessionManager

    router = None
    if rules:
        from livekit.plugins.metadata.routing.router import MetadataRouter

        router = MetadataRouter.from_file(rules)

    redis_store: Any = None
    if store != "memory":  # imported at start-up, not on the first job's event loop
        from livekit.plugins.metadata.sessions.redis import RedisStore

        redis_store = RedisStore

    def make_sessions() -> SessionManager:
        if redis_store is None:
            return SessionManager()
        return SessionManager(store=redis_store.from_url(store))

    # One SessionManager per job: THREAD jobs run on their own event loops, and a
    # Redis pool is bound to the loop that created it.
    async def entrypoint(ctx: JobContext) -> None:
        sessions = make_sessions()
        adapter = MetadataAdapter(sessions, track=track)  # type: ignore[arg-type]
        handle = await adapter.attach(ctx)
        snapshot = await handle.get()
        caller = handle.route_input()
        routed = router.route(caller.metadata, attributes=caller.attributes) if router else None
        route = routed.agent if routed is not None else "adapter"
        published = _json(snapshot)
        await ctx.room.local_participant.set_attributes(
            {"route": route or "reject", "session": published, "worker": str(os.getpid())}
        )
        views: dict[str, str] = {}
        while ctx.room.isconnected():
            await asyncio.sleep(POLL_INTERVAL)
            current = _json(await handle.get())
            changed: dict[str, str] = {}
            if current != published:
                published = current
                changed["session"] = published
            for identity in handle.participants:  # each caller's own view, by identity
                for prefix, read in (
                    ("view", handle.participant_metadata),
                    ("attrs", handle.participant_attributes),
                ):
                    name = f"{prefix}.{identity}"
                    value = _json(read(identity))
                    if views.get(name) != value:
                        views[name] = changed[name] = value
            if changed:
                await ctx.room.local_participant.set_attributes(changed)

    return entrypoint


def _no_load() -> float:
    return 0.0


def _script_the_llm(namespace: dict[str, Any], script: str) -> None:
    """Give every job of the example a scripted LLM (no network): each user turn emits
    the next tool calls of ``script`` (JSON: a list of turns, each a list of
    ``[tool name, arguments]``). The example's ``_session_kwargs`` is replaced in the
    module's own globals, which its entrypoint reads."""
    import json

    from scripted_llm import ScriptedLLM  # tests/ is this script's directory

    turns = [[(name, args) for name, args in turn] for turn in json.loads(script)]
    live_globals = namespace["_session_kwargs"].__globals__
    live_globals["_session_kwargs"] = lambda: {"llm": ScriptedLLM(list(turns))}


def _example_server(path: str) -> AgentServer:
    """The AgentServer defined by the example file, with the test overrides applied."""
    import runpy

    namespace = runpy.run_path(path, run_name="lkmeta_e2e_example")
    servers = [v for v in namespace.values() if isinstance(v, AgentServer)]
    if len(servers) != 1:
        raise SystemExit(f"{path}: expected exactly one AgentServer, found {len(servers)}")
    server = servers[0]
    script = os.environ.get("LKMETA_E2E_SCRIPTED_LLM")
    if script:
        _script_the_llm(namespace, script)
    # Private attributes: AgentServer has no public setters for these after construction.
    server._job_executor_type = JobExecutorType.THREAD
    server._host = "127.0.0.1"
    server._port = 0
    server._max_retry = 2
    server.load_fnc = _no_load
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--example", default=None, help="run the AgentServer of this file")
    parser.add_argument("--agent-name", default=None)
    parser.add_argument("--mode", choices=("adapter", "bare"), default="adapter")
    parser.add_argument("--rules", default=None)
    parser.add_argument("--store", default="memory")
    parser.add_argument("--track", choices=("first", "all"), default="first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    if args.example:
        server = _example_server(args.example)
    else:
        if not args.agent_name:
            parser.error("--agent-name is required without --example")
        server = AgentServer(
            job_executor_type=JobExecutorType.THREAD,
            host="127.0.0.1",
            port=0,
            max_retry=2,
            num_idle_processes=2,
            load_fnc=_no_load,
        )
        if args.mode == "bare":
            entry = _bare_entrypoint
        else:
            entry = _adapter_entrypoint(args.rules, args.store, args.track)
        server.rtc_session(entry, agent_name=args.agent_name)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        task = asyncio.create_task(server.run(devmode=True))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        await server.aclose()
        for t in (task, stopper):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    asyncio.run(run())


if __name__ == "__main__":
    main()
