"""The routing playground's page and its JSON calls (``/route``, ``/explain``) on the core.

The answers are the command line's (``format_route`` / ``format_explain``), carry no
metadata value, take from the same rate buckets as ``/token``, and answer only
loopback callers (naming a loopback ``Host``) or holders of the metrics key. The
page is on by default exactly on a loopback host and in the OpenAPI document go the
two calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from livekit.plugins.metadata.routing.formatting import format_explain, format_route
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.server.config import ServerConfig
from livekit.plugins.metadata.server.core import TokenEndpoint
from livekit.plugins.metadata.server.messages import EndpointRequest, EndpointResponse
from livekit.plugins.metadata.server.openapi import openapi_document
from livekit.plugins.metadata.server.playground import ExplainResponse, RouteResponse

pytestmark = pytest.mark.unit

SECRET = "playground-secret-" + "s" * 32
METRICS_KEY = "metrics-key-0123456789abcdef"
PRIVATE_VALUE = "private-value-5d1e"
RULES: dict[str, Any] = {
    "phone_region": "ES",
    "rules": [
        {"name": "vip", "when": {"caller.tier": "vip"}, "agent": "vip"},
        {
            "name": "line",
            "when_attributes": {"sip.trunkPhoneNumber": {"phone": "+34 910 000 001"}},
            "agent": "sales",
        },
        {"name": "banned", "when": {"tenant": "banned"}, "reject": True},
    ],
}
JSON = {"content-type": "application/json", "host": "127.0.0.1:8080"}


def endpoint(router: MetadataRouter | None = None, **overrides: Any) -> TokenEndpoint:
    data: dict[str, Any] = {"api_key": "APIplayground", "api_secret": SECRET, **overrides}
    config = ServerConfig.from_mapping(data)
    config.router = router if router is not None else MetadataRouter.from_dict(RULES)
    return TokenEndpoint.from_config(config, warn_dev_keys=False)


async def call(
    ep: TokenEndpoint,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    headers: Mapping[str, str] = JSON,
    client: str = "127.0.0.1",
) -> EndpointResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
    return await ep.handle(EndpointRequest(method, path, dict(headers), body=raw, client=client))


def error(response: EndpointResponse) -> str:
    return str(orjson.loads(response.body)["error"]["code"])


async def test_explain_and_route_answer_as_the_command_line_does() -> None:
    ep = endpoint()
    router = ep.state.router
    assert router is not None
    metadata = {"caller": {"tier": "gold"}, "secret": PRIVATE_VALUE}
    attributes = {"sip.trunkPhoneNumber": "0034 910 000 001"}
    answer = await call(ep, "/explain", {"metadata": metadata, "attributes": attributes})
    assert answer.status == 200
    body = ExplainResponse.model_validate_json(answer.body)
    trace = router.explain(metadata, attributes=attributes)
    assert body.text == format_explain(trace)
    assert [v.line for v in body.trace] == format_explain(trace).splitlines()
    assert [v.selected for v in body.trace] == [False, True, False]
    assert body.trace[0].failed == 'caller.tier == "vip" (found: string)'
    assert body.route is not None
    assert body.route.agent == "sales"
    assert body.route.text == format_route(router.route(metadata, attributes=attributes))

    vip = {"caller": {"tier": "vip"}, "secret": PRIVATE_VALUE}
    as_string = await call(ep, "/route", {"metadata": orjson.dumps(vip).decode()})
    routed = RouteResponse.model_validate_json(as_string.body)
    assert (routed.route.agent, routed.route.rule) == ("vip", "vip")
    assert routed.route.job_metadata_keys == ["caller", "secret"]  # keys, never values
    assert PRIVATE_VALUE.encode() not in answer.body + as_string.body


async def test_no_match_and_reject_are_answers_of_their_own() -> None:
    ep = endpoint()
    none = await call(ep, "/explain", {"metadata": {}})
    assert orjson.loads(none.body)["route"] is None
    assert "NoRouteMatched" in orjson.loads(none.body)["text"]
    no_route = await call(ep, "/route", {"metadata": {}})
    assert (no_route.status, error(no_route)) == (422, "no_route")
    rejected = await call(ep, "/route", {"metadata": {"tenant": "banned"}})
    assert rejected.status == 200
    assert orjson.loads(rejected.body)["route"]["rejected"] is True


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{}", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b"{nope", JSON, 400, "invalid_json"),
        (b"[1]", JSON, 400, "invalid_request"),
        (b'{"colour": 1}', JSON, 400, "invalid_request"),
        (b'{"metadata": "[1]"}', JSON, 400, "invalid_metadata"),
        (b'{"attributes": {"a": 1}}', JSON, 400, "invalid_request"),
        (b'{"metadata": {"a": "' + b"x" * 70_000 + b'"}}', JSON, 413, "metadata_too_large"),
    ],
)
async def test_bad_requests_get_the_endpoints_json_errors(
    body: bytes, headers: Mapping[str, str], status: int, code: str
) -> None:
    answer = await call(endpoint(max_body_bytes=1024 * 1024), "/explain", body, headers=headers)
    assert (answer.status, error(answer)) == (status, code)
    assert b"x" * 16 not in answer.body


async def test_callers_off_loopback_need_the_metrics_key() -> None:
    open_ep = endpoint()
    far = await call(open_ep, "/route", {}, client="192.0.2.7")
    assert (far.status, error(far)) == (403, "loopback_only")
    rebound = await call(open_ep, "/route", {}, headers={**JSON, "host": "evil.example:8080"})
    assert (rebound.status, error(rebound)) == (403, "loopback_only")

    keyed = endpoint(metrics_key=METRICS_KEY, auth_failure_limit={"rate": 0.01, "burst": 2})
    good = {**JSON, "authorization": f"Bearer {METRICS_KEY}"}
    ok = await call(
        keyed, "/route", {"metadata": {"caller": {"tier": "vip"}}}, headers=good, client="192.0.2.7"
    )
    assert ok.status == 200
    wrong = {**JSON, "authorization": "Bearer not-the-key-0123456789"}
    statuses = [
        (await call(keyed, "/explain", {}, headers=wrong, client="192.0.2.8")).status
        for _ in range(3)
    ]
    assert statuses == [401, 401, 429]  # failed authentications count, as on /metrics
    assert (await call(keyed, "/route", {"metadata": {"caller": {"tier": "vip"}}})).status == 200


async def test_the_calls_take_from_the_token_endpoints_buckets() -> None:
    ep = endpoint(rate_limit={"rate": 0.01, "burst": 2}, auth={"allow_anonymous": True})
    assert (await call(ep, "/route", {"metadata": {"caller": {"tier": "vip"}}})).status == 200
    assert (await call(ep, "/explain", {})).status == 200
    limited = await call(ep, "/explain", {})
    assert (limited.status, error(limited)) == (429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    token = await call(ep, "/token", {})  # the same anonymous caller, the same bucket
    assert (token.status, error(token)) == (429, "rate_limited")


async def test_routing_off_and_methods() -> None:
    config = ServerConfig.from_mapping({"api_key": "APIx", "api_secret": SECRET, "rules": "none"})
    off = TokenEndpoint.from_config(config, warn_dev_keys=False)
    answer = await call(off, "/explain", {})
    assert (answer.status, error(answer)) == (404, "no_rules")
    get = await call(endpoint(), "/route", method="GET")
    assert (get.status, get.headers["Allow"]) == (405, "POST")


async def test_the_page_is_on_by_default_only_on_a_loopback_host() -> None:
    sdk = "http://127.0.0.1:9999/sdk/livekit-client.umd.js"
    local = endpoint(playground_sdk_url=sdk, path="/lk/token")
    page = await call(local, "/playground", method="GET")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert b'content="lk/token"' in page.body
    assert sdk.encode() in page.body
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self' http://127.0.0.1:9999;" in csp
    assert "frame-ancestors 'none'" in csp
    for asset in ("playground.js", "playground.css"):
        served = await call(local, f"/playground/{asset}", method="GET")
        assert served.status == 200
        assert served.headers["X-Content-Type-Options"] == "nosniff"

    keys = {"keys": [{"id": "app", "key": "app-bearer-key-0123456789"}]}
    public = endpoint(host="0.0.0.0", auth=keys)
    assert (await call(public, "/playground", method="GET")).status == 404
    assert (await call(public, "/explain", {}, client="192.0.2.7")).status == 403
    chosen = endpoint(host="0.0.0.0", auth=keys, playground=True)
    assert (await call(chosen, "/playground", method="GET")).status == 200
    assert (await call(endpoint(playground=False), "/playground", method="GET")).status == 404


def test_the_sdk_url_setting_refuses_markup() -> None:
    from livekit.plugins.metadata.errors import ConfigError

    with pytest.raises(ConfigError):
        ServerConfig.from_mapping({"playground_sdk_url": 'https://x/"><script>'})
    with pytest.raises(ConfigError):
        ServerConfig.from_mapping({"playground_sdk_url": "javascript:alert(1)"})


def test_the_openapi_document_lists_both_calls() -> None:
    doc = openapi_document()
    for path, ok in (("/route", "RouteResponse"), ("/explain", "ExplainResponse")):
        post = doc["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/RouteRequest"
        )
        assert post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
            ok
        )
        assert {"400", "401", "403", "413", "415", "429"} <= set(post["responses"])
    assert "422" in doc["paths"]["/route"]["post"]["responses"]
    assert {"RouteRequest", "RouteSummary", "RuleVerdict"} <= set(doc["components"]["schemas"])


@pytest.mark.parametrize(("playground", "shown"), [(None, True), (False, False)])
def test_the_start_up_lines_name_the_playground_when_it_is_on(
    capsys: pytest.CaptureFixture[str], playground: bool | None, shown: bool
) -> None:
    from livekit.plugins.metadata.server.run import _print_banner

    _print_banner(ServerConfig(host="127.0.0.1", playground=playground), 8080, 1)
    out = capsys.readouterr().out
    assert ("routing playground: http://127.0.0.1:8080/playground" in out) is shown
    assert "listening on http://127.0.0.1:8080/token" in out
