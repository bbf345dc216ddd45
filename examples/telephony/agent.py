"""Phone calls routed by number: one worker, one Agent per line (examples/telephony/rules.yaml).

Run against a LiveKit server with SIP (LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET)::

    lk-metadata sip sync --rules examples/telephony/rules.yaml --trunk ST_xxx --dry-run
    lk-metadata sip sync --rules examples/telephony/rules.yaml --trunk ST_xxx
    python examples/telephony/agent.py dev

``sip sync`` creates one LiveKit dispatch rule per agent for the numbers in the rules
(all dispatching to this worker, ``phone-agents``). For each call the worker:

1. accepts the job in ``on_request`` (``request_handler(router)``): the numbers only
   arrive with the SIP participant, so a job whose route depends on them is accepted
   and routed in the entrypoint;
2. attaches the MetadataAdapter with ``route_on="sip"``: it waits for the caller, a
   participant of kind SIP, and follows its attributes;
3. routes on the caller's attributes (``sip.trunkPhoneNumber``, ``sip.phoneNumber``)
   and starts the Agent for the dialed line;
4. publishes the decision as attributes ``route`` and ``route.rule``.

Without model settings the session is text-only and silent, as in ``examples/agent.py``;
set ``LK_DEMO_LLM`` / ``LK_DEMO_STT`` / ``LK_DEMO_TTS`` to talk to it. ``LK_PHONE_RULES``
points at another rules file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, room_io

from livekit.plugins.metadata import (
    AgentFactoryMap,
    MetadataAdapter,
    MetadataRouter,
    Route,
)
from livekit.plugins.metadata.agent.prewarm import job_sessions, preload_modules, prepare_process
from livekit.plugins.metadata.agent.requests import request_handler
from livekit.plugins.metadata.agent.worker import run_worker

logger = logging.getLogger("phone-demo")

RULES_PATH = Path(os.environ.get("LK_PHONE_RULES", Path(__file__).with_name("rules.yaml")))


class LineAgent(Agent):
    """An Agent for one phone line: a role and the language to answer in."""

    def __init__(self, role: str, language: str = "Spanish") -> None:
        super().__init__(instructions=f"{role} Always answer in {language}.")


FACTORIES = {
    "sales": lambda route: LineAgent("You sell our plans; never invent prices."),
    "support": lambda route: LineAgent("You fix problems step by step."),
    "support-pt": lambda route: LineAgent("You fix problems step by step.", "Portuguese"),
    "reception": lambda route: LineAgent("You greet callers and ask what they need."),
}
"""Agent factories by the rules' ``agent`` names."""

ROUTER = MetadataRouter.from_file(RULES_PATH)
AGENTS = AgentFactoryMap(ROUTER, FACTORIES, fallback="reception")
AGENT_NAME = ROUTER.worker or "phone-agents"


def prewarm(proc: JobProcess) -> None:
    """Once per job process, before it is offered a job: its sessions (in memory)."""
    prepare_process(proc)


MAX_JOBS = int(os.environ.get("LK_DEMO_MAX_JOBS", "20"))


def job_load(worker: AgentServer) -> float:
    """This worker's load as its share of ``MAX_JOBS`` calls, not the machine's CPU: a
    `livekit-server --dev` offers no job to a worker reporting 0.7 or more, which a busy
    laptop's CPU load would (see ``examples/agent.py``)."""
    return min(len(worker.active_jobs) / max(MAX_JOBS, 1), 1.0)


# The plugin's agent side, phonenumbers (the rules compare numbers) and the YAML reader
# are imported once, in LiveKit's forkserver, not in every call's process.
server = AgentServer(setup_fnc=prewarm, preload_modules=preload_modules(), load_fnc=job_load)


def route_attributes(route: Route) -> dict[str, str]:
    """The attributes the agent publishes about its decision."""
    return {"route": route.agent, "route.rule": route.label}


def _session_kwargs() -> dict[str, Any]:
    """LiveKit Inference model strings from LK_DEMO_LLM / _STT / _TTS, when set."""
    return {
        kind: os.environ[f"LK_DEMO_{kind.upper()}"]
        for kind in ("llm", "stt", "tts")
        if os.environ.get(f"LK_DEMO_{kind.upper()}")
    }


@server.rtc_session(agent_name=AGENT_NAME, on_request=request_handler(ROUTER))
async def entrypoint(ctx: JobContext) -> None:
    """Wait for the SIP caller, route on its numbers, start that line's Agent."""
    adapter = MetadataAdapter(job_sessions(ctx), route_on="sip")
    handle = await adapter.attach(ctx)
    caller = handle.route_input()
    route, agent = AGENTS.select(caller.metadata, attributes=caller.attributes)
    logger.info("job %s: agent %r chosen by %s", ctx.job.id, route.agent, route.label)

    kwargs = _session_kwargs()
    speech = "stt" in kwargs and "tts" in kwargs
    turns: dict[str, Any] = (
        {}
        if speech
        else {"turn_handling": {"turn_detection": "manual", "interruption": {"enabled": False}}}
    )
    session: AgentSession[Any] = AgentSession(**kwargs, **turns)
    await session.start(
        agent,
        room=ctx.room,
        room_options=room_io.RoomOptions(audio_input=speech, audio_output=speech),
    )
    await ctx.room.local_participant.set_attributes(route_attributes(route))


def main() -> None:
    """Run the worker; a missing or bad setting is one line naming the fix, and exit 1."""
    run_worker(server)


if __name__ == "__main__":
    main()
