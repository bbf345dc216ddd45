"""SessionManager: SignalWire reference behaviour, validation, limits, TTL, auto-cleanup."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import math
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from livekit.plugins.metadata.errors import MetadataTooLarge
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.memory import MemoryStore
from livekit.plugins.metadata.sessions.store import SessionStore
from tests.clock import FakeClock
from tests.strategies import examples, json_values

pytestmark = pytest.mark.unit

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
NEEDLE = "S3NSITIVE-VALUE-4242"


class GenericStore(MemoryStore):
    """A MemoryStore subclass: the manager must treat it like any other store."""


class UnsizedStore:
    """A protocol-only stand-in without __len__ that counts cleanup() calls."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.cleanups = 0

    async def merge(
        self,
        session_id: str,
        fields: Mapping[str, bytes],
        *,
        remove: Collection[str] = (),
        ttl: float,
        max_bytes: int,
    ) -> None:
        await self.inner.merge(session_id, fields, remove=remove, ttl=ttl, max_bytes=max_bytes)

    async def get(self, session_id: str) -> dict[str, Any]:
        return await self.inner.get(session_id)

    async def delete(self, session_id: str) -> bool:
        return await self.inner.delete(session_id)

    async def remove_keys(self, session_id: str, keys: Collection[str], *, ttl: float) -> int:
        return await self.inner.remove_keys(session_id, keys, ttl=ttl)

    async def touch(self, session_id: str, *, ttl: float) -> bool:
        return await self.inner.touch(session_id, ttl=ttl)

    async def cleanup(self, *, max_age: float | None = None) -> int:
        self.cleanups += 1
        return await self.inner.cleanup(max_age=max_age)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(params=["default-memory-store", "memory-subclass", "unsized-protocol"])
