"""MemoryStore specifics: copies, ordering, mixed TTLs, the session cap, argument checks."""

from __future__ import annotations

import logging

import orjson
import pytest

from livekit.plugins.metadata.errors import MetadataTooLarge
from livekit.plugins.metadata.sessions.memory import MemoryStore
from tests.clock import FakeClock
from tests.store_conformance import enc

pytestmark = pytest.mark.unit

NEEDLE = "S3NSITIVE-VALUE-4242"


async def test_containers_and_scalars_swap(store: MemoryStore) -> None:
    await store.merge("s", enc({"a": [1], "b": "x"}), ttl=10, max_bytes=1000)
    await store.merge(
        "s", enc({"a": "now scalar", "b": {"now": ["container"]}}), ttl=10, max_bytes=1000
    )
    got = await store.get("s")
    assert got == {"a": "now scalar", "b": {"now": ["container"]}}
    got["b"]["now"].append(1)
    assert await store.get("s") == {"a": "now scalar", "b": {"now": ["container"]}}
    assert await store.remove_keys("s", ["b"], ttl=10) == 1
    await store.merge("s", enc({"c": 1}), remove=["a"], ttl=10, max_bytes=1000)
    assert await store.get("s") == {"c": 1}


async def test_accepts_bytes_like_fields(store: MemoryStore) -> None:
    fields = {"a": bytearray(b"[1,2]"), "b": memoryview(b'"x"')}
    await store.merge("s", fields, ttl=10, max_bytes=1000)  # type: ignore[arg-type]
    fields["a"][1] = ord("9")
    assert await store.get("s") == {"a": [1, 2], "b": "x"}


