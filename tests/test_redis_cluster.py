"""RedisStore on Redis Cluster and Sentinel: URL forms, the single-slot invariant, secrets.

The store conformance suite already runs on both topologies
(``tests/test_store_conformance.py``); failovers are in ``tests/test_redis_failover.py``.
This module covers what is specific to them. Servers are real, started by fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from livekit.plugins.metadata.errors import StoreUnavailable
from livekit.plugins.metadata.server.limits import Bucket, RedisLimits, Reservation
from livekit.plugins.metadata.sessions import redis as redis_module
from livekit.plugins.metadata.sessions.redis import RedisStore
from tests.fixtures.redis_cluster import RedisCluster
from tests.fixtures.redis_sentinel import SERVICE, RedisSentinel
from tests.fixtures.redis_server import command
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.integration

BIG = 10_000_000
TTL = 60.0
SECRET = "s3cr3t-pw"


# --- URL forms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param("redis+cluster://127.0.0.1:7000/1", "database 0", id="cluster-db"),
        pytest.param("redis+cluster://127.0.0.1:7000?x=1", "query", id="cluster-query"),
        pytest.param("redis+cluster://127.0.0.1:70000", "port", id="cluster-port"),
        pytest.param("redis+cluster://,127.0.0.1:1", "host", id="cluster-empty-host"),
        pytest.param("redis+sentinel://127.0.0.1:26379", "service_name", id="sentinel-no-service"),
        pytest.param(
            "redis+sentinel://127.0.0.1:26379/svc/1/2", "service_name", id="sentinel-path"
        ),
        pytest.param("redis+sentinel://127.0.0.1:26379/svc/x", "invalid", id="sentinel-db"),
    ],
)
def test_bad_cluster_and_sentinel_urls_raise_value_error_without_the_password(
    url: str, reason: str
) -> None:
    """Every malformed form is refused with a reason and the URL redacted."""
    with_secret = url.replace("://", f"://user:{SECRET}@")
    with pytest.raises(ValueError, match="not a valid Redis URL") as info:
        RedisStore.from_url(with_secret)
    assert reason in str(info.value)
    assert SECRET not in str(info.value)
    assert "user:***@" in str(info.value)


def test_the_scheme_list_names_the_new_forms() -> None:
    """An unknown scheme's message lists every accepted form."""
    with pytest.raises(ValueError, match=r"redis\+cluster://.*redis\+sentinel://"):
        RedisStore.from_url(f"memcached://:{SECRET}@127.0.0.1:1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"durability": "quorum"}, "durability", id="durability"),
        pytest.param({"durability": "wait", "wait_timeout": 0}, "timeout", id="zero-wait"),
        pytest.param({"timeout": 1.0, "wait_timeout": 2.0}, "wait_timeout", id="wait-over-timeout"),
    ],
)
def test_bad_durability_settings_raise_value_error(kwargs: dict[str, Any], match: str) -> None:
    """``durability`` is one of two words and ``wait_timeout`` fits in ``timeout``."""
    with pytest.raises(ValueError, match=match):
        RedisStore.from_url("redis://127.0.0.1:1/0", **kwargs)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("redis+cluster://:{secret}@127.0.0.1:{port}", id="cluster"),
        pytest.param("redis+sentinel://user:{secret}@127.0.0.1:{port}/svc", id="sentinel"),
    ],
)
async def test_an_unreachable_topology_is_unavailable_and_redacted(template: str) -> None:
    """Nothing listening: StoreUnavailable naming the redacted URL, in repr and errors."""
    url = template.format(secret=SECRET, port=free_port())
    store = RedisStore.from_url(url, timeout=1.0)
    try:
        assert SECRET not in repr(store)
        assert "***" in store.url
        with pytest.raises(StoreUnavailable) as info:
            await store.merge("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        assert SECRET not in str(info.value)
        assert "127.0.0.1" in str(info.value)
    finally:
        await store.aclose()


# --- the single-slot invariant --------------------------------------------------------


def test_every_script_touches_only_keys_1() -> None:
    """The Lua sources name no key but ``KEYS[1]`` (held in ``key``): one slot per call."""
    for source in (redis_module.MERGE_SCRIPT, redis_module.REMOVE_SCRIPT):
        assert "KEYS[2]" not in source
        assert "KEYS[1]" in source
        targets = re.findall(r"redis\.call\('(\w+)',\s*([^,)]+)", source)
        assert targets
        assert {t for _, t in targets} == {"key"}, targets
        assert "local key = KEYS[1]" in source


class _Spy:
    """Records every command a client sends (and its pipelines, in wait mode)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[Any, ...]] = []
        execute = client.execute_command
        make_pipeline = client.pipeline

        async def spied(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(args)
            return await execute(*args, **kwargs)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make_pipeline(*args, **kwargs)
            queue = pipe.execute_command

            def queued(*cargs: Any, **ckwargs: Any) -> Any:
                self.calls.append(cargs)
                return queue(*cargs, **ckwargs)

            pipe.execute_command = queued
            return pipe

        client.execute_command = spied
        client.pipeline = pipeline

    def keys_touched(self) -> list[list[Any]]:
        """The keys of every data command (script loads and WAIT touch none)."""
        out = []
        for args in self.calls:
            name = str(args[0]).upper()
            if name in ("SCRIPT LOAD", "WAIT", "PING", "CLUSTER SLOTS", "COMMAND"):
                continue
            if name in ("EVAL", "EVALSHA"):
                numkeys = int(args[2])
                out.append([name, *args[3 : 3 + numkeys]])
            else:
                out.append([name, args[1]])
        return out


TOPOLOGY_URLS = [
    pytest.param(("redis_url", "primary"), id="single"),
    pytest.param(("redis_url", "wait-single"), id="single-wait-no-replica"),
    pytest.param(("redis_cluster_url", "primary"), id="cluster"),
    pytest.param(("redis_cluster_url", "wait"), id="cluster-wait"),
    pytest.param(("redis_sentinel_url", "wait"), id="sentinel-wait"),
]


@pytest.fixture(params=TOPOLOGY_URLS)
async def spied_store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisStore, _Spy]]:
    url_fixture, durability = request.param
    store = RedisStore.from_url(
        request.getfixturevalue(url_fixture),
        durability="primary" if durability == "primary" else "wait",
        timeout=1.0,
        wait_timeout=0.05,
    )
    spy = _Spy(store.client)
    try:
        yield store, spy
    finally:
        await store.aclose()


async def test_every_call_touches_exactly_the_session_key(
    spied_store: tuple[RedisStore, _Spy],
) -> None:
    """Each operation sends commands whose only key is the session's hash."""
    store, spy = spied_store
    sid = "slot-check"
    calls = [
        lambda: store.merge(sid, {"a": b"1", "b": b"2"}, ttl=TTL, max_bytes=BIG),
        lambda: store.merge_and_get(sid, {"c": b"3"}, remove=["a"], ttl=TTL, max_bytes=BIG),
        lambda: store.get(sid),
        lambda: store.remove_keys(sid, ["b"], ttl=TTL),
        lambda: store.touch(sid, ttl=TTL),
        lambda: store.delete(sid),
    ]
    refused = 0
    for call in calls:
        try:
            await call()
        except StoreUnavailable as exc:  # wait mode on a server without replicas refuses
            refused += 1
            message = str(exc)
    if refused:
        assert "no replica confirmed" in message
    touched = spy.keys_touched()
    assert {"EVAL", "EVALSHA"} & {entry[0] for entry in touched}, "no script call was recorded"
    for entry in touched:
        assert entry[1:] in ([store.key(sid)], [store.key(sid).encode()]), entry


async def test_without_a_replica_wait_mode_refuses_but_applies(redis_url: str) -> None:
    """WAIT finds no replica: StoreUnavailable says the write may not survive a failover."""
    store = RedisStore.from_url(redis_url, durability="wait", wait_timeout=0.05)
    try:
        with pytest.raises(StoreUnavailable, match="no replica confirmed") as info:
            await store.merge("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        assert "may be lost" in str(info.value)
        assert await store.get("s") == {"a": 1}  # applied on the primary all the same
        with pytest.raises(Exception, match="over the limit"):
            await store.merge("s", {"b": b"1" * 100}, ttl=TTL, max_bytes=20)  # refused: no WAIT
    finally:
        await store.aclose()


@pytest.mark.parametrize("op", ["remove_keys", "touch", "delete"])
async def test_without_a_replica_every_write_kind_waits(redis_url: str, op: str) -> None:
    """Not only merges: removing keys, touching and deleting also wait for a replica."""
    store = RedisStore.from_url(redis_url, durability="wait", wait_timeout=0.05)
    try:
        with contextlib.suppress(StoreUnavailable):
            await store.merge("w", {"a": b"1", "b": b"2"}, ttl=TTL, max_bytes=BIG)
        write = {
            "remove_keys": lambda: store.remove_keys("w", ["a"], ttl=TTL),
            "touch": lambda: store.touch("w", ttl=TTL),
            "delete": lambda: store.delete("w"),
        }[op]
        with pytest.raises(StoreUnavailable, match="no replica confirmed"):
            await write()
    finally:
        await store.aclose()


async def test_sessions_spread_over_the_masters_each_on_its_slot_owner(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    """Sessions land on all three masters; each hash lives on the master owning its slot."""
    store = RedisStore.from_url(redis_cluster_url)
    owners = set()
    try:
        for i in range(30):
            sid = f"spread-{i}"
            await store.merge(sid, {"i": str(i).encode()}, ttl=TTL, max_bytes=BIG)
            slot = int(
                command(redis_cluster.nodes[0].port, "CLUSTER", "KEYSLOT", store.key(sid))[1:]
            )
            owner = redis_cluster.master_of_slot(slot)
            assert command(owner.port, "EXISTS", store.key(sid)) == b":1\r\n"
            owners.add(owner.port)
    finally:
        await store.aclose()
    assert len(owners) == 3


async def test_limits_work_on_the_cluster(redis_cluster_url: str) -> None:
    """RedisLimits' keys share the {limits} slot, so every script (admit touches several
    keys) runs on a cluster unchanged, and concurrent first calls on a fresh cluster client
    all get an answer."""
    store = RedisStore.from_url(redis_cluster_url)
    try:
        limits = RedisLimits.from_store(store)
        waits = await asyncio.gather(*(limits.hit(f"p{i % 5}", 1.0, 2) for i in range(50)))
        assert sum(1 for w in waits if w == 0.0) == 10  # 5 buckets x burst 2
        assert all(w > 0.0 for w in waits if w != 0.0)
        assert await limits.reserve_session("a", 60.0, 1)
        assert not await limits.reserve_session("b", 60.0, 1)
        buckets = [Bucket("principal:x", 1.0, 1), Bucket("peer:y", 1.0, 1)]
        assert (await limits.admit(buckets, Reservation("c", 60.0, 2))).admitted
        assert (await limits.admit(buckets)).wait > 0.0  # both tokens taken: one script
        assert (await limits.admit([Bucket("z", 1.0, 1)], Reservation("d", 60.0, 2))).full
    finally:
        await store.aclose()


async def test_sentinel_url_selects_the_database(redis_sentinel: RedisSentinel) -> None:
    """``/service/db`` writes into that database on the current master."""
    redis_sentinel.flushall()
    url = redis_sentinel.url.replace(f"/{SERVICE}", f"/{SERVICE}/3")
    store = RedisStore.from_url(url)
    try:
        await store.merge("db-check", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
    finally:
        await store.aclose()
    master = redis_sentinel.current_master()
    with socket.create_connection(("127.0.0.1", master.port), timeout=2) as sock:
        sock.sendall(b"SELECT 3\r\nEXISTS lkmeta:db-check\r\n")
        reply = b""
        while reply.count(b"\r\n") < 2:
            reply += sock.recv(1024)
    assert reply == b"+OK\r\n:1\r\n"


async def test_a_given_cluster_client_is_described_by_its_nodes_and_left_open(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    """``RedisStore(RedisCluster(...))`` names its startup nodes and does not close the client."""
    from redis.asyncio.cluster import RedisCluster as Client

    port = redis_cluster.nodes[0].port
    client = Client(host="127.0.0.1", port=port)
    try:
        store = RedisStore(client, prefix="given:")
        await store.merge("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        await store.aclose()
        assert f"127.0.0.1:{port}" in repr(store)
        assert await client.hget("given:s", "a") == b"1"
    finally:
        await client.aclose()


@pytest.mark.parametrize("url_fixture", ["redis_cluster_url", "redis_sentinel_url"])
async def test_key_spaces_never_meet_on_cluster_and_sentinel(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    """Issue 21: token, call and named sessions with one id are three sessions everywhere."""
    from livekit.plugins.metadata.sessions.manager import SessionManager

    store = RedisStore.from_url(request.getfixturevalue(url_fixture), timeout=5.0)
    try:
        sessions = SessionManager(store, secret_key="k" * 40)
        for sid in (sessions.create_session(), "{slot}x", "t:x"):
            await sessions.token_sessions.update(sid, {"who": "token"})
            await sessions.call_sessions.update(sid, {"who": "call"})
            await sessions.set_session_metadata(sid, {"who": "named"})
            assert await sessions.token_sessions.get(sid) == {"who": "token"}
            assert await sessions.call_sessions.get(sid) == {"who": "call"}
            assert await sessions.get_session_metadata(sid) == {"who": "named"}
            assert await sessions.call_sessions.delete(sid) is True
            assert await sessions.token_sessions.get(sid) == {"who": "token"}
    finally:
        await store.aclose()