async def sm(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[SessionManager]:
    store: SessionStore | None
    if request.param == "default-memory-store":
        store = None
    elif request.param == "memory-subclass":
        store = GenericStore(clock=clock)
    else:
        store = UnsizedStore(clock)
    async with SessionManager(
        store, secret_key=SECRET, clock=clock, session_ttl=100, max_session_bytes=1000
    ) as manager:
        yield manager


# -- reference behaviour, as written in the issue -------------------------------------


async def test_reference_create_session(sm: SessionManager) -> None:
    assert sm.create_session("call-abc123") == "call-abc123"
    ids = {sm.create_session() for _ in range(100)}
    assert len(ids) == 100
    for sid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", sid)  # base64url, 16 bytes = 128 bits
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", sm.create_session(""))
    assert await sm.get_session_metadata("call-abc123") == {}  # create stores nothing


async def test_reference_merges(sm: SessionManager) -> None:
    sid = sm.create_session("call-abc123")
    assert await sm.set_session_metadata(sid, {"caller": "John"}) is None
    assert await sm.set_session_metadata(sid, {"topic": "billing"}) is None
    assert await sm.get_session_metadata(sid) == {"caller": "John", "topic": "billing"}
    assert await sm.set_session_metadata(sid, "priority", "high") is True
    assert await sm.get_session_metadata(sid) == {
        "caller": "John",
        "topic": "billing",
        "priority": "high",
    }


async def test_reference_unknown_session(sm: SessionManager) -> None:
    first = await sm.get_session_metadata("never-set")
    assert first == {}
    first["x"] = 1
    assert await sm.get_session_metadata("never-set") == {}


# -- copies ---------------------------------------------------------------------------


async def test_get_returns_a_copy(sm: SessionManager) -> None:
    await sm.set_session_metadata("s", {"l": [1], "o": {"k": "v"}, "n": 1})
    got = await sm.get_session_metadata("s")
    got["l"].append(2)
    got["o"]["k"] = "w"
    got["n"] = 2
    assert await sm.get_session_metadata("s") == {"l": [1], "o": {"k": "v"}, "n": 1}


async def test_the_written_mapping_is_not_aliased(sm: SessionManager) -> None:
    md: dict[str, Any] = {"l": [1], "o": {"k": "v"}, "s": "x"}
    await sm.set_session_metadata("s", md)
    md["l"].append(2)
    md["o"]["k"] = "w"
    md["s"] = "y"
    await sm.set_session_metadata("s", "t", md["l"])
    md["l"].append(3)
    assert await sm.get_session_metadata("s") == {
        "l": [1],
        "o": {"k": "v"},
        "s": "x",
        "t": [1, 2],
    }


async def test_other_mappings_are_accepted(sm: SessionManager) -> None:
    await sm.set_session_metadata("s", MappingProxyType({"a": 1}))
    await sm.set_session_metadata("s", OrderedDict(b=2))
    assert await sm.get_session_metadata("s") == {"a": 1, "b": 2}


async def test_subclass_values_are_stored_as_plain_json(sm: SessionManager) -> None:
    class MyStr(str):
        pass

    class MyInt(int):
        pass

    await sm.set_session_metadata("s", {"a": MyStr("x"), "b": MyInt(3), "c": (1, 2)})
    got = await sm.get_session_metadata("s")
    assert got == {"a": "x", "b": 3, "c": [1, 2]}
    assert type(got["a"]) is str
    assert type(got["b"]) is int


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sid", "exc"),
    [
        ("", ValueError),
        (None, TypeError),
        (5, TypeError),
        (b"s", TypeError),
        ("x" * 257, ValueError),
    ],
)
async def test_bad_session_ids(sm: SessionManager, sid: object, exc: type[Exception]) -> None:
    calls = [
        sm.set_session_metadata(sid, {"a": 1}),  # type: ignore[call-overload]
        sm.set_session_metadata(sid, "a", 1),  # type: ignore[call-overload]
        sm.update_session_metadata(sid, {"a": 1}),  # type: ignore[arg-type]
        sm.get_session_metadata(sid),  # type: ignore[arg-type]
        sm.delete_session_metadata(sid),  # type: ignore[arg-type]
        sm.remove_session_keys(sid, ["a"]),  # type: ignore[arg-type]
        sm.touch_session(sid),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(exc, match="session_id"):
            await call
    if sid is not None and sid != "":
        with pytest.raises(exc, match="session_id"):
            sm.create_session(sid)  # type: ignore[arg-type]


async def test_longest_session_id_is_accepted(sm: SessionManager) -> None:
    sid = "x" * 256
    await sm.set_session_metadata(sid, {"a": 1})
    assert await sm.get_session_metadata(sid) == {"a": 1}


@pytest.mark.parametrize("metadata", [None, 5, ["a", 1], {"a", "b"}, b"{}"])
async def test_metadata_must_be_a_mapping(sm: SessionManager, metadata: object) -> None:
    with pytest.raises(TypeError, match="metadata"):
        await sm.set_session_metadata("s", metadata)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="updates"):
        await sm.update_session_metadata("s", metadata)  # type: ignore[arg-type]


async def test_key_without_value(sm: SessionManager) -> None:
    with pytest.raises(TypeError, match="value"):
        await sm.set_session_metadata("s", "key")  # type: ignore[call-overload]


@pytest.mark.parametrize("key", [1, None, b"k", ("a",)])
async def test_keys_must_be_str(sm: SessionManager, key: object) -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        await sm.set_session_metadata("s", {key: NEEDLE})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="key must be a str"):
        await sm.set_session_metadata("s", key, NEEDLE)  # type: ignore[call-overload]
    assert await sm.get_session_metadata("s") == {}


@dataclasses.dataclass
class Point:
    x: str


