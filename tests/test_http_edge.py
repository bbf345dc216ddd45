"""The HTTP edge of a real ``lk-metadata serve`` process, spoken to over raw sockets.

Issue #14 items 1, 2 and the ``Server`` header: requests aiohttp's parser rejects
get the endpoint's JSON error body, the log carries no request bytes and grows by
a bounded amount per peer, slow senders meet a read deadline (408, connection
closed), one peer cannot hold more than its share of connections, and the
``Server`` header names no aiohttp or Python version.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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

EDGE = {
    "header_timeout": 1.5,
    "body_timeout": 1.5,
    "max_connections_per_peer": 8,
    "log_burst": 5,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    proc = start_serve(tmp_path_factory.mktemp("edge"), {"edge": EDGE})
    yield proc
    stop_serve(proc)


def assert_json_error(answer: HttpAnswer, status: int) -> dict[str, str]:
    assert answer.status == status, answer.raw[:300]
    assert answer.headers.get("content-type", "").startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert all(isinstance(v, str) and v for v in body["error"].values())
    return dict(body["error"])


def malformed_requests(server: ServeProcess) -> dict[str, bytes]:
    key = server.secrets.bearer.encode()
    value = server.secrets.metadata_value.encode()
    md = b'{"participant_metadata": "{\\"v\\": \\"' + value + b'\\"}"}'
    return {
        "control byte after the bearer key": (
            b"POST /token HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + key + b"\x01\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(md)).encode() + b"\r\n"
            b"\r\n" + md
        ),
        "bytes after Connection: close": (
            b"POST /token HTTP/1.1\r\nHost: t\r\nConnection: close\x00" + value + b"\r\n"
            b"Authorization: Bearer " + key + b"\r\n\r\n"
        ),
        "header line without a colon": (
            b"POST /token HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
            + key
            + b"\r\n"
            + value
            + b"\r\n\r\n"
        ),
        "bad chunk size": (
            b"POST /token HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + key + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz" + value + b"\r\n" + md + b"\r\n0\r\n\r\n"
        ),
        "bad request line": b"POST /token?" + value + b" HTTP/9.9 extra\r\nHost: t\r\n\r\n",
        "chunked and content-length together": (
            b"POST /token HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + key + b"\r\n"
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n" + value[:5] + b"\r\n"
        ),
    }


CASES = [
    "control byte after the bearer key",
    "bytes after Connection: close",
    "header line without a colon",
    "bad chunk size",
    "bad request line",
    "chunked and content-length together",
]


@pytest.mark.parametrize("case", CASES)
def test_a_request_the_parser_rejects_gets_the_json_400_and_leaks_nothing(
    server: ServeProcess, case: str
) -> None:
    """A malformed request is answered with the endpoint's JSON 400; no secret in answer or log."""
    before = server.log_size()
    answer = exchange(server.port, malformed_requests(server)[case])
    error = assert_json_error(answer, 400)
    assert error["code"] == "bad_request"
    assert answer.headers.get("connection", "").lower() == "close"
    for secret in server.secrets.all():
        assert secret.encode() not in answer.raw
    added = server.log_bytes()[before:]
    for secret in server.secrets.all():
        assert secret.encode() not in added
    assert b"Traceback" not in added


def test_the_rejection_log_line_names_the_error_class_the_peer_and_a_length(
    server: ServeProcess,
) -> None:
    """The log line for a malformed request carries the class, the peer and a byte count only."""
    request = malformed_requests(server)["header line without a colon"]
    before = server.log_size()
    exchange(server.port, request, source="127.0.0.21")
    time.sleep(0.2)
    added = server.log_bytes()[before:].decode("utf-8", "replace")
    lines = [line for line in added.splitlines() if "malformed HTTP request" in line]
    assert len(lines) == 1, added
    assert lines[0].endswith(f"from 127.0.0.21 (BadHttpMessage, {len(request)} bytes)"), lines[0]


