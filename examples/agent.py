"""One worker, several Agents, chosen by metadata rules (examples/rules.yaml).

Run against any LiveKit server (LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET)::

    python examples/agent.py dev

The worker registers as ``LK_AGENT_NAME`` (default ``router-demo``; explicit
dispatch only) and serves every agent in the rules. For each job it:

1. answers the job request with ``request_handler(router)``: accept when the
   job's metadata routes to this worker, else ``reject(terminate=False)``;
2. attaches the MetadataAdapter: the job's metadata in the call session (keyed
   by the room sid LiveKit assigned), the caller's own view (its token session,
   private keys included, under its live metadata) and its attributes, kept in
   sync;
3. routes the caller's metadata and attributes and starts the chosen Agent
   (support / Spanish support / sales / VIP / general, each answering in the
   caller's language);
4. publishes the decision on the agent participant as attributes ``route``
   (the agent) and ``route.rule`` (the rule that chose it);
5. re-routes (``session.update_agent``) when the caller's metadata changes,
   through ``attach(ctx, on_change=...)``: the adapter calls it after every
   applied update, so an update sent right after the route appears is never lost;
6. gives every Agent two function tools that reach the caller through
   ``RunContext.userdata`` (a ``CallerSession``): ``my_customer_id`` answers with
   the caller's private ``customer_id`` (never published), ``change_department``
   writes the caller's ``department``, and the rules hand the call off (step 5).

Routing and metadata need no model: without model settings the session starts
text-only with no LLM, so the worker routes and publishes its decision but does
not converse. Set ``LK_DEMO_LLM`` (and optionally ``LK_DEMO_STT`` /
``LK_DEMO_TTS``) to LiveKit Inference model strings, e.g. ``openai/gpt-4.1-mini``,
``deepgram/nova-3``, ``cartesia/sonic-2``, to talk to it.

Load: the worker reports its running jobs as a share of ``LK_DEMO_MAX_JOBS``
(default 20), not the machine's CPU (see :func:`job_load`).

Offline, the routing is one pure function, :func:`choose_agent`; importing this
module starts nothing and needs no keys. Other settings: ``LK_ROUTER_RULES``
(rules file, default ``examples/rules.yaml`` next to this file).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from livekit import rtc
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    RunContext,
    function_tool,
    room_io,
)

from livekit.plugins.metadata import (
    AgentFactoryMap,
    MetadataAdapter,
    MetadataRouter,
    Route,
)
from livekit.plugins.metadata.agent.prewarm import job_sessions, preload_modules, prepare_process
from livekit.plugins.metadata.agent.requests import request_handler
from livekit.plugins.metadata.agent.tools import CallerSession
from livekit.plugins.metadata.agent.worker import run_worker

logger = logging.getLogger("router-demo")

AGENT_NAME = os.environ.get("LK_AGENT_NAME", "router-demo")
RULES_PATH = Path(os.environ.get("LK_ROUTER_RULES", Path(__file__).with_name("rules.yaml")))

LANGUAGES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "pt": "Portuguese"}


def language_name(metadata: Mapping[str, Any], default: str = "en") -> str:
    """The caller's language as a name (``es-MX`` -> ``Spanish``); English if unknown."""
    code = metadata.get("language")
    base = code.split("-", 1)[0].lower() if isinstance(code, str) else default
    return LANGUAGES.get(base, LANGUAGES[default])


@function_tool
async def my_customer_id(context: RunContext[CallerSession]) -> str:
    """The caller's customer id, when the caller asks for it. Say it only to this caller."""
    # The caller's own view: its private keys (never in its token or the room) included.
    # The answer goes to this caller's conversation only; nothing is published.
    view = context.userdata.metadata()
    customer = view.get("customer_id")
    return str(customer) if customer is not None else "no customer id on file"