@pytest.mark.parametrize(
    ("value", "exc"),
    [
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (-math.inf, ValueError),
        ([1, {"deep": [float("nan")]}], ValueError),
        ({"x": float("-inf")}, ValueError),
        ({NEEDLE}, TypeError),
        (NEEDLE.encode(), TypeError),
        (datetime.datetime(2026, 1, 1), TypeError),
        ([datetime.date(2026, 1, 1)], TypeError),
        (Point(NEEDLE), TypeError),
        (object(), TypeError),
        (2**64, TypeError),
        ({1: NEEDLE}, TypeError),
    ],
)
async def test_non_json_values_are_refused_naming_the_key(
    sm: SessionManager, value: object, exc: type[Exception]
) -> None:
    await sm.set_session_metadata("s", {"kept": 1})
    for call in (
        lambda: sm.set_session_metadata("s", {"ok": 1, "bad key": value}),
        lambda: sm.set_session_metadata("s", "bad key", value),
        lambda: sm.update_session_metadata("s", {"bad key": value}, remove=["kept"]),
    ):
        with pytest.raises(exc) as info:
            await call()
        assert "'bad key'" in str(info.value)
        assert NEEDLE not in str(info.value)
        assert NEEDLE not in repr(info.value)
    assert await sm.get_session_metadata("s") == {"kept": 1}


async def test_json_null_and_extremes_are_fine(sm: SessionManager) -> None:
    md = {"n": None, "l": [None], "big": 2**64 - 1, "neg": -(2**63), "f": 1e308, "z": -0.0}
    await sm.set_session_metadata("s", md)
    assert await sm.get_session_metadata("s") == md


# -- size limit -----------------------------------------------------------------------


async def test_too_large_leaves_the_session_as_it_was(sm: SessionManager) -> None:
    await sm.set_session_metadata("s", {"a": "x" * 100, "b": [1, 2]})
    before = await sm.get_session_metadata("s")
    for call in (
        lambda: sm.set_session_metadata("s", {"c": NEEDLE * 100}),
        lambda: sm.set_session_metadata("s", "c", NEEDLE * 100),
        lambda: sm.update_session_metadata("s", {"c": NEEDLE * 100}, remove=["a"]),
    ):
        with pytest.raises(MetadataTooLarge) as info:
            await call()
        assert info.value.limit == 1000
        assert info.value.size > 1000
        assert NEEDLE not in str(info.value)
    assert await sm.get_session_metadata("s") == before


# -- update / remove / touch / delete ----------------------------------------------------


