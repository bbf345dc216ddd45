"""The token server's Prometheus metrics, per replica, in a private registry (one per app):
plain ints on the request path, made into families at scrape time."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

__all__ = ["Metrics"]

_MINT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


def _counter(name: str, doc: str, labels: list[str], values: dict[Any, int]) -> Any:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric([str(k) for k in (key if isinstance(key, tuple) else (key,))], n)
    return family


class Metrics:
    """Request, route, mint-time and refusal counters of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests: dict[tuple[str, int], int] = {}
        self.routes: dict[tuple[str, str], int] = {}
        self.refusals: dict[str, int] = {}
        self.mint_buckets = [0] * (len(_MINT_BUCKETS) + 1)
        self.mint_sum = 0.0
        self.sessions_created = 0
        self.limits_corrupt: Callable[[], int] = lambda: 0  # set by the app
        self.registry.register(self)

    def count(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def route(self, agent: str, source: str) -> None:
        key = (agent, source)
        self.routes[key] = self.routes.get(key, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def observe_mint(self, seconds: float) -> None:
        self.mint_buckets[bisect.bisect_left(_MINT_BUCKETS, seconds)] += 1
        self.mint_sum += seconds

    def collect(self) -> Iterator[Any]:
        yield _counter(
            "lk_metadata_http_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            self.requests,
        )
        mint = HistogramMetricFamily(
            "lk_metadata_mint_seconds", "Time spent minting one access token."
        )
        cumulative, buckets = 0, []
        for bound, n in zip((*map(repr, _MINT_BUCKETS), "+Inf"), self.mint_buckets, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        mint.add_metric([], buckets, self.mint_sum)
        yield mint
        yield _counter(
            "lk_metadata_routes",
            "Tokens minted, by dispatched agent ('' = no dispatch) and how it was chosen.",
            ["agent", "source"],
            self.routes,
        )
        yield _counter(
            "lk_metadata_refusals",
            "Refused token requests worth watching: failed_auth (bad or missing credentials), "
            "auth_limited (a peer over the failed-auth limit), store_full (session cap reached), "
            "store_share_full (a principal's share of the cap reached).",
            ["reason"],
            self.refusals,
        )
        yield CounterMetricFamily(
            "lk_metadata_token_sessions",
            "Token sessions this replica has created (they expire on their own).",
            value=self.sessions_created,
        )
        yield CounterMetricFamily(
            "lk_metadata_limits_corrupt_values",
            "Corrupt values read back from the limits store, read as exhausted and repaired.",
            value=self.limits_corrupt(),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
