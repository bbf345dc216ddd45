"""A standing, bounded fuzz test of the HTTP edge of a real ``lk-metadata serve`` (#14.7).

Seeded (``LK_FUZZ_SEED``, default 1407), bounded in count and time, loopback only.
Each category sends malformed or hostile bytes over a raw socket, with secrets
planted (the bearer key, the LiveKit API secret, metadata values), and checks:

* every answer is a well-formed HTTP/1.1 response with a JSON body and no 5xx;
* no answer echoes a planted secret, and no attack with a broken bearer key gets a 2xx;
* a connection the client keeps open is always answered (no hang past the deadlines);
* the process stays up, and its log holds none of the planted secrets or values;
* ``/metrics`` and ``/openapi.json`` never answer 2xx to a damaged or missing metrics
  key, and ``/readyz`` answers well-formed JSON whatever the request (#22).

The counts per category are printed (``pytest -s``) and attached to the test report.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest

from tests.fixtures.lk_serve import (
    HttpAnswer,
    ServeProcess,
    connect,
    exchange,
    read_answer,
    start_serve,
    stop_serve,
)

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("LK_FUZZ_SEED", "1407"))
DEADLINE = 1.0  # the server's header and body deadlines during the fuzz run
READ_TIMEOUT = DEADLINE + 3.0
FAST_BUDGET = 10.0  # seconds for the fast categories, whatever the machine's load
METRICS_KEY = "fuzz-metrics-key-" + "m" * 20


@dataclass
class Attack:
    """One connection's worth of hostile bytes."""

    category: str
    chunks: list[bytes]
    delay: float = 0.0
    half_close: bool = False
    bad_auth: bool = False
    """The bearer key was damaged: a 2xx would be an authentication bypass."""


