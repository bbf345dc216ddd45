"""Regression tests for #22 against a real ``lk-metadata serve`` process and real Redis.

Each test reproduces what got through in the second hardening round, over raw
sockets (tests/fixtures/lk_serve.py), and checks it no longer does:

1. one principal filling the shared session cap for everyone (a share per principal,
   per client address for anonymous callers, shared by replicas on one Redis);
2. guessing the metrics key (too short a key; wrong keys never rate limited);
3. limits failing open on corrupt values in Redis (``1e30``, ``inf``...);
5. ``/healthz`` saying 200 while Redis is down (``/readyz`` answers 503 now);
6. ``--workers N`` multiplying the per-peer connection cap and per-peer limits.

(#22.4 is in tests/test_e2e_telephony.py, #22.7 in tests/test_hardening_files.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from tests.fixtures.lk_serve import (
    ROOT,
    HttpAnswer,
    ServeProcess,
    connect,
    exchange,
    read_answer,
    serve_env,
    start_serve,
    stop_serve,
)

pytestmark = pytest.mark.integration

LIMITS = "lkmeta-limits:{limits}"
"""The limits' key prefix for the default store prefix ``lkmeta:``."""
KEY_A = "tenant-a-key-0123456789abcdef"
KEY_B = "tenant-b-key-0123456789abcdef"
METRICS_KEY = "metrics-key-" + "k" * 24


