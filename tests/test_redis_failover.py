"""Failover under load: what an acknowledged write is worth when its primary dies.

Two writer processes (``tests/failover_writer.py``, started once per module) merge
new keys into one session for a bounded time and count; the test SIGKILLs the primary that serves the
session (the master owning its slot on a Redis Cluster, the Sentinel master),
waits for a replica to take over, restarts the killed node (it rejoins as a
replica, which ``durability="wait"`` needs to accept writes again), and then
counts the acknowledged writes missing from the session.

In ``cluster-blip`` the replica is first stopped (SIGSTOP) and the primary drops
its replication link, 0.3 s before the primary dies (well under the 1 s node
timeout); the replica resumes right after the kill. Writes acknowledged in those
0.3 s exist only on the primary: the window asynchronous replication leaves open,
which on loopback a plain crash makes almost nil.

``durability="wait"`` must lose none. The default (``"primary"``) may lose the
writes acknowledged inside that window; its figure is printed, not asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from livekit.plugins.metadata.sessions.redis import RedisStore
from tests.fixtures.json_process import JsonLineProcess
from tests.fixtures.redis_cluster import RedisCluster
from tests.fixtures.redis_sentinel import RedisSentinel
from tests.fixtures.redis_server import RedisServer, command

pytestmark = pytest.mark.integration

SECONDS = 5.0  # each writer's time bound
COUNT = 20_000  # each writer's write bound
KILL_AFTER = 0.5
BLIP = 0.3  # cluster-blip: seconds between dropping the replica link and the kill
TAGS = ("p1-", "p2-")


@pytest.fixture(scope="module")
def writers() -> Iterator[list[JsonLineProcess]]:
    """Two writer processes, started once for the module (their imports cost seconds)."""
    started = [JsonLineProcess(["-m", "tests.failover_writer"]) for _ in TAGS]
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
    writers: list[JsonLineProcess],
    url: str,
    sid: str,
    durability: str,
    fail_over: Callable[[], None],
) -> dict[str, Any]:
    """Both writers load one session; the primary fails over mid-load; the figures."""
    job = {"url": url, "sid": sid, "durability": durability, "seconds": SECONDS, "count": COUNT}
    for writer, tag in zip(writers, TAGS, strict=True):
        writer.send({**job, "tag": tag})
    for writer in writers:
        assert await writer.arecv() == {"connected": True}
    for writer in writers:
        writer.send("go")
    await asyncio.sleep(KILL_AFTER)
    await asyncio.to_thread(fail_over)
    reports = [await writer.arecv() for writer in writers]
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


def _cut_replica_link(primary: RedisServer, replica: RedisServer) -> None:
    """A network blip: the replica stops (SIGSTOP), the primary drops its replication link;
    writes acknowledged during the next ``BLIP`` seconds exist only on the primary."""
    replica.pause()
    assert command(primary.port, "CLIENT", "KILL", "TYPE", "replica") == b":1\r\n"
    time.sleep(BLIP)


def _cluster_fail_over(cluster: RedisCluster, slot: int, blip: bool) -> Callable[[], None]:
    def fail_over() -> None:
        victim = cluster.master_of_slot(slot)
        replica = cluster.replica_of(victim)
        if blip:
            _cut_replica_link(victim, replica)
        victim.kill()
        if blip:
            replica.resume()
        _wait_for(lambda: cluster.master_of_slot(slot) is not victim, 20, "a replica to take over")
        victim.start()  # its nodes.conf survives: it rejoins as the new master's replica
        cluster.wait_ok()

    return fail_over


def _sentinel_fail_over(setup: RedisSentinel) -> Callable[[], None]:
    def fail_over() -> None:
        victim = setup.current_master()
        victim.kill()
        _wait_for(lambda: setup.current_master() is not victim, 20, "Sentinel to fail over")
        setup.restart_as_replica(victim)

    return fail_over


@pytest.mark.parametrize("durability", ["primary", "wait"])
@pytest.mark.parametrize("topology", ["cluster", "cluster-blip", "sentinel"])
async def test_primary_killed_under_load(
    redis_cluster_factory: Callable[[], RedisCluster],
    redis_sentinel_factory: Callable[[], RedisSentinel],
    writers: list[JsonLineProcess],
    topology: str,
    durability: str,
) -> None:
    """Kill the session's primary (the master owning its slot, or the Sentinel master)
    during two processes' write load; with durability="wait" no acknowledged write is lost."""
    sid = "failover-session"
    if topology.startswith("cluster"):
        cluster = redis_cluster_factory()
        url = cluster.url
        store = RedisStore.from_url(url)
        try:
            slot = store.client.keyslot(store.key(sid))  # type: ignore[union-attr]
        finally:
            await store.aclose()
        fail_over = _cluster_fail_over(cluster, slot, blip=topology == "cluster-blip")
    else:
        setup = redis_sentinel_factory()
        url = setup.url
        fail_over = _sentinel_fail_over(setup)
    figures = await _run_load(writers, url, sid, durability, fail_over)
    _report(topology, durability, figures)
    assert figures["acked"] > 0
    assert figures["failures"] > 0  # the kill was felt: the load spanned the failover
    if durability == "wait":
        assert figures["lost"] == 0
