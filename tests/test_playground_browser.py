"""The routing playground in headless Chromium, served by a real ``lk-metadata serve``.

One page load for a sample rule set (metadata rules, a phone rule, a private key):
the route and every rule's verdict appear, typing re-routes, a phone number routes
by ``when_attributes``, no answer carries a private value. The page is saved as
``bench/out/playground.png`` (not committed; ``docs/playground.png`` is a copy).
Page weight (bytes of HTML, JS and CSS served) and time to first route (navigation
to the route shown) are printed, never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.lk_serve import ROOT, ServeProcess, start_serve, stop_serve

pytestmark = pytest.mark.integration

SCREENSHOT = ROOT / "bench" / "out" / "playground.png"
PRIVATE_VALUE = "cust-7f3a9c-private"
SAMPLE_RULES = """\
worker: router-demo
phone_region: ES
rules:
  - name: vip
    when: {caller.tier: vip}
    agent: vip
    attributes: {queue: priority}
  - name: support-es
    when: {department: support, language: {in: [es, es-MX]}}
    agent: support-es
    job_metadata: [department, language]
  - name: sales-line
    when_attributes: {sip.trunkPhoneNumber: {phone: "+34 910 000 001"}}
    agent: sales
  - name: support
    when: {department: support}
    agent: support
default: general
"""
METADATA = f'{{"department": "support", "language": "es", "customer_id": "{PRIVATE_VALUE}"}}'


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("playground")
    rules = tmp / "rules.yaml"
    rules.write_text(SAMPLE_RULES, encoding="utf-8")
    server = start_serve(tmp, {"rules": str(rules), "private_keys": ["customer_id"]})
    try:
        yield server
    finally:
        stop_serve(server)


def test_the_playground_routes_explains_and_keeps_private_values(
    browser: Any, serve: ServeProcess
) -> None:
    page = browser.new_page(viewport={"width": 1360, "height": 820})
    served: list[Any] = []
    page.on("response", lambda response: served.append(response))
    try:
        t0 = time.perf_counter()
        page.goto(f"http://127.0.0.1:{serve.port}/playground")
        page.fill("#metadata", METADATA)
        page.wait_for_selector('#route[data-agent="support-es"]')
        first_route = time.perf_counter() - t0

        rows = page.locator("#trace tbody tr")
        assert rows.count() == 5  # four rules and the default
        assert page.inner_text("#trace tr.selected").startswith("rules[1] support-es")
        assert "caller.tier" in page.inner_text("#trace tbody")
        assert "department, language" in page.inner_text("#route")

        page.fill("#metadata", '{"caller": {"tier": "vip"}}')
        page.wait_for_selector('#route[data-agent="vip"]')
        assert "queue=priority" in page.inner_text("#route")

        page.fill("#metadata", "{}")
        page.fill("#dialed-number", "0034 910 000 001")  # any spelling of the number
        page.wait_for_selector('#route[data-agent="sales"]')
        assert page.inner_text("#trace tr.selected").startswith("rules[2] sales-line")

        page.fill("#metadata", "[1, 2]")
        page.wait_for_selector("#error:not([hidden])")
        assert "must be a JSON object" in page.inner_text("#error")

        page.fill("#dialed-number", "")
        page.fill("#metadata", METADATA)
        page.wait_for_selector('#route[data-agent="support-es"]')
        page.wait_for_selector("#error[hidden]", state="attached")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        weight = _page_weight(served, serve.port)
        explained = [r for r in served if r.url.endswith("/explain")]
        assert explained
        assert all(r.status == 200 for r in explained)
        for response in explained:
            assert PRIVATE_VALUE.encode() not in response.body()
        assert PRIVATE_VALUE not in page.inner_text("body")
    finally:
        page.close()
    assert SCREENSHOT.stat().st_size > 10_000
    print(
        f"\nplayground: page weight {sum(weight.values())} bytes "
        + ", ".join(f"{k} {v}" for k, v in sorted(weight.items()))
        + f"; time to first route {first_route * 1000:.0f} ms; screenshot {SCREENSHOT}"
    )


def _page_weight(responses: list[Any], port: int) -> dict[str, int]:
    """Body bytes of the page, its script and its styles, as served."""
    base = f"http://127.0.0.1:{port}/playground"
    weight = {}
    for response in responses:
        if response.url.startswith(base):
            weight[Path(response.url).name] = len(response.body())
    assert set(weight) == {"playground", "playground.js", "playground.css"}
    return weight
