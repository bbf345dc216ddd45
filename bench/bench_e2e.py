"""End-to-end dispatch latency against a real livekit-server: token minted -> route visible.

One local-only livekit-server (``tests/fixtures/livekit_server.py``) and two real
worker processes (``tests/e2e_agent.py``, THREAD executor) registered under two
agent names. Each sample is one join, timed from just before the token is minted
until the agent's ``route`` attribute is visible to the joined Python rtc
participant (connect, ICE, dispatch, job start, the entrypoint's work and one
attribute round trip included):

* ``bare`` (baseline): ``livekit.api.AccessToken`` with an explicit dispatch; the
  entrypoint connects, waits for the caller and publishes ``route`` — no plugin code;
* ``plugin``: ``TokenIssuer(router=...)`` mints the token and routes the dispatch
  from the metadata; the entrypoint runs ``MetadataAdapter.attach`` (job and caller
  metadata into a SessionManager), routes with the same rules and publishes
  ``route`` and the session.

Samples alternate between the cases (interleaved), each in a new room. The figure
is the median over the joins with min–max, and the time ratio against ``bare``
measured in the same run; the difference of the medians is the adapter + issuer +
router overhead as a caller sees it.

Run: ``uv run python -m bench.bench_e2e`` (about a minute). ``run(quick=True)`` and a
missing livekit-server binary print why and return no table.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import Result, Table, format_table

__all__ = ["RULES", "run"]

_BARE = "bench-bare"
_PLUGIN = "bench-plugin"
RULES = {
    "worker": _PLUGIN,
    "rules": [
        {
            "name": "support-es",
            "when": {"department": "support", "language": "es"},
            "agent": "support-es",
        },
        {"name": "support", "when": {"department": "support"}, "agent": "support"},
        {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
    ],
    "default": "general",
}
_METADATA = {"department": "support", "language": "es", "caller": {"tier": "gold", "id": 7}}


async def _sample(server: Any, issuer: Any, case: str, index: int) -> float:
    from livekit import api

    from tests.fixtures.e2e import (
        connected_room,
        plain_token,
        unique_room,
        wait_for_remote_attribute,
    )

    room = unique_room(f"bench-{case}-{index}")
    metadata = dict(_METADATA)
    t0 = time.perf_counter()
    if case == "bare":
        token = plain_token(
            server,
            "caller",
            room,
            metadata='{"department":"support","language":"es","caller":{"tier":"gold","id":7}}',
            agents=[api.RoomAgentDispatch(agent_name=_BARE)],
        )
    else:
        token = issuer.mint("caller", room, metadata=metadata, job_metadata=metadata)
    async with connected_room(server, token) as joined:
        _, value = await wait_for_remote_attribute(joined, "route")
        elapsed = time.perf_counter() - t0
    expected = "bare" if case == "bare" else "support-es"
    if value != expected:
        raise RuntimeError(f"{case}: route attribute {value!r}, expected {expected!r}")
    return elapsed


def run(quick: bool = False) -> list[Table]:
    """Measure dispatch latency for the bare and the plugin path; [] without a server binary."""
    from tests.fixtures.e2e import REPO, worker_processes
    from tests.fixtures.livekit_server import find_binary, running_livekit_server

    if quick:
        # A real server plus two worker processes take 20-30 s to start on a busy
        # 2-core machine: more than the whole --quick budget.
        print(
            "bench_e2e: skipped in --quick mode (server + two workers take ~30 s to start); "
            "run `uv run python -m bench.bench_e2e`",
            file=sys.stderr,
        )
        return []
    binary = find_binary()
    if binary is None:
        reason = "skipped: no livekit-server binary (bash .ci/install-livekit-server)"
        print(f"bench_e2e: {reason}", file=sys.stderr)
        return [Table("Dispatch latency", [], note=reason)]
    joins = 25
    workdir = Path(tempfile.mkdtemp(prefix="lkmeta-bench-e2e-"))
    rules = workdir / "rules.json"
    rules.write_text(json.dumps(RULES))
    results = {
        "bare": Result("bare entrypoint (AccessToken)", baseline=True),
        "plugin": Result("TokenIssuer+router -> adapter.attach+route"),
    }
    from livekit.plugins.metadata.routing.router import MetadataRouter
    from livekit.plugins.metadata.tokens.issuer import TokenIssuer

    with running_livekit_server(binary, workdir=workdir / "server") as server:
        issuer = TokenIssuer(
            server.api_key, server.api_secret, router=MetadataRouter.from_dict(RULES)
        )
        agent = str(REPO / "tests" / "e2e_agent.py")
        with worker_processes(
            server,
            [
                [agent, "--agent-name", _BARE, "--mode", "bare"],
                [agent, "--agent-name", _PLUGIN, "--mode", "adapter", "--rules", str(rules)],
            ],
            log_dir=workdir,
        ):

            async def measure_all() -> None:
                # one warm-up join per case (first job start imports and warms caches)
                for case in ("bare", "plugin"):
                    await _sample(server, issuer, case, -1)
                for i in range(joins):
                    order = ("bare", "plugin") if i % 2 == 0 else ("plugin", "bare")
                    for case in order:
                        results[case].per_op.append(await _sample(server, issuer, case, i))

            asyncio.run(measure_all())
    table = Table(
        f"Dispatch latency: token minted -> `route` attribute visible ({joins} joins per case)",
        [results["bare"], results["plugin"]],
        note=(
            "Real livekit-server v1.13.5 on loopback, real worker processes (THREAD executor), "
            "Python rtc participant; each join in a new room, cases interleaved. 'rate' is "
            "joins/s for one caller at a time. Median of the per-join latency."
        ),
    )
    return [table]


if __name__ == "__main__":
    for t in run(quick="--quick" in sys.argv):
        print(format_table(t))
