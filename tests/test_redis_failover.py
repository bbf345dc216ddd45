"""Failover under load: what an acknowledged write is worth when its primary dies.

Two writer processes (``tests/failover_writer.py``, started once per module) merge new keys into one session
for a bounded time and count; the test SIGKILLs the primary that serves the
session (the master owning its slot on a Redis Cluster, the Sentinel master),
waits for a replica to take over, restarts the killed node (it rejoins as a
replica, which ``durability="wait"`` needs to accept writes again), and then
counts the acknowledged writes missing from the session.

``durability="wait"`` must lose none. The default (``"primary"``) may lose the
writes still in the replication stream; its figure is printed, not asserted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from livekit.plugins.metadata.sessions.redis import RedisStore
from tests.fixtures.redis_cluster import RedisCluster
from tests.fixtures.redis_sentinel import RedisSentinel
from tests.fixtures.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 5.0  # each writer's time bound
COUNT = 20_000  # each writer's write bound
KILL_AFTER = 0.5
TAGS = ("p1-", "p2-")


class _Writer:
    """One writer process, reused by every test of the module (imports cost seconds)."""

    def __init__(self, tag: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugin"), str(ROOT)])
        self.tag = tag
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.failover_writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )

    def send(self, message: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(message) + b"\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"writer exited with {self.proc.poll()}"
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def writers() -> Iterator[list[_Writer]]:
    """Two writer processes, started once for the module."""
    started = [_Writer(tag) for tag in TAGS]
    try:
        for writer in started:
            assert writer.recv() == {"ready": True}
        yield started
    finally:
        for writer in started:
            writer.close()


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, RuntimeError, StopIteration):
            pass
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def _run_load(
    writers: list[_Writer],
    url: str,
    sid: str,
    durability: str,
    fail_over: Callable[[], None],
) -> dict[str, Any]:
    """Both writers load one session; the primary fails over mid-load; the figures."""
    job = {"url": url, "sid": sid, "durability": durability, "seconds": SECONDS, "count": COUNT}
    for writer in writers:
        writer.send({**job, "tag": writer.tag})
    for writer in writers:
        assert await asyncio.to_thread(writer.recv) == {"connected": True}
    for writer in writers:
        writer.send("go")
    await asyncio.sleep(KILL_AFTER)
    await asyncio.to_thread(fail_over)
    reports = [await asyncio.to_thread(writer.recv) for writer in writers]
    store = RedisStore.from_url(url, timeout=5.0)
    try:
        session = await store.get(sid)
    finally:
        await store.aclose()
    acked = {f"{tag}{i}" for tag, rep in zip(TAGS, reports, strict=True) for i in rep["acked"]}
    outages = [rep["outage"] for rep in reports if rep["outage"] is not None]
    return {
        "acked": len(acked),
        "lost": len(acked - set(session)),
        "failures": sum(rep["failures"] for rep in reports),
        "outage": max(outages) if outages else None,
        "attempts": sum(rep["attempts"] for rep in reports),
    }


def _report(where: str, durability: str, figures: dict[str, Any]) -> None:
    outage = "none seen" if figures["outage"] is None else f"{figures['outage']:.2f} s"
    print(
        f"\n{where} failover, durability={durability}: {figures['acked']} writes acknowledged "
        f"of {figures['attempts']} attempted, {figures['lost']} acknowledged writes lost, "
        f"{figures['failures']} failed writes, writes succeeded again after {outage}"
    )


def _cluster_fail_over(cluster: RedisCluster, slot: int) -> Callable[[], None]:
    def fail_over() -> None:
        victim = cluster.master_of_slot(slot)
        victim.kill()
        _wait_for(lambda: cluster.master_of_slot(slot) is not victim, 20, "a replica to take over")
        victim.start()  # its nodes.conf survives: it rejoins as the new master's replica
        cluster.wait_ok()

    return fail_over


@pytest.mark.parametrize("durability", ["primary", "wait"])
async def test_cluster_master_killed_under_load(
    redis_cluster_factory: Callable[[], RedisCluster], writers: list[_Writer], durability: str
) -> None:
    """Kill the master owning the session's slot during two processes' write load."""
    cluster = redis_cluster_factory()
    sid = "failover-session"
    store = RedisStore.from_url(cluster.url)
    try:
        slot = store.client.keyslot(store.key(sid))  # type: ignore[union-attr]
    finally:
        await store.aclose()
    fail_over = _cluster_fail_over(cluster, slot)
    figures = await _run_load(writers, cluster.url, sid, durability, fail_over)
    _report("Redis Cluster", durability, figures)
    assert figures["acked"] > 0
    assert figures["failures"] > 0  # the kill was felt: the load spanned the failover
    if durability == "wait":
        assert figures["lost"] == 0


def _sentinel_fail_over(setup: RedisSentinel) -> Callable[[], None]:
    def fail_over() -> None:
        victim: RedisServer = setup.current_master()
        victim.kill()
        _wait_for(lambda: setup.current_master() is not victim, 20, "Sentinel to fail over")
        # Restarted empty (no persistence), it must come back as a replica, never as a
        # master: drop the --replicaof of its first start and let Sentinel reconfigure it.
        survivor = setup.current_master()
        victim.extra_args = [a for a in victim.extra_args if a != "--replicaof"]
        victim.extra_args = [*victim.extra_args, "--replicaof", "127.0.0.1", str(survivor.port)]
        victim.start()
        setup.wait_ready()

    return fail_over


@pytest.mark.parametrize("durability", ["primary", "wait"])
async def test_sentinel_master_killed_under_load(
    redis_sentinel_factory: Callable[[], RedisSentinel], writers: list[_Writer], durability: str
) -> None:
    """Kill the Sentinel-managed master during two processes' write load."""
    setup = redis_sentinel_factory()
    fail_over = _sentinel_fail_over(setup)
    figures = await _run_load(writers, setup.url, "failover-session", durability, fail_over)
    _report("Sentinel", durability, figures)
    assert figures["acked"] > 0
    assert figures["failures"] > 0
    if durability == "wait":
        assert figures["lost"] == 0
