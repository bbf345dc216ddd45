"""A bad dispatch still gets an answer: invalid job metadata routes as empty metadata.

Before issue 35, ``on_request`` rejected a job whose metadata was not JSON, not an
object, too large or too deep (``terminate=False``), and since every worker runs the
same rules, no worker took it and the caller waited in silence. Now such metadata is
treated like invalid participant metadata: logged without values, counted, and routed
as ``{}`` (the default agent unless a rule matches that), so the worker of that route
accepts it. A job is rejected only when its route is another worker's (or the rules
reject it, or nothing matches without a default).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from livekit.plugins.metadata.agent.requests import (
    RequestStats,
    request_handler,
    route_job_request,
)
from livekit.plugins.metadata.routing.router import MetadataRouter
from tests.job_requests import job_request

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-value-never-logged"

BAD_METADATA: dict[str, str] = {
    "not JSON": '{"pin": "' + SECRET + '", ',
    "an array": json.dumps([SECRET, {"department": "sales"}]),
    "100 KB": json.dumps({"department": "sales", "pad": SECRET + "x" * 100_000}),
    "nested 10,000 deep": '{"a":' * 10_000 + json.dumps(SECRET) + "}" * 10_000,
    "a JSON string": json.dumps(SECRET),
    "invalid surrogate": '{"pin": "\\ud800' + SECRET + '"}',
}
CASES = [pytest.param(raw, id=name) for name, raw in BAD_METADATA.items()]

RULES: dict[str, Any] = {
    "rules": [
        {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
        {"name": "blocked", "when": {"tenant": "banned"}, "reject": True},
    ],
    "default": "general",
}


@pytest.fixture
def router() -> MetadataRouter:
    return MetadataRouter.from_dict(RULES)


@pytest.mark.parametrize("metadata", CASES)
async def test_the_default_agents_worker_accepts_a_job_with_invalid_metadata(
    router: MetadataRouter, metadata: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = request_handler(router, publish_route=True)
    req, rec = job_request(metadata, agent_name="general")
    with caplog.at_level(logging.DEBUG, logger="livekit.plugins.metadata"):
        await handler(req)
    assert rec.rejected == []
    assert len(rec.accepted) == 1
    assert rec.accepted[0].attributes == {"route": "general", "route.rule": "default"}
    assert handler.stats == RequestStats(accepted=1, rejected=0, invalid=1)
    assert "AJ_test" in caplog.text
    assert "routing it as empty metadata" in caplog.text
    assert SECRET not in caplog.text
    assert "department" not in caplog.text


@pytest.mark.parametrize("metadata", CASES)
async def test_another_workers_handler_rejects_it_without_terminating(
    router: MetadataRouter, metadata: str
) -> None:
    handler = request_handler(router)
    req, rec = job_request(metadata, agent_name="sales")
    await handler(req)
    assert rec.accepted == []
    assert rec.rejected == [False]
    assert handler.stats == RequestStats(accepted=0, rejected=1, invalid=1)


async def test_one_worker_hosting_every_agent_accepts_it() -> None:
    """The example's layout (``worker: router-demo``): the default is this worker's too."""
    router = MetadataRouter.from_dict({**RULES, "worker": "router-demo"})
    handler = request_handler(router)
    for raw in BAD_METADATA.values():
        req, rec = job_request(raw, agent_name="router-demo")
        route = await route_job_request(router, req)
        assert route is not None
        assert route.agent == "general"
        assert route.is_default
        assert len(rec.accepted) == 1
        req, rec = job_request(raw, agent_name="router-demo")
        await handler(req)
        assert len(rec.accepted) == 1
    assert handler.stats == RequestStats(accepted=len(BAD_METADATA), invalid=len(BAD_METADATA))


async def test_it_is_routed_on_what_is_valid_a_rule_for_empty_metadata_wins() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [
                {"name": "anonymous", "when": {"caller": {"exists": False}}, "agent": "reception"},
                *RULES["rules"],
            ],
            "default": "general",
        }
    )
    req, rec = job_request("[1, 2]", agent_name="reception")
    route = await route_job_request(router, req)
    assert route is not None
    assert route.label == "anonymous"
    assert len(rec.accepted) == 1


async def test_a_route_waiting_for_attributes_still_accepts_it() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [{"when_attributes": {"sip.trunkPhoneNumber": "+34910000001"}, "agent": "a"}],
            "default": "reject",
        }
    )
    req, rec = job_request("not json", agent_name="a")
    assert await route_job_request(router, req) is None  # the entrypoint decides
    assert len(rec.accepted) == 1


async def test_it_is_still_rejected_when_no_route_exists() -> None:
    no_default = MetadataRouter.from_dict({"rules": RULES["rules"]})
    stats = RequestStats()
    req, rec = job_request("not json", agent_name="general")
    assert await route_job_request(no_default, req, stats=stats) is None
    assert rec.rejected == [False]
    assert stats == RequestStats(rejected=1, invalid=1)
    rejecting = MetadataRouter.from_dict({"rules": RULES["rules"], "default": "reject"})
    req, rec = job_request("not json", agent_name="general")
    assert await route_job_request(rejecting, req, stats=stats) is None
    assert rec.rejected == [False]


async def test_a_failing_metadata_source_routes_as_empty_metadata(
    router: MetadataRouter, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(req: Any) -> str:
        raise RuntimeError(SECRET)

    handler = request_handler(router, metadata_from=boom)
    req, rec = job_request("", agent_name="general")
    with caplog.at_level(logging.DEBUG, logger="livekit.plugins.metadata"):
        await handler(req)
    assert len(rec.accepted) == 1
    assert handler.stats.invalid == 1
    assert "RuntimeError" in caplog.text
    assert SECRET not in caplog.text


async def test_invalid_room_metadata_and_bytes_are_handled_alike(router: MetadataRouter) -> None:
    req, rec = job_request("", agent_name="general", room_metadata="[1]")
    await request_handler(router, metadata_from="room")(req)
    assert len(rec.accepted) == 1
    handler = request_handler(router, metadata_from=lambda r: b"\xff\xfe")
    req, rec = job_request("", agent_name="general")
    await handler(req)
    assert len(rec.accepted) == 1
    assert handler.stats.invalid == 1


async def test_valid_metadata_is_answered_and_counted_as_before(router: MetadataRouter) -> None:
    handler = request_handler(router)
    req, rec = job_request(json.dumps({"department": "sales"}), agent_name="sales")
    await handler(req)
    req2, rec2 = job_request(json.dumps({"department": "sales"}), agent_name="general")
    await handler(req2)
    req3, rec3 = job_request(json.dumps({"tenant": "banned"}), agent_name="general")
    await handler(req3)
    assert len(rec.accepted) == 1
    assert rec2.rejected == [False]
    assert rec3.rejected == [False]
    assert handler.stats == RequestStats(accepted=1, rejected=2, invalid=0)