@dataclass
class Tally:
    """What the fuzzer saw, per category."""

    tried: Counter[str] = field(default_factory=Counter)
    through: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, attack: Attack, problem: str | None, status: int | None) -> None:
        with self.lock:
            self.tried[attack.category] += 1
            if status is not None:
                self.statuses[status] += 1
            if problem is not None:
                self.through[attack.category] += 1
                if len(self.failures) < 20:
                    self.failures.append(
                        f"{attack.category}: {problem}: {attack.chunks[0][:600]!r}"
                    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    edge = {
        "header_timeout": DEADLINE,
        "body_timeout": DEADLINE,
        "max_connections_per_peer": 256,
        "log_burst": 10_000,  # log every rejection: the strictest check for leaks
    }
    config = {"edge": edge, "rate_limit": None, "metrics_key": METRICS_KEY}
    proc = start_serve(tmp_path_factory.mktemp("fuzz"), config)
    yield proc
    stop_serve(proc)


# --------------------------------------------------------------------------- generators


class Corpus:
    """Builds attacks from the planted secrets and a seeded random source."""

    def __init__(self, server: ServeProcess, rng: random.Random) -> None:
        self.rng = rng
        self.bearer = server.secrets.bearer.encode()
        self.api_secret = server.secrets.api_secret.encode()
        self.value = server.secrets.metadata_value.encode()
        self.body = orjson.dumps(
            {"participant_metadata": orjson.dumps({"note": self.value.decode()}).decode()}
        )

    def request(self, headers: list[bytes], body: bytes = b"", line: bytes | None = None) -> bytes:
        first = line if line is not None else b"POST /token HTTP/1.1"
        return first + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body

    def base_headers(self, auth: bytes | None = None) -> list[bytes]:
        return [
            b"Host: 127.0.0.1",
            b"Authorization: Bearer " + (auth if auth is not None else self.bearer),
            b"Content-Type: application/json",
        ]

    def junk(self, n: int) -> bytes:
        pool = [self.value, self.bearer, self.api_secret, b"\x00", b"\x01", b"\r", b"\n", b" "]
        pool += [b"\x7f", b"\xff", b":", b"%00", b"\t", b"\x1b[31m", "é".encode()]
        return b"".join(self.rng.choice(pool) for _ in range(n))

    def request_lines(self) -> Iterator[Attack]:
        rng = self.rng
        methods = [b"POST", b"GET", b"P\x00ST", b"", b"POST POST", b"\x16\x03\x01", b"G" * 300]
        targets = [
            b"/token",
            b"/token?k=" + self.value,
            b"*",
            b"http://x/token",
            b"/" + self.bearer,
        ]
        targets += [
            b"/%00",
            b"/../../etc/passwd",
            b"/token#" + self.api_secret,
            b"/\x01" + self.value,
        ]
        versions = [
            b"HTTP/1.1",
            b"HTTP/9.9",
            b"HTTP/1.1 x",
            b"HTTP/1",
            b"",
            b"http/1.1",
            b"HTTP/1.1\r",
        ]
        while True:
            line = b" ".join([rng.choice(methods), rng.choice(targets), rng.choice(versions)])
            if rng.random() < 0.3:
                line += self.junk(rng.randint(1, 6))
            body = self.body if rng.random() < 0.5 else b""
            headers = [*self.base_headers(), b"Content-Length: %d" % len(body)]
            yield Attack("request line", [self.request(headers, body, line)])

    def headers(self) -> Iterator[Attack]:
        rng = self.rng
        bad_auth = [
            self.bearer + b"\x01",
            self.bearer + b"\x00" + self.value,
            self.bearer[:-1],
            b"\t" + self.bearer + b"\r",
            self.bearer + b" " + self.api_secret,
            self.api_secret,
        ]
        extras: list[Callable[[], list[bytes]]] = [
            lambda: [b"Connection: close" + self.junk(3)],
            lambda: [self.value + b"\x00: x"],
            lambda: [b"X-No-Colon " + self.value],
            lambda: [b" folded: " + self.value],
            lambda: [b"X-Big: " + self.value * rng.randint(300, 9000)],
            lambda: [b"X-%d: %s" % (i, self.value) for i in range(rng.choice([50, 129, 300]))],
            lambda: [b"Content-Length: 5", b"Content-Length: 6"],
            lambda: [b"Content-Length: -1"],
            lambda: [b"Content-Length: 99999999999999999999"],
            lambda: [b"Content-Length: 1e3"],
            lambda: [b"Transfer-Encoding: chunked, gzip"],
            lambda: [b"Transfer-Encoding: xchunked"],
            lambda: [b"Transfer-Encoding: chunked\x00"],
            lambda: [b"Content-Encoding: gzip"],
            lambda: [b"Content-Type: application/json; charset=" + self.junk(2)],
            lambda: [b"Host: a", b"Host: b"],
            lambda: [b"Expect: 100-continue" + self.junk(1)],
            lambda: [b"Upgrade: websocket", b"Connection: Upgrade"],
            lambda: [b"X-Junk: " + self.junk(rng.randint(1, 20))],
        ]
        while True:
            broken = rng.random() < 0.5
            auth = rng.choice(bad_auth) if broken else None
            headers = self.base_headers(auth) + rng.choice(extras)()
            body = self.body
            if not any(h.lower().startswith(b"content-length") for h in headers):
                headers.append(b"Content-Length: %d" % len(body))
            yield Attack("headers", [self.request(headers, body)], bad_auth=broken)

    def chunked(self) -> Iterator[Attack]:
        rng = self.rng
        data = self.body
        bodies = [
            b"zz" + self.value + b"\r\n" + data + b"\r\n0\r\n\r\n",
            b"%x\r\n%s0\r\n\r\n" % (len(data), data),
            b"%x\r\n%s\r\n" % (len(data) + 5, data),
            b"-1\r\n" + data + b"\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n" + data,
            b"%x;ext=\n%s\r\n" % (len(data), self.value) + data + b"\r\n0\r\n\r\n",
            b"%x\r\n%s\r\n0\r\n%s\r\n\r\n" % (len(data), data, self.value),
            b"%x\n%s\n0\n\n" % (len(data), data),
            b"%x\r\n%s\r\n0\r\nX-T: %s\x00\r\n\r\n" % (len(data), data, self.value),
            b"1\r\n{\r\n" * 3 + self.junk(10),
        ]
        while True:
            headers = [*self.base_headers(), b"Transfer-Encoding: chunked"]
            body = rng.choice(bodies)
            if rng.random() < 0.3:
                cut = rng.randint(1, len(body))
                yield Attack("chunked", [self.request(headers, body[:cut])], half_close=True)
            else:
                yield Attack("chunked", [self.request(headers, body)])

    def truncated(self) -> Iterator[Attack]:
        rng = self.rng
        while True:
            headers = [*self.base_headers(), b"Content-Length: %d" % (len(self.body) + 50)]
            request = self.request(headers, self.body)
            cut = rng.randint(1, len(request))
            yield Attack("truncated", [request[:cut]], half_close=True)

    def valid(self) -> Iterator[Attack]:
        headers = [*self.base_headers(), b"Content-Length: %d" % len(self.body)]
        while True:
            yield Attack("valid", [self.request(headers, self.body)])

    def metrics(self) -> Iterator[Attack]:
        """Operator endpoints with a damaged, foreign or missing metrics key."""
        rng = self.rng
        key = METRICS_KEY.encode()
        paths = [b"/metrics", b"/openapi.json", b"/metrics?x=" + self.value, b"/metrics/"]
        paths += [b"//metrics", b"/METRICS", b"/openapi.json?" + self.api_secret]
        auths: list[bytes | None] = [
            None,
            b"Bearer " + key[:-1],
            b"Bearer " + key + b"x",
            b"Bearer " + key[:16],
            b"Bearer " + key + b"\x00",
            b"Basic " + key,
            b"Bearer",
            b"bearer  " + key.upper(),
            b"Bearer " + self.bearer,
            b"Bearer " + self.api_secret,
            b"Bearer " + key * 200,
            b"Bearer " + self.junk(8),
        ]
        while True:
            auth = rng.choice(auths)
            headers = [b"Host: 127.0.0.1"]
            if auth is not None:
                headers.append(b"Authorization: " + auth)
            if rng.random() < 0.3:
                headers.append(b"X-Junk: " + self.junk(rng.randint(1, 10)))
            line = b"GET " + rng.choice(paths) + b" HTTP/1.1"
            yield Attack("metrics", [self.request(headers, b"", line)], bad_auth=True)

    def readyz(self) -> Iterator[Attack]:
        """The readiness probe under odd methods, queries, headers and bodies."""
        rng = self.rng
        lines = [
            b"GET /readyz HTTP/1.1",
            b"GET /readyz HTTP/1.0",
            b"GET /readyz?" + self.value + b" HTTP/1.1",
            b"POST /readyz HTTP/1.1",
            b"DELETE /readyz HTTP/1.1",
            b"GET /readyz/ HTTP/1.1",
            b"GET /readyz%00 HTTP/1.1",
            b"OPTIONS /readyz HTTP/1.1",
        ]
        while True:
            headers = [b"Host: 127.0.0.1"]
            body = b""
            if rng.random() < 0.4:
                body = self.body if rng.random() < 0.5 else self.junk(rng.randint(1, 40))
                headers.append(b"Content-Length: %d" % len(body))
            if rng.random() < 0.3:
                headers.append(b"Authorization: Bearer " + self.junk(4))
            if rng.random() < 0.2:
                headers.append(b"Connection: close")
            yield Attack("readyz", [self.request(headers, body, rng.choice(lines))])

    def slow(self) -> Iterator[Attack]:
        rng = self.rng
        while True:
            headers = [*self.base_headers(), b"Content-Length: 100000"]
            request = self.request(headers, self.body)
            if rng.random() < 0.5:  # slow body: all headers, then a byte now and then
                yield Attack("slow", [request, b"x", b"y", b"z", b"w"], delay=0.6)
            else:  # slow headers
                step = max(1, len(request) // 40)
                parts = [request[i : i + step] for i in range(0, 6 * step, step)]
                yield Attack("slow", parts, delay=0.5)


# --------------------------------------------------------------------------- checks


def run_attack(port: int, attack: Attack, source: str) -> tuple[HttpAnswer | None, bool]:
    """Send one attack; return the answer (None: none) and whether sending was cut short."""
    cut_short = False
    with connect(port, source=source, timeout=READ_TIMEOUT) as sock:
        for i, chunk in enumerate(attack.chunks):
            if i and attack.delay:
                time.sleep(attack.delay)
            try:
                sock.sendall(chunk)
            except OSError:
                cut_short = True
                break
        if attack.half_close and not cut_short:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                cut_short = True
        answer = read_answer(sock, timeout=READ_TIMEOUT)
    return (answer if answer.status is not None else None), cut_short


def judge(
    attack: Attack, answer: HttpAnswer | None, cut_short: bool, planted: tuple[bytes, ...]
) -> str | None:
    """What is wrong with the server's reaction to ``attack`` (None: nothing)."""
    if answer is None:
        if attack.half_close or cut_short:
            return None  # the client went away (or was cut off) before any answer
        return "no answer on a connection the client kept open"
    status = answer.status
    assert status is not None
    if status >= 500:
        return f"status {status}"
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"status {status} with content-type {answer.headers.get('content-type')!r}"
    try:
        body = answer.json()
    except orjson.JSONDecodeError:
        return f"status {status} with a body that is not JSON"
    if status >= 400 and not (isinstance(body, dict) and set(body) == {"error"}):
        return f"status {status} without the error body shape"
    if "aiohttp" in answer.headers.get("server", "") or "Python" in answer.headers.get(
        "server", ""
    ):
        return "Server header names a version"
    if any(secret in answer.raw for secret in planted):
        return "a planted secret echoed in the answer"
    if attack.bad_auth and 200 <= status < 300:
        return "a damaged bearer key was accepted"
    if attack.category == "valid" and status != 201:
        return f"a valid request got {status}"
    return None


def fuzz(server: ServeProcess, corpus: Corpus, tally: Tally, planted: tuple[bytes, ...]) -> None:
    """Fast categories round-robin until each reaches its count or the time budget ends."""
    counts = {
        "request line": 120,
        "headers": 160,
        "chunked": 100,
        "truncated": 60,
        "valid": 30,
        "metrics": 80,
        "readyz": 60,
    }
    sources = {name: f"127.0.0.{40 + i}" for i, name in enumerate(counts)}
    streams = {
        "request line": corpus.request_lines(),
        "headers": corpus.headers(),
        "chunked": corpus.chunked(),
        "truncated": corpus.truncated(),
        "valid": corpus.valid(),
        "metrics": corpus.metrics(),
        "readyz": corpus.readyz(),
    }
    stop_at = time.monotonic() + FAST_BUDGET
    while time.monotonic() < stop_at and any(tally.tried[n] < c for n, c in counts.items()):
        for name, stream in streams.items():
            if tally.tried[name] >= counts[name]:
                continue
            attack = next(stream)
            answer, cut_short = run_attack(server.port, attack, sources[name])
            tally.record(
                attack, judge(attack, answer, cut_short, planted), answer and answer.status
            )


def fuzz_slow(
    server: ServeProcess, corpus: Corpus, tally: Tally, planted: tuple[bytes, ...]
) -> None:
    """Slow senders, all at once, each on its own connection."""
    attacks = [next(corpus.slow()) for _ in range(12)]

    def one(attack: Attack) -> None:
        answer, cut_short = run_attack(server.port, attack, "127.0.0.60")
        tally.record(attack, judge(attack, answer, cut_short, planted), answer and answer.status)

    threads = [threading.Thread(target=one, args=(a,)) for a in attacks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def test_the_edge_survives_a_seeded_bounded_fuzz_run(
    server: ServeProcess, record_property: Callable[[str, object], None]
) -> None:
    """Hundreds of hostile connections: every answer well-formed JSON, nothing leaks, no 5xx."""
    corpus = Corpus(server, random.Random(SEED))
    planted = tuple(s.encode() for s in server.secrets.all())
    tally = Tally()
    slow = threading.Thread(target=fuzz_slow, args=(server, corpus, tally, planted))
    slow.start()  # the slow senders wait out their deadlines while the fast ones run
    fuzz(server, Corpus(server, random.Random(SEED + 1)), tally, planted)
    slow.join(timeout=60)

    health = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    ready = exchange(server.port, b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
    metrics = exchange(
        server.port,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n"
        % METRICS_KEY.encode(),
    )
    time.sleep(0.2)
    log = server.log_bytes()
    leaked = [s for s in planted if s in log]
    summary = {
        "seed": SEED,
        "tried": dict(tally.tried),
        "got_through": dict(tally.through),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "secrets_in_log": len(leaked),
        "answers_5xx": sum(n for s, n in tally.statuses.items() if s >= 500),
    }
    leaked_key = METRICS_KEY.encode() in log
    record_property("fuzz_summary", summary)
    print("\nfuzz summary:", orjson.dumps(summary).decode())

    assert server.alive()
    assert health.status == 200
    assert ready.status == 200
    assert metrics.status == 200
    assert not leaked_key
    assert b'status="5' not in metrics.body
    assert tally.failures == []
    assert leaked == []
    assert b"Traceback" not in log
    assert sum(tally.tried.values()) >= 300
    assert tally.tried["slow"] == 12
    assert set(tally.tried) == {
        "request line",
        "headers",
        "chunked",
        "truncated",
        "valid",
        "slow",
        "metrics",
        "readyz",
    }
    assert tally.tried["metrics"] >= 40
    assert tally.tried["readyz"] >= 30
