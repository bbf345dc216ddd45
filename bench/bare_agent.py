"""The bare worker of ``bench_agent``: ``examples/agent.py``'s routing done by hand.

No plugin code: ``json.loads`` of the job's and the caller's metadata, an if/elif over
the same rules as ``examples/rules.yaml``, the same four text-only Agents, the same
``route`` / ``route.rule`` attributes, the same load function. It stands for what a
worker costs before any metadata machinery: the baseline of the agent-side benchmark.

Run by ``bench/agent_worker.py`` (``python bench/agent_worker.py bench/bare_agent.py``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, room_io

AGENT_NAME = os.environ.get("LK_AGENT_NAME", "bench-bare")
MAX_JOBS = int(os.environ.get("LK_DEMO_MAX_JOBS", "20"))
LANGUAGES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "pt": "Portuguese"}


class SupportAgent(Agent):
    def __init__(self, language: str) -> None:
        super().__init__(instructions=f"You are a patient support agent. Answer in {language}.")


class VipAgent(Agent):
    def __init__(self, language: str) -> None:
        super().__init__(instructions=f"You are the VIP desk. Answer in {language}.")


class SalesAgent(Agent):
    def __init__(self, language: str) -> None:
        super().__init__(instructions=f"You are a sales agent. Answer in {language}.")


class GeneralAgent(Agent):
    def __init__(self, language: str) -> None:
        super().__init__(instructions=f"You are the receptionist. Answer in {language}.")


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def route(metadata: dict[str, Any]) -> tuple[str, str, Agent]:
    """(agent, rule, Agent) by the rules of examples/rules.yaml, written out by hand."""
    code = metadata.get("language")
    language = LANGUAGES.get(code.split("-")[0].lower() if isinstance(code, str) else "en")
    language = language or "English"
    caller = metadata.get("caller")
    department = metadata.get("department")
    if isinstance(caller, dict) and caller.get("tier") == "vip":
        return "vip", "vip", VipAgent(language)
    if department == "support" and metadata.get("language") in ("es", "es-ES", "es-MX"):
        return "support-es", "support-es", SupportAgent("Spanish")
    if department == "support":
        return "support", "support", SupportAgent(language)
    if department == "sales":
        return "sales", "sales", SalesAgent(language)
    return "general", "default", GeneralAgent(language)


def job_load(worker: AgentServer) -> float:
    return min(len(worker.active_jobs) / max(MAX_JOBS, 1), 1.0)


server = AgentServer(load_fnc=job_load)


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    caller = await ctx.wait_for_participant()
    metadata = {**_loads(ctx.job.metadata), **_loads(caller.metadata)}
    agent, rule, chosen = route(metadata)
    session: AgentSession[Any] = AgentSession(
        turn_handling={"turn_detection": "manual", "interruption": {"enabled": False}}
    )
    await session.start(
        chosen,
        room=ctx.room,
        room_options=room_io.RoomOptions(audio_input=False, audio_output=False),
    )
    await ctx.room.local_participant.set_attributes({"route": agent, "route.rule": rule})