@function_tool
async def change_department(context: RunContext[CallerSession], department: str) -> str:
    """Send the caller to another department when they ask for it.

    Args:
        department: "support" or "sales".
    """
    if department not in ("support", "sales"):
        return "refused: the departments are support and sales"
    # A write to the caller's view: the adapter's on_change re-routes through the rules
    # (once) and publishes the new `route` attribute.
    await context.userdata.update({"department": department})
    return f"ok: transferring to {department}"


TOOLS: list[Any] = [my_customer_id, change_department]
"""The tools every demo Agent has (they reach the caller through ``RunContext.userdata``)."""


class _DemoAgent(Agent):
    """An Agent whose instructions are a role plus the language to answer in."""

    role = ""

    def __init__(self, *, language: str = "English") -> None:
        self.language = language
        super().__init__(instructions=f"{self.role} Always answer in {language}.", tools=TOOLS)


class SupportAgent(_DemoAgent):
    """Customer support."""

    role = (
        "You are a patient customer-support agent. Find out what is wrong, then walk the "
        "caller through the fix step by step."
    )


class VipAgent(_DemoAgent):
    """The priority desk for VIP callers."""

    role = (
        "You are the priority support desk for VIP customers. Be brief, take ownership "
        "and offer a callback from a senior engineer when a fix is not immediate."
    )


class SalesAgent(_DemoAgent):
    """Sales: plans and pricing."""

    role = (
        "You are a friendly sales agent. Learn what the caller needs and recommend a plan; "
        "never invent prices."
    )


class GeneralAgent(_DemoAgent):
    """Reception: general questions, and asks what the caller needs."""

    role = (
        "You are the receptionist. Greet the caller, answer general questions and ask "
        "whether they need support or sales."
    )


def _language_of(route: Route) -> str:
    return language_name(route.metadata)


FACTORIES = {
    "support-es": lambda route: SupportAgent(language="Spanish"),
    "support": lambda route: SupportAgent(language=_language_of(route)),
    "sales": lambda route: SalesAgent(language=_language_of(route)),
    "vip": lambda route: VipAgent(language=_language_of(route)),
    "general": lambda route: GeneralAgent(language=_language_of(route)),
}
"""Agent factories by the rules' ``agent`` names."""

ROUTER = MetadataRouter.from_file(RULES_PATH, worker=AGENT_NAME)
AGENTS = AgentFactoryMap(ROUTER, FACTORIES, fallback="general")


def choose_agent(
    metadata: Mapping[str, Any] | str | bytes | None,
    attributes: Mapping[str, str] | None = None,
) -> tuple[Route, Agent]:
    """Route metadata (a mapping or a raw JSON string) and attributes to a ready Agent;
    pure, no I/O.

    Invalid metadata or a route without an agent falls back to the general agent.
    """
    route, agent = AGENTS.select(metadata, attributes=attributes)
    return route, agent


def route_attributes(route: Route) -> dict[str, str]:
    """The attributes the agent publishes about its decision."""
    return {"route": route.agent, "route.rule": route.label}


def latest_publisher(room: rtc.Room) -> Callable[[dict[str, str]], None]:
    """``publish(attributes)`` for the room's local participant, returning at once (newest wins).

    One ``set_attributes`` runs at a time in the background and only the newest waiting
    attributes follow it, so a slow acknowledgement never holds up ``on_change`` (and with
    it the adapter's later updates), and the last published route is the last decision.
    """
    waiting: list[dict[str, str]] = []
    task: asyncio.Task[None] | None = None

    async def drain() -> None:
        while waiting:
            attributes = waiting.pop()
            try:
                await room.local_participant.set_attributes(attributes)
            except Exception as exc:  # e.g. the room closed: the next decision retries
                logger.warning("publishing the route failed (%s)", type(exc).__name__)

    def publish(attributes: dict[str, str]) -> None:
        nonlocal task
        waiting[:] = [attributes]
        if task is None or task.done():  # a running drain picks the newest up itself
            task = asyncio.create_task(drain())

    return publish


