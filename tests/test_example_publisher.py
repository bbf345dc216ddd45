"""The example's ``on_change`` never waits for a ``set_attributes`` acknowledgement.

Issue 35 (finding 5): some ``set_attributes`` calls took 5 s instead of milliseconds, and
because the adapter awaits ``on_change``, every later update waited behind them.
``examples/agent.py`` now publishes its route through ``latest_publisher``: publishing
returns at once, one ``set_attributes`` runs at a time, and only the newest waiting
attributes follow it, so the last published route is the last decision.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agent.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_agent_publisher", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop(spec.name, None)
    spec.loader.exec_module(module)
    return module


class SlowParticipant:
    """A stand-in whose ``set_attributes`` is acknowledged only when the test says so."""

    def __init__(self) -> None:
        self.started: list[dict[str, str]] = []
        self.acknowledged: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self.fail_next = False

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.started.append(attributes)
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("room closed")
        self.acknowledged.append(attributes)


async def settle() -> None:
    """Let the background publisher run until it waits or has nothing left to send."""
    for _ in range(100):
        await asyncio.sleep(0)


class Room:
    """A stand-in for ``rtc.Room``: only its local participant is used."""

    def __init__(self, participant: SlowParticipant) -> None:
        self.local_participant = participant


def route(agent: str) -> dict[str, str]:
    return {"route": agent, "route.rule": agent}


async def test_publishing_returns_before_the_acknowledgement_and_the_newest_wins(
    example: ModuleType,
) -> None:
    participant = SlowParticipant()
    publish = example.latest_publisher(Room(participant))
    publish(route("support"))
    await settle()
    assert participant.started == [route("support")]  # in flight, not acknowledged
    for agent in ("sales", "vip", "general", "sales"):
        publish(route(agent))  # returns while the first one still waits
    assert participant.acknowledged == []
    participant.release.set()
    await settle()
    assert participant.acknowledged == [route("support"), route("sales")]
    assert participant.started == participant.acknowledged  # the superseded ones never ran


async def test_a_failed_publish_is_logged_and_the_next_one_still_runs(
    example: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    participant = SlowParticipant()
    participant.fail_next = True
    participant.release.set()
    publish = example.latest_publisher(Room(participant))
    with caplog.at_level(logging.WARNING, logger="router-demo"):
        publish(route("support"))
        await settle()
    assert "RuntimeError" in caplog.text
    publish(route("sales"))
    await settle()
    assert participant.acknowledged == [route("sales")]


def test_the_example_never_awaits_set_attributes_in_the_adapters_path() -> None:
    source = EXAMPLE.read_text()
    assert "publish(route_attributes(" in source
    assert "await ctx.room.local_participant.set_attributes" not in source