def test_twenty_large_bad_requests_add_a_bounded_amount_to_the_log(server: ServeProcess) -> None:
    """20 bad requests of 120 KB each add kilobytes to the log, not megabytes."""
    filler = (server.secrets.bearer + server.secrets.metadata_value).encode() * 2000
    big = b"POST /token HTTP/1.1\r\nHost: t\r\nX-Pad: " + filler[:120_000] + b"\r\n\r\n"
    assert len(big) > 120_000
    before = server.log_size()
    statuses = [exchange(server.port, big, source="127.0.0.22").status for _ in range(20)]
    time.sleep(0.2)
    added = server.log_bytes()[before:]
    assert statuses == [400] * 20
    lines = added.decode("utf-8", "replace").splitlines()
    assert len([line for line in lines if "127.0.0.22" in line]) == EDGE["log_burst"]
    assert len(added) < 2_000, added[:2000]
    for secret in server.secrets.all():
        assert secret.encode() not in added


def test_an_unknown_expect_value_is_refused_in_json_without_echoing_it(
    server: ServeProcess,
) -> None:
    """aiohttp's own 417 echoes the ``Expect`` value; the edge answers the JSON body instead."""
    value = server.secrets.metadata_value.encode()
    answer = exchange(
        server.port,
        b"POST /token HTTP/1.1\r\nHost: t\r\nExpect: 100-continue" + value + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    error = assert_json_error(answer, 417)
    assert error["code"] == "expectation_failed"
    assert value not in answer.raw
    not_utf8 = exchange(
        server.port,
        b"POST /token HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\xff\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert_json_error(not_utf8, 417)  # aiohttp alone fails with a 500 here
    proceed = exchange(
        server.port,
        token_request(server).replace(b"Host: t\r\n", b"Host: t\r\nExpect: 100-continue\r\n"),
    )
    assert proceed.status == 201  # the one expectation we support still works


# --------------------------------------------------------------------------- Server header


def test_the_server_header_names_no_aiohttp_or_python_version(server: ServeProcess) -> None:
    """Every answer, from the app or from the edge, says only ``lk-metadata``."""
    ok = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    missing = exchange(server.port, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
    bad = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n")
    assert (ok.status, missing.status, bad.status) == (200, 404, 400)
    for answer in (ok, missing, bad):
        value = answer.headers.get("server", "")
        assert value == "lk-metadata"
        assert "aiohttp" not in answer.raw.decode("latin-1").lower()
        assert "python" not in answer.raw.decode("latin-1").lower()


# --------------------------------------------------------------------------- slow senders


def test_headers_sent_one_byte_a_second_meet_the_header_deadline(server: ServeProcess) -> None:
    """A slowloris on the headers gets a JSON 408 and a closed connection within the deadline."""
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 10 + b"\r\n\r\n"
    started = time.monotonic()
    answer = exchange(server.port, [head[i : i + 1] for i in range(len(head))], delay=1.0)
    elapsed = time.monotonic() - started
    error = assert_json_error(answer, 408)
    assert error["code"] == "request_timeout"
    assert answer.headers.get("connection", "").lower() == "close"
    assert elapsed < len(head) - 5  # answered long before the last byte would have arrived


def test_a_body_sent_one_byte_a_second_meets_the_body_deadline(server: ServeProcess) -> None:
    """``Content-Length: 100000`` then one byte a second: JSON 408, connection closed."""
    head = (
        b"POST /token HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + server.secrets.bearer.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(1.0):
                try:
                    sock.sendall(b" ")
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            answer = read_answer(sock, timeout=8)
            closed = sock.recv(1) == b""
        finally:
            stop.set()
            sender.join(timeout=3)
    error = assert_json_error(answer, 408)
    assert error["code"] == "request_timeout"
    assert answer.headers.get("connection", "").lower() == "close"
    assert closed


def test_one_peer_cannot_hold_more_than_its_connection_cap(server: ServeProcess) -> None:
    """Connections over the per-peer cap are answered 429 JSON and closed; freed slots come back."""
    peer = "127.0.0.23"
    held = [connect(server.port, source=peer) for _ in range(8)]
    try:
        time.sleep(0.3)
        other = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert other.status == 200  # another address is not affected
        refused = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", source=peer)
        error = assert_json_error(refused, 429)
        assert error["code"] == "too_many_connections"
        assert refused.headers.get("retry-after") == "1"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    answer = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", source=peer)
    assert answer.status == 200


def test_a_kept_alive_connection_serves_requests_in_turn(server: ServeProcess) -> None:
    """The header deadline starts per request: a kept-alive connection still serves in turn."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_answer(sock).status == 200
            time.sleep(1.0)  # idle between requests, under the keep-alive timeout


# --------------------------------------------------------------------------- --workers


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def token_request(server: ServeProcess) -> bytes:
    body = b'{"participant_metadata": "{\\"department\\": \\"sales\\"}"}'
    return (
        b"POST /token HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + server.secrets.bearer.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def test_two_workers_answer_every_request_of_a_bounded_load(tmp_path: Path, redis_url: str) -> None:
    """``--workers 2`` on one Redis: 400 token requests from 8 clients all get 201.

    Both workers serve (each burns CPU), every token's session lands in the one
    shared store, and SIGTERM stops the parent and both workers cleanly.
    """
    config = {"rate_limit": None, "store": redis_url}
    server = start_serve(tmp_path, config, args=["--workers", "2"])
    try:
        workers = children_of(server.proc.pid)
        assert len(workers) == 2
        before = {pid: cpu_ticks(pid) for pid in workers}
        statuses: list[int | None] = []
        request = token_request(server)

        def client() -> None:
            with connect(server.port, timeout=10) as sock:
                for _ in range(50):
                    sock.sendall(request)
                    statuses.append(read_answer(sock, timeout=10).status)

        threads = [threading.Thread(target=client) for _ in range(4)]
        fresh = [
            threading.Thread(
                target=lambda: statuses.extend(
                    exchange(server.port, request, timeout=10).status for _ in range(50)
                )
            )
            for _ in range(4)
        ]
        for thread in threads + fresh:
            thread.start()
        for thread in threads + fresh:
            thread.join(timeout=120)
        assert statuses == [201] * 400
        with redis.Redis.from_url(redis_url) as client:
            assert client.dbsize() >= 400  # one shared store: a session (at least) per token
        assert all(cpu_ticks(pid) > before[pid] for pid in workers)
        assert b"ERROR" not in server.log_bytes()
        assert b"(2 workers)" in server.log_bytes()
    finally:
        code = stop_serve(server)
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize(
    ("how", "exit_code"),
    [pytest.param("sigint", 0, id="SIGINT"), pytest.param("worker killed", 1, id="worker-dies")],
)
def test_every_worker_stops_with_the_parent(tmp_path: Path, how: str, exit_code: int) -> None:
    """SIGINT stops all workers (exit 0); a dead worker takes the others down (exit 1)."""
    server = start_serve(tmp_path, args=["--workers", "2"])
    workers = children_of(server.proc.pid)
    assert len(workers) == 2
    if how == "sigint":
        os.kill(server.proc.pid, signal.SIGINT)
    else:
        os.kill(workers[0], signal.SIGKILL)
    try:
        code = server.proc.wait(timeout=30)
    finally:
        stop_serve(server)
    assert code == exit_code
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert b"Traceback" not in server.log_bytes()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_reports_an_address_in_use_before_claiming_to_listen(
    tmp_path: Path, workers: str
) -> None:
    """A taken port: exit 1 with "address already in use", and no "listening" banner."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = tmp_path / "cfg.json"
        config.write_bytes(b'{"host": "127.0.0.1", "port": %d}' % port)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "livekit.plugins.metadata.cli",
                "serve",
                "-c",
                str(config),
                "--workers",
                workers,
            ],
            cwd=ROOT,
            env=serve_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: address already in use" in proc.stderr
    assert "listening" not in proc.stdout
    assert "Traceback" not in proc.stderr