async def test_update_merges_and_removes_atomically(sm: SessionManager) -> None:
    await sm.set_session_metadata("s", {"a": "1", "b": "2", "c": "3"})
    await sm.update_session_metadata("s", {"b": "20", "d": "4"}, remove=(k for k in ["a", "b"]))
    assert await sm.get_session_metadata("s") == {"b": "20", "c": "3", "d": "4"}
    await sm.update_session_metadata("s", {}, remove=["c", "d", "nope"])
    assert await sm.get_session_metadata("s") == {"b": "20"}
    with pytest.raises(TypeError, match="remove"):
        await sm.update_session_metadata("s", {}, remove=[1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="remove"):
        await sm.update_session_metadata("s", {}, remove="b")


async def test_remove_touch_delete(sm: SessionManager, clock: FakeClock) -> None:
    await sm.set_session_metadata("s", {"a": 1, "b": 2})
    assert await sm.remove_session_keys("s", ["a", "zz"]) == 1
    assert await sm.get_session_metadata("s") == {"b": 2}
    with pytest.raises(TypeError, match="keys"):
        await sm.remove_session_keys("s", "b")
    clock.now += 60
    assert await sm.touch_session("s") is True
    clock.now += 60
    assert await sm.get_session_metadata("s") == {"b": 2}  # touched 60 s ago, ttl 100
    assert await sm.touch_session("missing") is False
    assert await sm.delete_session_metadata("s") is True
    assert await sm.delete_session_metadata("s") is False
    assert await sm.get_session_metadata("s") == {}


# -- TTL and cleanup -------------------------------------------------------------------


async def test_ttl_is_measured_from_the_last_write(sm: SessionManager, clock: FakeClock) -> None:
    await sm.set_session_metadata("s", {"a": 1})
    clock.now += 99
    assert await sm.get_session_metadata("s") == {"a": 1}
    clock.now += 1
    assert await sm.get_session_metadata("s") == {}  # gets do not refresh
    await sm.set_session_metadata("s", {"b": 2})
    assert await sm.get_session_metadata("s") == {"b": 2}  # the expired keys are gone


async def test_cleanup(sm: SessionManager, clock: FakeClock) -> None:
    for i in range(4):
        await sm.set_session_metadata(f"old{i}", {"i": i})
    clock.now += 50
    await sm.set_session_metadata("young", {"i": 9})
    clock.now += 50
    assert await sm.cleanup() == 4
    assert await sm.get_session_metadata("young") == {"i": 9}
    assert await sm.cleanup(max_age=10) == 1
    assert await sm.cleanup(0) == 0
    with pytest.raises(ValueError, match="max_age"):
        await sm.cleanup(float("nan"))


async def test_cleanup_zero_removes_everything(sm: SessionManager) -> None:
    for i in range(5):
        await sm.set_session_metadata(f"s{i}", {"i": i})
    assert await sm.cleanup(0) == 5
    assert await sm.get_session_metadata("s0") == {}


async def test_update_with_its_own_ttl(clock: FakeClock) -> None:
    """``ttl=`` sets this write's lifetime (a token session lives as long as its token)."""
    store = MemoryStore(clock=clock)
    sm = SessionManager(store, secret_key=SECRET, clock=clock, session_ttl=10)
    await sm.update_session_metadata("long", {"a": 1}, ttl=100)
    await sm.update_session_metadata("short", {"a": 1})
    clock.now += 50
    assert await sm.get_session_metadata("long") == {"a": 1}
    assert await sm.get_session_metadata("short") == {}
    for bad in (0, -1, math.nan, math.inf, True, "5"):
        with pytest.raises(ValueError, match="ttl"):
            await sm.update_session_metadata("long", {"b": 2}, ttl=bad)  # type: ignore[arg-type]
    assert await sm.get_session_metadata("long") == {"a": 1}


async def test_auto_cleanup_above_threshold(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    sm = SessionManager(store, secret_key=SECRET, clock=clock, session_ttl=10, cleanup_threshold=3)
    for i in range(3):
        await sm.set_session_metadata(f"s{i}", {"i": i})
    clock.now += 11
    await sm.set_session_metadata("s3", {"i": 3})  # leaves 4 > 3 stored: expired ones go
    assert len(store) == 1
    # A trigger, not a cap: fresh sessions are never removed.
    for i in range(10):
        await sm.set_session_metadata(f"f{i}", {"i": i})
    assert len(store) == 11


async def test_no_auto_cleanup_at_or_below_threshold(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    sm = SessionManager(store, secret_key=SECRET, clock=clock, session_ttl=10, cleanup_threshold=5)
    for i in range(4):
        await sm.set_session_metadata(f"s{i}", {"i": i})
    clock.now += 11
    await sm.set_session_metadata("s4", {"i": 4})  # 5 stored: not more than 5
    assert len(store) == 5
    assert await sm.get_session_metadata("s0") == {}  # but expired data is never served


async def test_auto_cleanup_through_the_protocol(clock: FakeClock) -> None:
    sized = GenericStore(clock=clock)
    sm = SessionManager(sized, secret_key=SECRET, clock=clock, session_ttl=10, cleanup_threshold=2)
    for i in range(3):
        await sm.set_session_metadata(f"s{i}", {"i": i})
    clock.now += 11
    await sm.set_session_metadata("s3", {"i": 3})
    assert len(sized) == 1

    unsized = UnsizedStore(clock)
    sm2 = SessionManager(unsized, secret_key=SECRET, clock=clock, cleanup_threshold=4)
    for i in range(10):
        await sm2.set_session_metadata("s", {"i": i})
    assert unsized.cleanups == 2  # once every `threshold + 1` writes, never per write


class CountingOrderedDict(OrderedDict):  # type: ignore[type-arg]
    iterations = 0

    def __iter__(self) -> Iterator[Any]:
        CountingOrderedDict.iterations += 1
        return super().__iter__()


async def test_auto_cleanup_is_amortized_constant(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    sm = SessionManager(store, secret_key=SECRET, clock=clock, session_ttl=100, cleanup_threshold=0)
    for i in range(2000):
        await sm.set_session_metadata(f"s{i}", {"i": i})
    store._sessions = CountingOrderedDict(store._sessions)
    CountingOrderedDict.iterations = 0
    for i in range(2000):  # nothing has expired: no session is ever looked at
        await sm.set_session_metadata(f"s{i}", {"j": i})
    assert CountingOrderedDict.iterations == 0
    clock.now += 100  # every session expires
    await sm.set_session_metadata("new", {"a": 1})
    # Each expired session is popped once; the fresh one stops the walk.
    assert CountingOrderedDict.iterations <= 2001
    assert len(store) == 1
    CountingOrderedDict.iterations = 0
    for i in range(100):
        await sm.set_session_metadata("new", {"a": i})
    assert CountingOrderedDict.iterations == 0


async def test_set_delete_cycles_leave_nothing_behind(sm: SessionManager) -> None:
    for i in range(500):
        await sm.set_session_metadata(f"s{i}", {"i": i})
        assert await sm.delete_session_metadata(f"s{i}") is True
    store = sm.store
    inner = store.inner if isinstance(store, UnsizedStore) else store
    assert isinstance(inner, MemoryStore)
    assert len(inner) == 0


# -- construction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"session_ttl": 0}, ValueError, "session_ttl"),
        ({"session_ttl": -1}, ValueError, "session_ttl"),
        ({"session_ttl": math.inf}, ValueError, "session_ttl"),
        ({"session_ttl": math.nan}, ValueError, "session_ttl"),
        ({"session_ttl": True}, ValueError, "session_ttl"),
        ({"cleanup_threshold": -1}, ValueError, "cleanup_threshold"),
        ({"cleanup_threshold": 1.5}, ValueError, "cleanup_threshold"),
        ({"max_session_bytes": 1}, ValueError, "max_session_bytes"),
        ({"max_session_bytes": "64000"}, ValueError, "max_session_bytes"),
        ({"token_expiry_secs": 1.5}, ValueError, "token_expiry_secs"),
        ({"clock": 5}, TypeError, "clock"),
    ],
)
def test_constructor_validation(kwargs: dict[str, Any], exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        SessionManager(secret_key=SECRET, **kwargs)


def test_store_must_implement_the_protocol() -> None:
    with pytest.raises(TypeError, match="store"):
        SessionManager(object(), secret_key=SECRET)  # type: ignore[arg-type]


async def test_properties_and_close(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    sm = SessionManager(
        store,
        secret_key=SECRET,
        session_ttl=5.5,
        cleanup_threshold=7,
        max_session_bytes=500,
        token_expiry_secs=60,
    )
    assert sm.store is store
    assert sm.session_ttl == 5.5
    assert sm.cleanup_threshold == 7
    assert sm.max_session_bytes == 500
    assert sm.token_expiry_secs == 60
    sm.token_expiry_secs = 30
    assert sm.tokens.token_expiry_secs == 30
    assert SECRET not in repr(sm)
    await sm.set_session_metadata("s", {"a": NEEDLE})
    assert NEEDLE not in repr(sm)
    assert NEEDLE not in repr(store)
    async with sm as entered:
        assert entered is sm
    assert len(store) == 0  # aclose() emptied the memory store


def test_default_store_is_a_new_memory_store() -> None:
    a = SessionManager(secret_key=SECRET)
    b = SessionManager(secret_key=SECRET)
    assert isinstance(a.store, MemoryStore)
    assert a.store is not b.store


# -- properties ---------------------------------------------------------------------------

updates = st.dictionaries(st.text(max_size=6), json_values, max_size=5)


@settings(max_examples=examples(80), deadline=None)
@given(
    steps=st.lists(
        st.tuples(updates, st.lists(st.text(max_size=6), max_size=3), st.booleans()), max_size=8
    )
)
def test_merge_property(steps: list[tuple[dict[str, Any], list[str], bool]]) -> None:
    """Any sequence of writes equals a shallow dict merge, within the size limit."""

    async def scenario() -> None:
        for generic in (False, True):
            clock = FakeClock()
            store = GenericStore(clock=clock) if generic else None
            sm = SessionManager(store, secret_key=SECRET, clock=clock, max_session_bytes=600)
            model: dict[str, Any] = {}
            for fields, remove, use_update in steps:
                after = dict(model)
                if use_update:
                    for key in remove:
                        after.pop(key, None)
                after.update(fields)
                refused: MetadataTooLarge | None = None
                try:
                    if use_update:
                        await sm.update_session_metadata("s", fields, remove=remove)
                    else:
                        await sm.set_session_metadata("s", fields)
                except MetadataTooLarge as exc:
                    refused = exc
                size = len(orjson.dumps(after))
                if refused is not None:
                    assert refused.size == size
                    assert size > 600
                else:
                    assert size <= 600
                    model = after
                assert await sm.get_session_metadata("s") == model

    asyncio.run(scenario())


async def test_bad_value_mid_write_changes_nothing(clock: FakeClock) -> None:
    """A write that meets a container or a bad value after good ones is all-or-nothing."""
    store = MemoryStore(clock=clock)
    sm = SessionManager(store, secret_key=SECRET, clock=clock, max_session_bytes=200)
    await sm.set_session_metadata("s", {"a": "x" * 50, "b": 1})
    # Overwrites "a" with a shorter scalar, then meets a list: the general path takes over.
    await sm.set_session_metadata("s", {"a": "y", "c": [1, 2], "d": 2.5})
    assert await sm.get_session_metadata("s") == {"a": "y", "b": 1, "c": [1, 2], "d": 2.5}
    # Overwrites "a", then an int beyond 64 bits: refused, and the sizes are intact.
    with pytest.raises(TypeError, match="'big'"):
        await sm.set_session_metadata("s", {"a": "z" * 100, "big": 2**70})
    with pytest.raises(ValueError, match="'nan'"):
        await sm.set_session_metadata("s", {"b": 5, "nan": math.nan})
    with pytest.raises(TypeError, match="keys must be str"):
        await sm.set_session_metadata("s", {"a": "w" * 90, 7: "x"})  # type: ignore[dict-item]
    assert await sm.get_session_metadata("s") == {"a": "y", "b": 1, "c": [1, 2], "d": 2.5}
    size = len(orjson.dumps(await sm.get_session_metadata("s")))
    room = 200 - size - len(',"e":""')
    await sm.set_session_metadata("s", "e", "q" * room)  # exactly at the limit: accepted
    with pytest.raises(MetadataTooLarge):
        await sm.set_session_metadata("s", "e", "q" * (room + 1))
    assert await sm.remove_session_keys("s", ["e"]) == 1
    # A container replaced by a scalar and back keeps reads exact.
    await sm.set_session_metadata("s", {"c": "scalar now"})
    await sm.set_session_metadata("s", "c", {"nested": True})
    got = await sm.get_session_metadata("s")
    assert got["c"] == {"nested": True}
    got["c"]["nested"] = False
    assert (await sm.get_session_metadata("s"))["c"] == {"nested": True}


# -- merge_session_metadata -------------------------------------------------------------


class FusedStore(MemoryStore):
    """A protocol-driven store offering the optional ``merge_and_get``; counts its calls."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.fused = 0
        self.gets = 0

    async def merge_and_get(
        self,
        session_id: str,
        fields: Mapping[str, bytes],
        *,
        remove: Collection[str] = (),
        ttl: float,
        max_bytes: int,
    ) -> dict[str, Any]:
        self.fused += 1
        await self.merge(session_id, fields, remove=remove, ttl=ttl, max_bytes=max_bytes)
        return await super().get(session_id)

    async def get(self, session_id: str) -> dict[str, Any]:
        self.gets += 1
        return await super().get(session_id)


async def test_merge_session_metadata_returns_the_merged_copy(sm: SessionManager) -> None:
    await sm.set_session_metadata("s", {"caller": "John"})
    got = await sm.merge_session_metadata("s", {"topic": "billing", "tags": ["a"]})
    assert got == {"caller": "John", "topic": "billing", "tags": ["a"]}
    got["tags"].append("mutated")
    got["caller"] = "mutated"
    assert await sm.get_session_metadata("s") == {
        "caller": "John",
        "topic": "billing",
        "tags": ["a"],
    }
    assert await sm.merge_session_metadata("new", MappingProxyType({"n": 1})) == {"n": 1}
    with pytest.raises(MetadataTooLarge):
        await sm.merge_session_metadata("s", {"big": "x" * 1000})
    with pytest.raises(ValueError, match="'f'"):
        await sm.merge_session_metadata("s", {"f": math.inf})
    with pytest.raises(TypeError, match="metadata must be a mapping"):
        await sm.merge_session_metadata("s", "k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_id"):
        await sm.merge_session_metadata("", {"a": 1})
    assert await sm.get_session_metadata("s") == {
        "caller": "John",
        "topic": "billing",
        "tags": ["a"],
    }


async def test_merge_session_metadata_uses_the_fused_operation(clock: FakeClock) -> None:
    store = FusedStore(clock)
    async with SessionManager(store, secret_key=SECRET, clock=clock, session_ttl=100) as sm:
        assert await sm.merge_session_metadata("s", {"a": 1}) == {"a": 1}
        assert await sm.merge_session_metadata("s", {"b": [2]}) == {"a": 1, "b": [2]}
        assert (store.fused, store.gets) == (2, 0)
        with pytest.raises(TypeError, match="'bad'"):
            await sm.merge_session_metadata("s", {"bad": object()})
        assert store.fused == 2  # validation happens before the store is touched
        assert await sm.get_session_metadata("s") == {"a": 1, "b": [2]}


@pytest.mark.parametrize("secs", [0, -5])
def test_expiry_of_zero_or_less_gives_tokens_already_expired(secs: int) -> None:
    """SignalWire parity: SessionManager(token_expiry_secs=0) mints tokens valid nowhere."""
    sm = SessionManager(secret_key=SECRET, token_expiry_secs=secs)
    sm.debug_mode = True
    token = sm.create_tool_token("transfer", "call-1")
    assert not sm.validate_tool_token("transfer", token, "call-1")
    assert not sm.validate_token("call-1", "transfer", token)
    status = sm.debug_token(token)["status"]
    assert (status["is_expired"], status["expires_in_seconds"]) == (True, 0)


async def test_legacy_activate_and_end_session_are_no_ops_returning_true() -> None:
    """SignalWire keeps activate_session/end_session as no-ops that return True."""
    sm = SessionManager(secret_key=SECRET)
    await sm.set_session_metadata("call-1", {"caller": "Ada"})
    assert sm.activate_session("call-1") is True
    assert sm.activate_session("never-seen") is True
    assert sm.end_session("call-1") is True
    assert await sm.get_session_metadata("call-1") == {"caller": "Ada"}  # nothing deleted


async def test_update_and_merge_keywords_are_checked_as_signatures_would(clock: FakeClock) -> None:
    """#23: the keywords became one TypedDict (``**options``); a wrong one is still a TypeError."""
    store = MemoryStore(clock=clock)
    sm = SessionManager(store, secret_key="k" * 32, clock=clock)
    with pytest.raises(TypeError, match="'ttls'"):
        await sm.update_session_metadata("s1", {"a": 1}, ttls=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'remov'"):
        await sm.token_sessions.update("s1", {"a": 1}, remov=["b"])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'max_bytes'"):
        await store.merge("s1", {"a": b"1"}, ttl=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'extra'"):
        await store.merge("s1", {"a": b"1"}, ttl=5, max_bytes=100, extra=1)  # type: ignore[call-arg]
    assert await sm.get_session_metadata("s1") == {}
    await store.merge(sm.named_sessions.key("s1"), {"a": b"1", "b": b"2"}, ttl=5, max_bytes=100)
    await sm.update_session_metadata("s1", {"c": 3}, remove=["a"], ttl=10)
    assert await sm.get_session_metadata("s1") == {"b": 2, "c": 3}