def post(
    server: ServeProcess, bearer: str | None = None, *, source: str = "127.0.0.1"
) -> HttpAnswer:
    body = b'{"participant_metadata": "{\\"n\\": 1}"}'
    auth = b"" if bearer is None else b"Authorization: Bearer " + bearer.encode() + b"\r\n"
    request = (
        b"POST /token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + auth
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    return exchange(server.port, request, timeout=15.0, source=source)


def get(
    server: ServeProcess, path: str, bearer: str | None = None, *, source: str = "127.0.0.1"
) -> HttpAnswer:
    auth = b"" if bearer is None else b"Authorization: Bearer " + bearer.encode() + b"\r\n"
    request = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n"
    return exchange(server.port, request, timeout=15.0, source=source)


def code(answer: HttpAnswer) -> str:
    return str(answer.json()["error"]["code"])


@pytest.fixture
def serve(tmp_path: Path) -> Any:
    started: list[ServeProcess] = []

    def start(config: dict[str, Any], args: tuple[str, ...] = ()) -> ServeProcess:
        proc = start_serve(tmp_path, config, args=args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_serve(proc)


def tenants(**extra: Any) -> dict[str, Any]:
    return {
        "keys": [
            {"id": "tenant-a", "key": KEY_A, **extra},
            {"id": "tenant-b", "key": KEY_B},
        ]
    }


# --------------------------------------------------------------------------- 1. share


def test_one_tenant_cannot_fill_the_session_cap_for_another(
    serve: Callable[..., ServeProcess], redis_url: str
) -> None:
    """#22.1: max_sessions 30; tenant A gets its share (a tenth: 3) and then 503
    store_share_full, across two replicas on one Redis; tenant B still gets tokens."""
    config = {"store": redis_url, "max_sessions": 30, "rate_limit": None, "auth": tenants()}
    first, second = serve(config), serve(config)
    answers = [post(replica, KEY_A) for replica in (first, second) * 15]
    statuses = Counter(a.status for a in answers)
    assert statuses == {201: 3, 503: 27}
    refused = [a for a in answers if a.status == 503]
    assert {code(a) for a in refused} == {"store_share_full"}
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    for replica in (first, second):
        assert post(replica, KEY_B).status == 201
    metrics = get(first, "/metrics").body.decode()
    assert 'lk_metadata_refusals_total{reason="store_share_full"}' in metrics


def test_a_key_has_its_own_share_and_anonymous_callers_one_per_address(
    serve: Callable[..., ServeProcess], redis_url: str
) -> None:
    config = {
        "store": redis_url,
        "max_sessions": 100,
        "max_sessions_per_principal": 2,
        "rate_limit": None,
        "auth": {**tenants(max_sessions=4), "allow_anonymous": True},
    }
    server = serve(config)
    assert [post(server, KEY_A).status for _ in range(5)] == [201] * 4 + [503]
    assert [post(server, KEY_B).status for _ in range(3)] == [201, 201, 503]
    one = [post(server, source="127.0.0.21").status for _ in range(3)]
    other = [post(server, source="127.0.0.22").status for _ in range(3)]
    assert one == other == [201, 201, 503]


# --------------------------------------------------------------------------- 2. metrics key


def test_a_short_metrics_key_is_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "server.json"
    config.write_bytes(orjson.dumps({"metrics_key": "ab", "auth": {"allow_anonymous": True}}))
    result = subprocess.run(
        [sys.executable, "-m", "livekit.plugins.metadata.cli", "serve", "-c", str(config)],
        capture_output=True,
        timeout=60,
        env=serve_env(),
        cwd=ROOT,
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "metrics_key must be at least 16 characters" in err
    assert "'ab'" not in err


def test_wrong_metrics_keys_count_as_failed_authentications(
    serve: Callable[..., ServeProcess], redis_url: str
) -> None:
    """#22.2: 35 wrong keys on /metrics and /openapi.json: 10 x 401 (the failed-auth
    burst), then 429 auth_rate_limited; the right key still works from elsewhere."""
    server = serve({"store": redis_url, "metrics_key": METRICS_KEY})
    attacker = "127.0.0.31"
    answers = [
        get(server, path, f"guess-{i:02d}", source=attacker)
        for i, path in enumerate(["/metrics", "/openapi.json"] * 17 + ["/metrics"])
    ]
    statuses = [a.status for a in answers]
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    assert {code(a) for a in answers[10:]} == {"auth_rate_limited"}
    assert get(server, "/metrics", METRICS_KEY, source=attacker).status == 429  # blocked
    ok = get(server, "/metrics", METRICS_KEY, source="127.0.0.32")
    assert ok.status == 200
    assert 'lk_metadata_refusals_total{reason="auth_limited"}' in ok.body.decode()
    assert METRICS_KEY.encode() not in server.log_bytes()


def test_the_metrics_key_may_be_given_as_sha256(
    serve: Callable[..., ServeProcess], redis_url: str
) -> None:
    digest = hashlib.sha256(METRICS_KEY.encode()).hexdigest()
    server = serve({"store": redis_url, "metrics_key_sha256": digest})
    assert get(server, "/metrics", METRICS_KEY).status == 200
    assert get(server, "/metrics", METRICS_KEY[:-1]).status == 401
    assert get(server, "/metrics").status == 401


# --------------------------------------------------------------------------- 3. corrupt limits


CORRUPT = ("1e30", "inf", "-inf", "nan", "abc", "-5", "1e308")


def test_corrupt_rate_values_fail_closed(
    serve: Callable[..., ServeProcess], redis_url: str
) -> None:
    """#22.3: a bucket value that is not a finite number in range reads as an empty
    bucket: no request gets through a 0.2/s limit (before: 12 of 12 with 1e30 or inf);
    each is repaired, counted in /metrics, and the first is logged once."""
    server = serve({"store": redis_url, "rate_limit": {"rate": 0.2, "burst": 1}})
    bucket = LIMITS + "rate:principal:tester"
    client = redis.Redis.from_url(redis_url)
    try:
        for corrupt in CORRUPT:
            client.set(bucket, corrupt)
            answers = [post(server, server.secrets.bearer) for _ in range(4)]
            assert [a.status for a in answers] == [429] * 4, corrupt
            assert {code(a) for a in answers} == {"rate_limited"}
            assert math.isfinite(float(client.get(bucket) or b"nan")), corrupt
    finally:
        client.close()
    metrics = get(server, "/metrics").body.decode()
    line = next(x for x in metrics.splitlines() if x.startswith("lk_metadata_limits_corrupt"))
    assert float(line.split()[-1]) >= len(CORRUPT)
    assert server.log_bytes().count(b"corrupt value(s) in the limits store") == 1


def test_corrupt_session_expiries_still_count_and_are_pulled_back(
    serve: Callable[..., ServeProcess], redis_url: str
) -> None:
    """#22.3: members with an endless expiry in the session set keep counting (the cap is
    full: 503 store_full, never a 201 or a 500) and their expiries become finite."""
    server = serve(
        {"store": redis_url, "rate_limit": None, "max_sessions": 2, "max_sessions_per_principal": 2}
    )
    client = redis.Redis.from_url(redis_url)
    try:
        client.zadd(LIMITS + "sessions", {"planted-1": float("inf"), "planted-2": 1e30})
        answer = post(server, server.secrets.bearer)
        assert answer.status == 503
        assert code(answer) == "store_full"
        scores = [s for _, s in client.zrange(LIMITS + "sessions", 0, -1, withscores=True)]
        assert len(scores) == 2
        assert all(math.isfinite(s) and s < 1e20 for s in scores)
        assert client.pttl(LIMITS + "sessions") > 0
    finally:
        client.close()


# --------------------------------------------------------------------------- 5. readiness


def test_readyz_is_503_with_a_reason_while_redis_is_down(
    serve: Callable[..., ServeProcess], redis_server_factory: Callable[..., Any]
) -> None:
    """#22.5: /healthz stays liveness (200); /readyz says 503 store_unavailable in JSON."""
    private = redis_server_factory()
    server = serve({"store": private.url})
    ready = get(server, "/readyz")
    assert ready.status == 200
    assert ready.json() == {"status": "ready"}
    private.kill()
    answer = get(server, "/readyz")
    assert answer.status == 503
    body = answer.json()
    assert body["status"] == "unready"
    assert body["error"]["code"] == "store_unavailable"
    assert "session store" in body["error"]["message"]
    assert answer.headers["content-type"].startswith("application/json")
    assert get(server, "/healthz").status == 200
    assert post(server, server.secrets.bearer).status == 503


# --------------------------------------------------------------------------- 6. workers


def test_the_per_peer_connection_cap_holds_across_workers(
    serve: Callable[..., ServeProcess], redis_url: str
) -> None:
    """#22.6: with --workers 2 and a cap of 8, 20 connections held open from one address
    get exactly 8 served; the other 12 are refused 429 (before: 16 were held)."""
    edge = {"max_connections_per_peer": 8, "header_timeout": 120}
    server = serve({"store": redis_url, "edge": edge}, ("--workers", "2"))
    source = "127.0.0.51"
    socks: list[socket.socket] = [connect(server.port, source=source) for _ in range(20)]
    try:
        statuses: Counter[int | None] = Counter()
        for sock in socks:
            with contextlib.suppress(OSError):  # refused and closed: its 429 is readable
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            statuses[read_answer(sock, timeout=15.0).status] += 1
    finally:
        for sock in socks:
            sock.close()
    assert statuses[200] == 8
    assert statuses[200] + statuses[429] + statuses[None] == 20
    assert statuses[429] >= 1


def test_per_peer_limits_hold_across_workers_on_redis(
    serve: Callable[..., ServeProcess], redis_url: str
) -> None:
    config = {
        "store": redis_url,
        "rate_limit": None,
        "peer_rate_limit": {"rate": 0.01, "burst": 5},
    }
    server = serve(config, ("--workers", "2"))
    statuses = Counter(
        post(server, server.secrets.bearer, source="127.0.0.52").status for _ in range(20)
    )
    assert statuses == {201: 5, 429: 15}


def test_memory_workers_state_the_effective_limits(serve: Callable[..., ServeProcess]) -> None:
    """#22.6: with store: memory the limits cannot be shared: the start-up line says the
    numbers the whole server enforces."""
    config = {
        "max_sessions": 40,
        "rate_limit": {"rate": 2, "burst": 5},
        "peer_rate_limit": {"rate": 1, "burst": 5},
    }
    server = serve(config, ("--workers", "2"))
    log = server.log_bytes().decode()
    assert "store: memory with 2 workers" in log
    assert "max_sessions 80 (2 x 40)" in log
    assert "sessions per principal 8 (2 x 4)" in log
    assert "rate_limit 4/s, burst 10 (2 x 2/s, burst 5)" in log
    assert "peer_rate_limit 2/s, burst 10 (2 x 1/s, burst 5)" in log
    assert "connection cap per client address (64) holds for the whole server" in log
