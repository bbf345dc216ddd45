"""examples/agent.py routes offline: importing it starts nothing and needs no keys.

The example's decision is the pure ``choose_agent(metadata)``; these tests pin it
for every rule in examples/rules.yaml, the default, invalid metadata, and the
language-aware instructions, and check the worker registration without a server.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from livekit.agents.job import JobAcceptArguments, JobRequest
from livekit.protocol import agent as agent_proto, models

from livekit.plugins.metadata.agent.requests import request_handler
from livekit.plugins.metadata.agent.selection import route_of
from livekit.plugins.metadata.routing.router import MetadataRouter

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def example(monkeypatch_module: pytest.MonkeyPatch) -> ModuleType:
    for var in ("LK_AGENT_NAME", "LK_ROUTER_RULES", "LK_DEMO_LLM", "LK_DEMO_STT", "LK_DEMO_TTS"):
        monkeypatch_module.delenv(var, raising=False)
    spec = importlib.util.spec_from_file_location("example_router_agent", EXAMPLES / "agent.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop(spec.name, None)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


CASES: list[tuple[dict[str, Any] | str | None, str, str, str, str]] = [
    # metadata, agent, rule, Agent class name, language
    (
        {"department": "support", "language": "es"},
        "support-es",
        "support-es",
        "SupportAgent",
        "Spanish",
    ),
    (
        {"department": "support", "language": "es-MX"},
        "support-es",
        "support-es",
        "SupportAgent",
        "Spanish",
    ),
    ({"department": "support", "language": "fr"}, "support", "support", "SupportAgent", "French"),
    ({"department": "support"}, "support", "support", "SupportAgent", "English"),
    ({"department": "sales", "language": "de"}, "sales", "sales", "SalesAgent", "German"),
    ({"department": "sales", "language": "xx"}, "sales", "sales", "SalesAgent", "English"),
    (
        {"caller": {"tier": "vip"}, "department": "sales", "language": "pt-BR"},
        "vip",
        "vip",
        "VipAgent",
        "Portuguese",
    ),
    ({"department": "hr"}, "general", "default", "GeneralAgent", "English"),
    ({}, "general", "default", "GeneralAgent", "English"),
    ('{"department": "sales"}', "sales", "sales", "SalesAgent", "English"),
    ("", "general", "default", "GeneralAgent", "English"),
    (None, "general", "default", "GeneralAgent", "English"),
    ("{not json", "general", "fallback", "GeneralAgent", "English"),
]


@pytest.mark.parametrize(("metadata", "agent", "rule", "cls", "language"), CASES)
def test_choose_agent(
    example: ModuleType,
    metadata: dict[str, Any] | str | None,
    agent: str,
    rule: str,
    cls: str,
    language: str,
) -> None:
    route, chosen = example.choose_agent(metadata)
    assert route.agent == agent
    assert route.label == rule
    assert route.agent_name == "router-demo"
    assert type(chosen).__name__ == cls
    assert chosen.language == language
    assert f"Always answer in {language}." in chosen.instructions
    assert route_of(chosen) is route
    assert example.route_attributes(route) == {"route": agent, "route.rule": rule}


def test_vip_attributes_and_job_metadata(example: ModuleType) -> None:
    route, _ = example.choose_agent({"caller": {"tier": "vip"}})
    assert route.attributes == {"queue": "priority"}
    route, _ = example.choose_agent(
        {"department": "support", "language": "es", "customer": "c1", "card": "4111"}
    )
    assert route.metadata == {"department": "support", "language": "es", "customer": "c1"}


def test_import_registers_one_worker_without_starting_it(example: ModuleType) -> None:
    assert example.AGENT_NAME == "router-demo"
    assert example.ROUTER.agents == set(example.FACTORIES)
    assert example.ROUTER.agent_names == {"router-demo"}
    assert example._session_kwargs() == {}
    assert isinstance(example.ROUTER, MetadataRouter)


def test_rules_file_is_the_documented_one(example: ModuleType) -> None:
    assert example.RULES_PATH == EXAMPLES / "rules.yaml"
    file_router = MetadataRouter.from_file(EXAMPLES / "rules.yaml")
    assert file_router.route({"department": "sales"}).agent_name == "router-demo"


async def test_on_request_accepts_jobs_routed_to_this_worker(example: ModuleType) -> None:
    handler = request_handler(example.ROUTER)
    answers: list[Any] = []

    async def on_reject(terminate: bool) -> None:
        answers.append(("reject", terminate))

    async def on_accept(args: JobAcceptArguments) -> None:
        answers.append(("accept", args.identity))

    for agent_name in ("router-demo", "someone-else"):
        job = agent_proto.Job(
            id="AJ_1",
            agent_name=agent_name,
            metadata=json.dumps({"department": "support", "language": "es"}),
            room=models.Room(name="r"),
        )
        await handler(JobRequest(job=job, on_reject=on_reject, on_accept=on_accept))
    assert answers == [("accept", "agent-AJ_1"), ("reject", False)]


async def test_a_session_without_models_uses_no_turn_detector(example: ModuleType) -> None:
    """Without speech models the session is built with manual turns (nothing calls out)."""
    from livekit.agents import AgentSession

    kwargs = example._turn_handling(speech=False)
    assert kwargs["turn_handling"]["turn_detection"] == "manual"
    session: AgentSession[Any] = AgentSession(**kwargs)
    assert session is not None
    assert example._turn_handling(speech=True) == {}


def test_the_worker_reports_its_jobs_not_the_machine_cpu(example: ModuleType) -> None:
    """A busy laptop must not make the demo worker 'full': load = running jobs / MAX_JOBS."""

    class Worker:
        def __init__(self) -> None:
            self.active_jobs: list[object] = []

    worker = Worker()
    assert example.job_load(worker) == 0.0
    worker.active_jobs = [object()] * (example.MAX_JOBS // 2)
    assert example.job_load(worker) == pytest.approx(0.5)
    worker.active_jobs = [object()] * (example.MAX_JOBS * 3)
    assert example.job_load(worker) == 1.0
    assert example.server.load_fnc is example.job_load