def _session_kwargs() -> dict[str, Any]:
    models = {
        "llm": os.environ.get("LK_DEMO_LLM"),
        "stt": os.environ.get("LK_DEMO_STT"),
        "tts": os.environ.get("LK_DEMO_TTS"),
    }
    return {k: v for k, v in models.items() if v}


MAX_JOBS = int(os.environ.get("LK_DEMO_MAX_JOBS", "20"))


def job_load(worker: AgentServer) -> float:
    """This worker's load as its share of ``MAX_JOBS`` running jobs.

    LiveKit workers report the machine's CPU load by default, and the server
    offers jobs only to workers under ``agents.target_load`` (0.7): on a busy
    laptop no agent would ever join. This demo runs no models, so its jobs, not
    the CPU, are what limits it.
    """
    return min(len(worker.active_jobs) / max(MAX_JOBS, 1), 1.0)


REDIS_URL = os.environ.get("REDIS_URL", "")


def prewarm(proc: JobProcess) -> None:
    """Once per job process, before it is offered a job: the sessions and their store.

    ``REDIS_URL`` set: one Redis client per process, shared with the token endpoint,
    so the agent also reads each caller's private keys; unset: this process's memory.
    """
    prepare_process(proc, redis_url=REDIS_URL)


# preload_modules: the plugin's agent side (and the YAML reader and, with REDIS_URL,
# the Redis client) are imported once, in LiveKit's forkserver, not in every job.
server = AgentServer(
    load_fnc=job_load,
    setup_fnc=prewarm,
    preload_modules=preload_modules(redis=bool(REDIS_URL)),
)


def _turn_handling(speech: bool) -> dict[str, Any]:
    """Without speech models nothing decides turns: no detector that would call out."""
    if speech:
        return {}
    return {"turn_handling": {"turn_detection": "manual", "interruption": {"enabled": False}}}


@server.rtc_session(agent_name=AGENT_NAME, on_request=request_handler(ROUTER))
async def entrypoint(ctx: JobContext) -> None:
    """Attach the adapter, route, start the chosen Agent, publish and follow the decision."""
    started = asyncio.Event()
    session: AgentSession[Any] | None = None
    adapter = MetadataAdapter(job_sessions(ctx))  # prepared by prewarm; closed at shutdown
    publish = latest_publisher(ctx.room)

    async def on_change(identity: str) -> None:
        # Run by the adapter, in a task of its own, for the latest state of the caller:
        # updates that arrive while it runs fold into one more call, so a flood costs
        # one re-route per settled state; none is missed, even one that arrives
        # before the session below has started.
        await started.wait()
        caller = handle.route_input()
        if session is not None and AGENTS.reroute(
            session, caller.metadata, attributes=caller.attributes
        ):
            new_route = ROUTER.route(caller.metadata, attributes=caller.attributes)
            publish(route_attributes(new_route))  # never waits for the acknowledgement
            logger.info(
                "job %s: re-routed to %r by %s", ctx.job.id, new_route.agent, new_route.label
            )

    handle = await adapter.attach(ctx, on_change=on_change)
    caller = handle.route_input()  # the caller's view, under the job's metadata
    route, agent = choose_agent(caller.metadata, caller.attributes)
    logger.info("job %s: agent %r chosen by %s", ctx.job.id, route.agent, route.label)

    kwargs = _session_kwargs()
    speech = "stt" in kwargs and "tts" in kwargs
    userdata = CallerSession(handle, caller.identity) if caller.identity else None
    session = AgentSession(**kwargs, **_turn_handling(speech), userdata=userdata)
    await session.start(
        agent,
        room=ctx.room,
        room_options=room_io.RoomOptions(audio_input=speech, audio_output=speech),
    )
    started.set()
    publish(route_attributes(route))
    # An update that arrived while the session started is handled now, in order.
    await on_change("")


def main() -> None:
    """Run the worker; a missing or bad setting is one line naming the fix, and exit 1."""
    run_worker(server)


if __name__ == "__main__":
    main()