@pytest.mark.parametrize("value", ["str", b"", None, 5])
async def test_merge_rejects_non_bytes(store: MemoryStore, value: object) -> None:
    with pytest.raises(TypeError, match="fields"):
        await store.merge("s", {"a": value}, ttl=10, max_bytes=1000)  # type: ignore[dict-item]
    assert len(store) == 0


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan"), True, "10"])
async def test_ttl_must_be_positive(store: MemoryStore, ttl: object) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.merge("s", enc({"a": 1}), ttl=ttl, max_bytes=1000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        await store.touch("s", ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        await store.remove_keys("s", ["a"], ttl=ttl)  # type: ignore[arg-type]


async def test_cleanup_max_age_must_be_a_number(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="max_age"):
        await store.cleanup(max_age=float("nan"))
    with pytest.raises(ValueError, match="max_age"):
        await store.cleanup(max_age="1")  # type: ignore[arg-type]


def test_constructor_checks() -> None:
    with pytest.raises(TypeError, match="clock"):
        MemoryStore(clock=3)  # type: ignore[arg-type]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_sessions"):
            MemoryStore(max_sessions=bad)  # type: ignore[arg-type]


async def test_rewrite_moves_a_session_to_the_young_end(
    store: MemoryStore, clock: FakeClock
) -> None:
    await store.merge("a", enc({"v": 1}), ttl=10, max_bytes=1000)
    clock.now += 5
    await store.merge("b", enc({"v": 2}), ttl=10, max_bytes=1000)
    clock.now += 1
    await store.merge("a", enc({"v": 3}), ttl=10, max_bytes=1000)  # a is now younger than b
    clock.now += 9  # b expires (written 10 s ago), a does not (9 s)
    assert await store.cleanup() == 1
    assert await store.get("a") == {"v": 3}
    assert "a" in store
    assert "b" not in store


async def test_mixed_ttls_still_expire_correctly(store: MemoryStore, clock: FakeClock) -> None:
    await store.merge("long", enc({"v": 1}), ttl=100, max_bytes=1000)
    await store.merge("short", enc({"v": 2}), ttl=10, max_bytes=1000)  # written later, dies first
    await store.merge("mid", enc({"v": 3}), ttl=50, max_bytes=1000)
    clock.now += 10
    assert await store.cleanup() == 1
    assert "short" not in store
    assert "long" in store
    assert "mid" in store
    clock.now += 40
    assert await store.cleanup() == 1
    assert "mid" not in store
    clock.now += 50
    assert await store.cleanup() == 1
    assert len(store) == 0
    # Once empty, the store is back on the early-stop path.
    await store.merge("x", enc({"v": 1}), ttl=10, max_bytes=1000)
    assert await store.cleanup() == 0
    assert len(store) == 1


async def test_expired_sessions_are_never_served(store: MemoryStore, clock: FakeClock) -> None:
    await store.merge("s", enc({"v": 1}), ttl=10, max_bytes=1000)
    clock.now += 10
    assert "s" not in store
    assert len(store) == 1  # not cleaned yet ...
    assert await store.get("s") == {}
    assert len(store) == 0  # ... but a read drops it
    await store.merge("t", enc({"v": 1}), ttl=10, max_bytes=1000)
    clock.now += 10
    assert await store.delete("t") is False
    assert len(store) == 0


async def test_max_sessions_evicts_least_recently_written(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore(clock=clock, max_sessions=3)
    assert store.max_sessions == 3
    for sid in ("a", "b", "c"):
        await store.merge(sid, enc({"v": NEEDLE}), ttl=100, max_bytes=1000)
        clock.now += 1
    await store.merge("a", enc({"w": 1}), ttl=100, max_bytes=1000)  # a is the youngest now
    with caplog.at_level(logging.WARNING, logger="livekit.plugins.metadata"):
        await store.merge("d", enc({"v": 1}), ttl=100, max_bytes=1000)
        await store.merge("e", enc({"v": 1}), ttl=100, max_bytes=1000)
    assert len(store) == 3
    assert "b" not in store
    assert "c" not in store
    assert "a" in store
    assert "d" in store
    assert "e" in store
    assert store.evictions == 2
    assert caplog.text.count("max_sessions=3") == 1
    assert NEEDLE not in caplog.text


async def test_max_sessions_drops_expired_before_evicting(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock, max_sessions=2)
    await store.merge("old", enc({"v": 1}), ttl=5, max_bytes=1000)
    await store.merge("live", enc({"v": 1}), ttl=100, max_bytes=1000)
    clock.now += 6
    await store.merge("new", enc({"v": 1}), ttl=100, max_bytes=1000)
    assert "live" in store
    assert "new" in store
    assert store.evictions == 0


async def test_too_large_message_has_sizes_not_values(store: MemoryStore) -> None:
    with pytest.raises(MetadataTooLarge) as info:
        await store.merge("s", enc({"k": NEEDLE * 10}), ttl=10, max_bytes=50)
    assert info.value.size == len(orjson.dumps({"k": NEEDLE * 10}))
    assert NEEDLE not in str(info.value)
    assert len(store) == 0


async def test_repr_shows_no_values(store: MemoryStore) -> None:
    await store.merge(NEEDLE, enc({"k": NEEDLE}), ttl=10, max_bytes=1000)
    assert NEEDLE not in repr(store)
    assert "sessions=1" in repr(store)


async def test_aclose_empties(store: MemoryStore) -> None:
    await store.merge("s", enc({"k": 1}), ttl=10, max_bytes=1000)
    await store.aclose()
    assert len(store) == 0
    assert await store.get("s") == {}


async def test_default_clock_is_monotonic() -> None:
    store = MemoryStore()
    await store.merge("s", enc({"k": 1}), ttl=3600, max_bytes=1000)
    assert "s" in store
    assert await store.cleanup() == 0


async def _assert_size_accounting(store: MemoryStore, sid: str, limit: int) -> None:
    """The store's size accounting, seen from outside: it refuses a write one byte over.

    A probe key is padded so the session would be exactly ``limit + 1`` bytes;
    the store must refuse it, report that size, and change nothing.
    """
    before = await store.get(sid)
    base = {**before, "~probe": ""}
    pad = limit + 1 - len(orjson.dumps(base))
    if pad < 0:
        return
    with pytest.raises(MetadataTooLarge) as info:
        await store.merge(sid, enc({"~probe": "p" * pad}), ttl=100, max_bytes=limit)
    assert info.value.size == limit + 1
    assert await store.get(sid) == before


async def test_random_writes_keep_exact_sizes(clock: FakeClock) -> None:
    """Random writes through every manager method (sets, updates, removes) keep sizes exact."""
    import random

    from livekit.plugins.metadata.sessions.manager import SessionManager

    store = MemoryStore(clock=clock)
    sm = SessionManager(
        store, secret_key="k" * 40, clock=clock, session_ttl=100, max_session_bytes=6000
    )
    rng = random.Random(1234)
    model: dict[str, object] = {}
    scalars: list[object] = ["", 'é✓"\\', 0, -(2**63), 1.5, True, None, "z" * 80, "w" * 300]
    containers: list[object] = [[1], {"x": "y"}, []]
    for step in range(800):
        op = rng.random()
        # Phases alternate between few keys with scalars and many keys with containers.
        wide = (step // 100) % 2 == 1
        keys = [f"k{rng.randrange(60 if wide else 12)}" for _ in range(rng.randrange(1, 6))]
        pool = scalars + containers if wide else scalars
        update = {k: rng.choice(pool) for k in keys}
        try:
            if op < 0.5:
                await sm.set_session_metadata("s", update)
            elif op < 0.7:
                await sm.set_session_metadata("s", keys[0], update[keys[0]])
                update = {keys[0]: update[keys[0]]}
            elif op < 0.8:
                await sm.update_session_metadata("s", update, remove=[keys[-1]])
                if keys[-1] not in update:
                    model.pop(keys[-1], None)
            elif op < 0.9:
                removed = await sm.remove_session_keys("s", keys)
                assert removed == len({k for k in keys if k in model})
                for k in keys:
                    model.pop(k, None)
                update = {}
            else:
                assert await sm.merge_session_metadata("s", update) == {**model, **update}
        except MetadataTooLarge as exc:
            refused: MetadataTooLarge | None = exc
        else:
            refused = None
        if refused is not None:
            assert refused.size == len(orjson.dumps({**model, **update})) > 6000
        else:
            model.update(update)
        assert await sm.get_session_metadata("s") == model, step
        if step % 10 == 0:
            await _assert_size_accounting(store, "s", 6000)


BIG_OBJECT = {"nested": {"list": [1, 2, 3], "text": "x" * 20}}


@pytest.mark.parametrize("through", ["store", "manager"])
async def test_failed_write_cannot_shrink_the_size_accounting(
    clock: FakeClock, through: str
) -> None:
    """Issue 14.3: a write refused half-way must not leave a stale size behind.

    Before the fix, the refused write below left a 30,000-byte length recorded
    for "big"; overwriting "big" with one byte then subtracted it, and a 90,000-byte
    value slipped under the 64,000-byte cap.
    """
    from livekit.plugins.metadata.sessions.manager import SessionManager

    store = MemoryStore(clock=clock)
    sm = SessionManager(store, secret_key="k" * 40, clock=clock, max_session_bytes=64_000)
    key = sm.named_sessions.key("s") if through == "manager" else "s"

    async def write(fields: dict[str, object]) -> None:
        if through == "manager":
            await sm.set_session_metadata("s", fields)
        else:
            await store.merge(key, enc(fields), ttl=100, max_bytes=64_000)

    async def write_with_bad_key() -> None:
        if through == "manager":
            await sm.set_session_metadata("s", {"big": "A" * 30_000, "\ud800": 1})
        else:
            fields = {"big": orjson.dumps("A" * 30_000), "\ud800": b"1"}
            await store.merge(key, fields, ttl=100, max_bytes=64_000)

    await write({"obj": BIG_OBJECT})
    with pytest.raises(TypeError):
        await write_with_bad_key()
    assert await store.get(key) == {"obj": BIG_OBJECT}
    await write({"big": "x"})
    with pytest.raises(MetadataTooLarge) as info:
        await write({"pad": "B" * 90_000})
    assert info.value.size == len(
        orjson.dumps({"obj": BIG_OBJECT, "big": "x", "pad": "B" * 90_000})
    )
    assert await store.get(key) == {"obj": BIG_OBJECT, "big": "x"}
    await _assert_size_accounting(store, "s", 64_000)


async def test_refused_write_keeps_write_order_and_expiry(clock: FakeClock) -> None:
    """A refused write neither restarts the TTL nor moves the session to the young end."""
    store = MemoryStore(clock=clock)
    await store.merge("a", enc({"v": 1}), ttl=10, max_bytes=100)
    clock.tick(5)
    await store.merge("b", enc({"v": 1}), ttl=10, max_bytes=100)
    with pytest.raises(MetadataTooLarge):
        await store.merge("a", enc({"v": "x" * 200}), ttl=10, max_bytes=100)
    with pytest.raises(TypeError):
        await store.merge("a", {"ok": b"1", "bad": b""}, ttl=10, max_bytes=100)
    with pytest.raises(MetadataTooLarge):
        await store.merge("new", enc({"v": "x" * 200}), ttl=10, max_bytes=100)
    assert "new" not in store
    assert len(store) == 2
    clock.tick(5)  # "a" was last written 10 s ago: expired, despite the refused writes
    assert await store.cleanup() == 1
    assert "a" not in store
    assert await store.get("b") == {"v": 1}


async def test_stored_values_do_not_keep_orjson_write_buffers() -> None:
    """Each stored value costs its own bytes, not orjson's ~4 KiB write buffer.

    orjson's results keep their whole write buffer; a store that kept them as they
    came would hold about 4 KiB per value (12 KiB for these 3-key sessions).
    """
    import tracemalloc

    store = MemoryStore()
    n = 1_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            fields = {
                k: orjson.dumps(v) for k, v in {"a": [i], "b": "x" * 10, "c": {"d": i}}.items()
            }
            await store.merge(f"s{i}", fields, ttl=60.0, max_bytes=64_000)
        per_session = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert per_session < 2_000, f"{per_session:.0f} bytes per 3-key session"
