"""RedisStore against a real redis-server: contract, concurrency, faults, secrets.

Every test talks to a real ``redis-server`` started by ``tests/fixtures/redis_server.py``
(no fakeredis, no mocks). Fault tests use private servers they kill, pause and restart.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from livekit.plugins.metadata._util import redact_url
from livekit.plugins.metadata.errors import ConfigError, MetadataTooLarge, StoreUnavailable
from livekit.plugins.metadata.sessions.redis import SIZE_FIELD, RedisStore
from livekit.plugins.metadata.sessions.store import MergeAndGet, SessionStore
from tests.fixtures.json_process import JsonLineProcess
from tests.fixtures.redis_server import RedisServer
from tests.strategies import examples

pytestmark = [pytest.mark.integration, pytest.mark.store("redis")]

ROOT = Path(__file__).resolve().parents[1]
BIG = 10_000_000
TTL = 60.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugin"), str(ROOT)])
    return env


def _dumps(mapping: dict[str, Any]) -> dict[str, bytes]:
    return {k: orjson.dumps(v) for k, v in mapping.items()}


# --- basic contract -------------------------------------------------------------------


async def test_merge_get_roundtrip_and_layout(store: RedisStore) -> None:
    data = {"user": {"id": 7, "tags": ["a"]}, "lang": "fi", 'we"ird\n': None, "ключ": 1.5}
    await store.merge("s1", _dumps(data), ttl=TTL, max_bytes=BIG)
    assert await store.get("s1") == data
    raw = await store.client.hgetall("lkmeta:s1")
    # one hash per session, one field per key, values stored exactly as given
    # the reserved field holds S with size == 1 + S
    assert int(raw.pop(SIZE_FIELD)) + 1 == len(orjson.dumps(data))
    assert raw == {k.encode(): orjson.dumps(v) for k, v in data.items()}
    assert 0 < await store.client.pttl("lkmeta:s1") <= 60_000


async def test_merge_is_shallow_and_remove_wins_only_when_not_set(store: RedisStore) -> None:
    await store.merge("s", _dumps({"a": {"x": 1}, "b": 2, "c": 3}), ttl=TTL, max_bytes=BIG)
    await store.merge(
        "s", _dumps({"a": {"y": 2}, "c": 4}), remove=["b", "c", "zz"], ttl=TTL, max_bytes=BIG
    )
    assert await store.get("s") == {"a": {"y": 2}, "c": 4}


async def test_unknown_session_reads_empty(store: RedisStore) -> None:
    assert await store.get("nope") == {}
    assert await store.delete("nope") is False
    assert await store.touch("nope", ttl=TTL) is False
    assert await store.remove_keys("nope", ["a"], ttl=TTL) == 0


async def test_delete_touch_remove_keys(store: RedisStore) -> None:
    await store.merge("s", _dumps({"a": 1, "b": 2, "c": 3}), ttl=1.0, max_bytes=BIG)
    assert await store.touch("s", ttl=TTL) is True
    assert await store.client.pttl("lkmeta:s") > 1_000
    assert await store.remove_keys("s", ["a", "a", "missing"], ttl=TTL) == 1
    assert await store.get("s") == {"b": 2, "c": 3}
    assert await store.remove_keys("s", ["b", "c"], ttl=TTL) == 2
    assert await store.client.exists("lkmeta:s") == 0  # an emptied session is gone
    await store.merge("s", _dumps({"a": 1}), ttl=TTL, max_bytes=BIG)
    assert await store.delete("s") is True
    assert await store.get("s") == {}


async def test_ttl_expiry_is_native(store: RedisStore) -> None:
    await store.merge("s", _dumps({"a": 1}), ttl=0.05, max_bytes=BIG)
    for _ in range(200):
        if not await store.client.exists("lkmeta:s"):
            break
        await asyncio.sleep(0.01)
    assert await store.get("s") == {}
    assert await store.cleanup() == 0
    assert await store.cleanup(max_age=0) == 0


async def test_size_limit_refuses_and_leaves_session_unchanged(store: RedisStore) -> None:
    await store.merge("s", _dumps({"a": "x" * 10}), ttl=TTL, max_bytes=100)
    before = await store.client.hgetall("lkmeta:s")
    # {"a":"xxxxxxxxxx","b":"..."} -> 2 + 16 + 1 + (4 + 2 + n)
    n = 100
    with pytest.raises(MetadataTooLarge) as info:
        await store.merge("s", {"b": orjson.dumps("y" * n)}, remove=["a"], ttl=TTL, max_bytes=100)
    assert info.value.limit == 100
    assert info.value.size == len(orjson.dumps({"b": "y" * n}))
    assert await store.client.hgetall("lkmeta:s") == before
    # the exact limit: test_size_limit_is_exact in the store conformance suite


async def test_many_fields_in_one_merge(store: RedisStore) -> None:
    data = {f"k{i}": i for i in range(2500)}
    await store.merge("s", _dumps(data), ttl=TTL, max_bytes=BIG)
    assert await store.get("s") == data
    await store.merge("s", {}, remove=[f"k{i}" for i in range(2400)], ttl=TTL, max_bytes=BIG)
    assert await store.get("s") == {f"k{i}": i for i in range(2400, 2500)}
    assert await store.remove_keys("s", list(data), ttl=TTL) == 100


async def test_hash_without_size_field_is_measured_exactly(store: RedisStore) -> None:
    data = {'q"\\': 1, "ctl\x00\x01\x1f\x7f": [1], "tab\t\n\r\b\f": "v", "é/€😀": {"a": None}}
    await store.client.hset(
        "lkmeta:legacy", mapping={k.encode(): orjson.dumps(v) for k, v in data.items()}
    )
    limit = len(orjson.dumps({**data, "new": 1}))
    with pytest.raises(MetadataTooLarge) as info:
        await store.merge("legacy", {"new": b"12"}, ttl=TTL, max_bytes=limit)
    assert info.value.size == limit + 1
    await store.merge("legacy", {"new": b"1"}, ttl=TTL, max_bytes=limit)
    assert await store.get("legacy") == {**data, "new": 1}


async def test_blocking_pool_queues_instead_of_raising(redis_url: str) -> None:
    s = RedisStore.from_url(redis_url, pool_size=2)
    try:
        await s.merge("s", _dumps({"a": 1}), ttl=TTL, max_bytes=BIG)
        results = await asyncio.gather(*(s.get("s") for _ in range(200)))
        assert results == [{"a": 1}] * 200
    finally:
        await s.aclose()


async def test_argument_validation(redis_url: str) -> None:
    import redis.asyncio as aioredis

    decoding = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisStore(decoding)
    finally:
        await decoding.aclose()
    with pytest.raises(TypeError, match="client"):
        RedisStore("redis://127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="url"):
        RedisStore.from_url("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="pool_size"):
        RedisStore.from_url(redis_url, pool_size=0)
    with pytest.raises(ValueError, match="timeout"):
        RedisStore.from_url(redis_url, timeout=0)
    s = RedisStore.from_url(redis_url)
    try:
        with pytest.raises(ValueError, match="session_id"):
            await s.get("")
        with pytest.raises(ValueError, match="ttl"):
            await s.merge("s", {"a": b"1"}, ttl=0, max_bytes=10)
        with pytest.raises(TypeError, match="fields"):
            await s.merge("s", {"a": "1"}, ttl=1, max_bytes=10)  # type: ignore[dict-item]
    finally:
        await s.aclose()


async def test_given_client_is_not_closed_by_the_store(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        s = RedisStore(client, prefix="other:")
        await s.merge("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        await s.aclose()
        assert await client.hgetall("other:s") == {b"a": b"1", SIZE_FIELD: b"6"}  # {"a":1}
        assert "127.0.0.1" in repr(s)
    finally:
        await client.aclose()


def test_module_imports_without_redis_and_constructing_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    import livekit.plugins.metadata.sessions.redis as real

    for name in ("redis", "redis.asyncio", "redis.exceptions", "redis.backoff", "redis.retry"):
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    probe = "livekit.plugins.metadata.sessions._redis_store_probe"
    spec = importlib.util.spec_from_file_location(probe, real.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, probe, module)
    spec.loader.exec_module(module)  # the module itself imports without redis
    with pytest.raises(ConfigError, match=r'pip install "livekit-plugins-metadata\[redis\]"'):
        module.RedisStore.from_url("redis://127.0.0.1:1/0")


# --- secrets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis://:s3cr3t-pw@127.0.0.1:1/0", "s3cr3t-pw"),
        ("redis://user:s3cr3t-pw@127.0.0.1:1/0", "s3cr3t-pw"),
        ("redis://s3cr3t-pw@127.0.0.1:1/0", "s3cr3t-pw"),
        ("redis://127.0.0.1:1/0?password=s3cr3t-pw&db=0", "s3cr3t-pw"),
    ],
)
async def test_password_never_shown_in_repr_or_errors(url: str, secret: str) -> None:
    s = RedisStore.from_url(url, timeout=1.0)
    try:
        assert secret not in repr(s)
        assert "***" in repr(s)
        assert secret not in redact_url(url)
        with pytest.raises(StoreUnavailable) as info:
            await s.get("s")
        assert secret not in str(info.value)
        assert secret not in repr(info.value)
        assert "127.0.0.1:1" in str(info.value)
        assert info.value.__cause__ is not None  # chained
        with pytest.raises(StoreUnavailable) as info2:
            await s.merge("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        assert secret not in str(info2.value)
    finally:
        await s.aclose()


async def test_wrong_password_is_unavailable_and_redacted(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(extra_args=["--requirepass", "right-password-123"])
    good = RedisStore.from_url(server.url)
    bad = RedisStore.from_url(server.url.replace("right-password-123", "wrong-password-456"))
    try:
        await good.merge("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        assert await good.get("s") == {"a": 1}
        assert "right-password-123" not in repr(good)
        with pytest.raises(StoreUnavailable) as info:
            await bad.get("s")
        assert "wrong-password-456" not in str(info.value)
        assert "right-password-123" not in str(info.value)
    finally:
        await good.aclose()
        await bad.aclose()


# --- faults ---------------------------------------------------------------------------


async def test_kill_mid_run_then_restart(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    s = RedisStore.from_url(server.url, timeout=1.0)
    try:
        await s.merge("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        done = asyncio.Event()
        count = 0

        async def writer() -> BaseException:
            nonlocal count
            while True:
                try:
                    await s.merge("s", {f"k{count}": b"1"}, ttl=TTL, max_bytes=BIG)
                except Exception as exc:
                    return exc
                count += 1
                if count == 20:
                    done.set()

        task = asyncio.create_task(writer())
        await done.wait()
        server.kill()
        # a hang would trip this generous guard; the store itself gives up within `timeout`
        exc = await asyncio.wait_for(task, 30)
        assert isinstance(exc, StoreUnavailable)
        assert exc.__cause__ is not None
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(s.get("s"), 30)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(s.touch("s", ttl=TTL), 30)

        server.restart()  # empty: no persistence
        await s.merge("s", {"b": b"2"}, ttl=TTL, max_bytes=BIG)
        assert await s.get("s") == {"b": 2}
        assert await s.delete("s") is True
    finally:
        await s.aclose()


async def test_unresponsive_server_times_out_then_recovers(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    s = RedisStore.from_url(server.url, timeout=0.5)
    try:
        await s.merge("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        server.pause()  # TCP still accepts; nothing answers
        try:
            for op in (
                s.get("s"),
                s.merge("s", {"b": b"2"}, ttl=TTL, max_bytes=BIG),
                s.delete("s"),
            ):
                with pytest.raises(StoreUnavailable) as info:
                    await asyncio.wait_for(op, 30)
                assert info.value.__cause__ is not None
        finally:
            server.resume()
        assert (await s.get("s")).get("a") == 1
        await s.merge("s", {"c": b"3"}, ttl=TTL, max_bytes=BIG)
        assert (await s.get("s"))["c"] == 3
    finally:
        await s.aclose()


# --- concurrency ----------------------------------------------------------------------

_PEER = textwrap.dedent(
    """
    # A second process for the multi-process tests; started once per module (an
    # interpreter start with livekit.agents imported costs seconds on a small VM).
    import asyncio, json, sys
    from livekit.plugins.metadata.sessions.redis import RedisStore
    from livekit.plugins.metadata.sessions.manager import SessionManager

    def say(obj):
        print(json.dumps(obj), flush=True)

    async def concurrent(url, tag, n):
        store = RedisStore.from_url(url, pool_size=32, timeout=30)
        await store.ping()
        say({"ready": True})
        sys.stdin.readline()  # "go"
        await asyncio.gather(*(
            store.merge("shared", {f"{tag}-{i}": b"1"}, ttl=600, max_bytes=10_000_000)
            for i in range(n)
        ))
        await store.aclose()
        say({"done": n})

    async def token_server(url, secret):
        async with SessionManager(store=RedisStore.from_url(url), secret_key=secret) as sm:
            await sm.set_session_metadata("room-42", {"tier": "gold", "user": {"id": 42}})
            await sm.set_session_metadata("room-42", "lang", "fi")
            say({"token": sm.generate_token("transfer_call", "room-42")})

    say({"started": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "concurrent":
            asyncio.run(concurrent(cmd["url"], cmd["tag"], cmd["n"]))
        elif cmd["op"] == "token_server":
            asyncio.run(token_server(cmd["url"], cmd["secret"]))
    """
)


@pytest.fixture(scope="module")
def peer() -> Iterator[JsonLineProcess]:
    """Another Python process that uses RedisStore (and SessionManager) on command."""
    p = JsonLineProcess(["-c", _PEER])
    try:
        assert p.recv() == {"started": True}
        yield p
    finally:
        p.close()


async def test_two_processes_500_concurrent_merges_lose_nothing(
    store: RedisStore, redis_url: str, peer: JsonLineProcess
) -> None:
    # Process 1 is the peer; process 2 is this test process.
    peer.send({"op": "concurrent", "url": redis_url, "tag": "p1", "n": 500})
    mine = RedisStore.from_url(redis_url, pool_size=32, timeout=30)
    try:
        await mine.ping()
        assert await peer.arecv() == {"ready": True}
        peer.send("go")  # release both at once
        await asyncio.gather(
            *(
                mine.merge("shared", {f"p2-{i}": b"1"}, ttl=600, max_bytes=10_000_000)
                for i in range(500)
            )
        )
        assert await peer.arecv() == {"done": 500}
    finally:
        await mine.aclose()
    session = await store.get("shared")
    expected = {f"{tag}-{i}" for tag in ("p1", "p2") for i in range(500)}
    lost = len(expected - set(session))
    print(f"\n2 processes x 500 concurrent merges: {len(session)} keys stored, {lost} lost")
    assert lost == 0
    assert len(session) == 1000
    # the size bookkeeping stayed exact under concurrency
    bookkeeping = int(await store.client.hget("lkmeta:shared", SIZE_FIELD) or b"-1")
    assert 1 + bookkeeping == len(orjson.dumps(session))


# --- cross-process --------------------------------------------------------------------


async def test_token_server_process_writes_worker_process_reads(
    redis_url: str, peer: JsonLineProcess
) -> None:
    from livekit.plugins.metadata.sessions.manager import SessionManager

    secret = "shared-tool-token-secret-" + "x" * 32  # from configuration, same on every host
    peer.send({"op": "token_server", "url": redis_url, "secret": secret})  # the token server
    token = (await peer.arecv())["token"]
    # this process is the worker
    async with SessionManager(store=RedisStore.from_url(redis_url), secret_key=secret) as worker:
        assert await worker.get_session_metadata("room-42") == {
            "tier": "gold",
            "user": {"id": 42},
            "lang": "fi",
        }
        assert worker.validate_token("room-42", "transfer_call", token) is True


# --- size contract vs a model ---------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_keys = st.text(max_size=8)
_ops = st.lists(
    st.tuples(
        st.dictionaries(_keys, _json, max_size=4), st.lists(_keys, max_size=3), st.integers(2, 200)
    ),
    min_size=1,
    max_size=6,
)


def test_size_limit_matches_the_contract_model(redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    s = RedisStore.from_url(redis_url)

    async def check(ops: list[tuple[dict[str, Any], list[str], int]]) -> None:
        sid = uuid.uuid4().hex
        model: dict[str, Any] = {}
        for fields, remove, limit in ops:
            after = {k: v for k, v in model.items() if k not in remove or k in fields}
            after.update(fields)
            size = len(orjson.dumps(after))
            if size > limit:
                with pytest.raises(MetadataTooLarge) as info:
                    await s.merge(sid, _dumps(fields), remove=remove, ttl=TTL, max_bytes=limit)
                assert (info.value.size, info.value.limit) == (size, limit)
            else:
                await s.merge(sid, _dumps(fields), remove=remove, ttl=TTL, max_bytes=limit)
                model = after
            assert await s.get(sid) == model

    @settings(
        max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(_ops)
    def run(ops: list[tuple[dict[str, Any], list[str], int]]) -> None:
        loop.run_until_complete(check(ops))

    try:
        run()
    finally:
        loop.run_until_complete(s.aclose())
        loop.close()


# --- merge_and_get: the fused, optional operation -------------------------------------


async def test_merge_and_get_is_offered_and_returns_the_session(store: RedisStore) -> None:
    assert isinstance(store, SessionStore)
    assert isinstance(store, MergeAndGet)
    data = {"user": {"id": 7}, 'we"ird\n': None, "ключ": [1.5, "x"], "c\x00\x1f\x7f/\\": 0}
    assert await store.merge_and_get("s", _dumps(data), ttl=TTL, max_bytes=BIG) == data
    got = await store.merge_and_get(
        "s", _dumps({"lang": "fi"}), remove=["user", "nope"], ttl=TTL, max_bytes=BIG
    )
    assert got == {'we"ird\n': None, "ключ": [1.5, "x"], "c\x00\x1f\x7f/\\": 0, "lang": "fi"}
    assert got == await store.get("s")
    raw = await store.client.hgetall("lkmeta:s")
    assert int(raw.pop(SIZE_FIELD)) + 1 == len(orjson.dumps(got))
    assert 0 < await store.client.pttl("lkmeta:s") <= 60_000
    # an empty merge creates/refreshes the session like merge does
    assert await store.merge_and_get("fresh", {}, ttl=TTL, max_bytes=BIG) == {}


async def test_merge_and_get_too_large_leaves_session_unchanged(store: RedisStore) -> None:
    await store.merge("s", _dumps({"a": "x" * 10}), ttl=1.0, max_bytes=100)
    before = await store.client.hgetall("lkmeta:s")
    pttl_before = await store.client.pttl("lkmeta:s")
    with pytest.raises(MetadataTooLarge) as info:
        await store.merge_and_get(
            "s", {"b": orjson.dumps("y" * 100)}, remove=["a"], ttl=TTL, max_bytes=100
        )
    assert (info.value.size, info.value.limit) == (len(orjson.dumps({"b": "y" * 100})), 100)
    assert await store.client.hgetall("lkmeta:s") == before
    assert await store.client.pttl("lkmeta:s") <= pttl_before  # TTL not refreshed either
    # the same refusal as merge, message included
    with pytest.raises(MetadataTooLarge) as via_merge:
        await store.merge("s", {"b": orjson.dumps("y" * 100)}, remove=["a"], ttl=TTL, max_bytes=100)
    assert str(via_merge.value) == str(info.value)


async def test_merge_and_get_survives_a_flushed_script_cache(store: RedisStore) -> None:
    await store.client.script_flush()
    assert await store.merge_and_get("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG) == {"a": 1}
    await store.client.script_flush()
    with pytest.raises(MetadataTooLarge):
        await store.merge_and_get("s", {"b": b"2"}, ttl=TTL, max_bytes=8)
    assert await store.get("s") == {"a": 1}


async def test_merge_and_get_unavailable() -> None:
    s = RedisStore.from_url("redis://:pw-never-shown@127.0.0.1:1/0", timeout=1.0)
    try:
        with pytest.raises(StoreUnavailable) as info:
            await s.merge_and_get("s", {"a": b"1"}, ttl=TTL, max_bytes=BIG)
        assert info.value.__cause__ is not None
        assert "pw-never-shown" not in str(info.value)
        assert "127.0.0.1:1" in str(info.value)
    finally:
        await s.aclose()


async def test_merge_and_get_validates_like_merge(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.merge_and_get("s", {"a": b"1"}, ttl=0, max_bytes=10)
    with pytest.raises(ValueError, match="max_bytes"):
        await store.merge_and_get("s", {"a": b"1"}, ttl=1, max_bytes=-1)
    with pytest.raises(TypeError, match="fields"):
        await store.merge_and_get("s", {"a": b""}, ttl=1, max_bytes=10)
    with pytest.raises(ValueError, match="session_id"):
        await store.merge_and_get("", {"a": b"1"}, ttl=1, max_bytes=10)
    assert await store.client.exists("lkmeta:s") == 0


def test_merge_and_get_equals_merge_then_get(redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    s = RedisStore.from_url(redis_url)

    async def check(ops: list[tuple[dict[str, Any], list[str], int]]) -> None:
        a, b = uuid.uuid4().hex, uuid.uuid4().hex  # a: merge + get; b: merge_and_get
        for fields, remove, limit in ops:
            encoded = _dumps(fields)
            try:
                await s.merge(a, encoded, remove=remove, ttl=TTL, max_bytes=limit)
            except MetadataTooLarge as exc:
                separate: Any = (exc.size, exc.limit)
            else:
                separate = await s.get(a)
            try:
                fused: Any = await s.merge_and_get(
                    b, encoded, remove=remove, ttl=TTL, max_bytes=limit
                )
            except MetadataTooLarge as exc:
                fused = (exc.size, exc.limit)
            assert fused == separate
            # the stored hashes (size bookkeeping included) are identical too
            assert await s.client.hgetall("lkmeta:" + a) == await s.client.hgetall("lkmeta:" + b)

    @settings(
        max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(_ops)
    def run(ops: list[tuple[dict[str, Any], list[str], int]]) -> None:
        loop.run_until_complete(check(ops))

    try:
        run()
    finally:
        loop.run_until_complete(s.aclose())
        loop.close()
