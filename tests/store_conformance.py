"""The ``SessionStore`` conformance suite, reusable for every backend.

Subclass :class:`StoreConformance` in a ``tests/test_*.py`` module (which sets its
category marker) and provide two fixtures::

    class TestMyStore(StoreConformance):
        TTL = 30.0                          # seconds; see below

        @pytest.fixture
        async def store(self):              # a fresh, EMPTY store per test
            s = MyStore(...)
            yield s
            await s.aclose()

        @pytest.fixture
        def clock(self) -> ExpiryControl:   # makes time pass *for the store*
            ...

``clock.advance(seconds)`` is awaited by the expiry tests and must make at least
``seconds`` pass as far as the store's TTLs are concerned. With an injectable
clock (``MemoryStore(clock=...)``) it just moves a fake clock. A store on a real
server can implement it with ``await asyncio.sleep(seconds)`` and a small
``TTL`` (the tests only ever advance by ``TTL * 0.5`` — "still alive" checks —
and ``TTL * 1.5`` — "expired" checks — so ``TTL`` must be comfortably longer than
one round trip under load, e.g. 1.0), or skip the expiry tests by setting
``REAL_TIME_EXPIRY = False`` and test native expiry separately.

Session ids are unique per test (``self.sid(name)``), so a store on a shared
server needs no flushing between tests.

Class attributes describe what a backend supports:

* ``TTL`` — the ttl of the expiry tests' writes (every other test writes with ``STEADY_TTL``).
* ``REAL_TIME_EXPIRY`` — run the tests that need ``clock.advance``.
* ``CLEANUP_COUNTS`` — ``cleanup()`` removes expired sessions itself and returns
  how many (False for native expiry, where it returns 0).
* ``AGE_CLEANUP`` — ``cleanup(max_age=...)`` selects sessions by last write
  (False where the backend keeps no write time, e.g. Redis, where it returns 0).

Behaviour every store must share (what the tests pin down):

* a merge creates the session (even with nothing to set), merges top-level keys,
  never replaces the session, and restarts its TTL; a key both set and removed
  is set; the size contract of :mod:`livekit.plugins.metadata.sessions.store` is exact and
  a refused merge (too large, or a bad key or value anywhere in it) changes nothing;
* ``get`` returns a fresh decoded copy, ``{}`` for unknown or expired sessions;
* ``remove_keys`` counts only keys that existed (duplicates once), restarts the
  TTL when keys remain and deletes a session left empty;
* ``delete`` reports whether the session existed and leaves nothing behind;
* concurrent merges of distinct keys into one session lose nothing.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any, ClassVar, Protocol

import orjson
import pytest

from livekit.plugins.metadata.errors import MetadataTooLarge
from livekit.plugins.metadata.sessions.store import SessionStore, entry_size, object_size

__all__ = ["ExpiryControl", "StoreConformance", "enc"]

LIMIT = 64_000


class ExpiryControl(Protocol):
    async def advance(self, seconds: float) -> None:
        """Make at least ``seconds`` pass for the store under test."""


def enc(fields: dict[str, Any]) -> dict[str, bytes]:
    """Encode a mapping the way ``SessionManager`` does (compact JSON per value)."""
    return {k: orjson.dumps(v) for k, v in fields.items()}


def size_of(session: dict[str, Any]) -> int:
    return len(orjson.dumps(session))


class StoreConformance:
    """Tests every ``SessionStore`` must pass. Needs ``store`` and ``clock`` fixtures."""

    TTL: ClassVar[float] = 60.0
    """The TTL of the expiry tests (those that call :meth:`need_expiry`)."""
    STEADY_TTL: ClassVar[float] = 3600.0
    """The TTL of every other test: no slow step on a loaded machine outlives it."""
    REAL_TIME_EXPIRY: ClassVar[bool] = True
    CLEANUP_COUNTS: ClassVar[bool] = True
    AGE_CLEANUP: ClassVar[bool] = True

    async def merge(
        self,
        store: SessionStore,
        sid: str,
        fields: dict[str, Any],
        *,
        remove: tuple[str, ...] = (),
        max_bytes: int = LIMIT,
        ttl: float | None = None,
    ) -> None:
        ttl = self.ttl if ttl is None else ttl
        await store.merge(sid, enc(fields), remove=remove, ttl=ttl, max_bytes=max_bytes)

    async def reopen(self, store: SessionStore) -> SessionStore | None:
        """A new store on ``store``'s data after it was closed; None where closing drops it.

        The default (None) fits an in-process store such as ``MemoryStore``, whose
        ``aclose`` drops every session. A store on a server returns a fresh client.
        """
        return None

    def sid(self, name: str) -> str:
        """A session id unique to this test (stores on a shared server see no leftovers)."""
        prefix = self.__dict__.get("_prefix")
        if prefix is None:
            prefix = self.__dict__["_prefix"] = f"conf-{uuid.uuid4().hex[:12]}-"
        return prefix + name

    @property
    def ttl(self) -> float:
        """What this test writes with: ``TTL`` in an expiry test, else ``STEADY_TTL``."""
        return self.TTL if self.__dict__.get("_expiry") else self.STEADY_TTL

    def need_expiry(self) -> None:
        if not self.REAL_TIME_EXPIRY:
            pytest.skip("this backend's expiry is tested natively")
        self.__dict__["_expiry"] = True

    # -- protocol and basics ----------------------------------------------------------

    async def test_is_a_session_store(self, store: SessionStore) -> None:
        assert isinstance(store, SessionStore)

    async def test_unknown_session_reads_empty(self, store: SessionStore) -> None:
        assert await store.get(self.sid("unknown")) == {}
        assert await store.delete(self.sid("unknown")) is False
        assert await store.touch(self.sid("unknown"), ttl=self.ttl) is False
        assert await store.remove_keys(self.sid("unknown"), ["a"], ttl=self.ttl) == 0

    async def test_merge_never_replaces(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("m"), {"caller": "John"})
        await self.merge(store, self.sid("m"), {"topic": "billing"})
        await self.merge(store, self.sid("m"), {"priority": "high", "caller": "Jane"})
        assert await store.get(self.sid("m")) == {
            "caller": "Jane",
            "topic": "billing",
            "priority": "high",
        }

    async def test_merge_is_shallow(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("s"), {"profile": {"a": 1, "b": [1, 2]}, "n": None})
        await self.merge(store, self.sid("s"), {"profile": {"c": 3}})
        assert await store.get(self.sid("s")) == {"profile": {"c": 3}, "n": None}

    async def test_json_values_round_trip(self, store: SessionStore) -> None:
        value = {
            "s": 'é✓"\\\n\x01',
            "i": -(2**63),
            "u": 2**64 - 1,
            "f": 1.5e300,
            "t": True,
            "n": None,
            "l": [1, "x", {"y": [None, False]}],
            "o": {"": {}, "k": []},
            "": "empty key",
            'key with "quotes" and \u2028': 0,
        }
        await self.merge(store, self.sid("j"), value)
        assert await store.get(self.sid("j")) == value

    async def test_get_returns_a_fresh_copy(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("c"), {"l": [1, 2], "o": {"k": "v"}, "s": "x"})
        first = await store.get(self.sid("c"))
        first["l"].append(3)
        first["o"]["k"] = "changed"
        first["new"] = 1
        del first["s"]
        assert await store.get(self.sid("c")) == {"l": [1, 2], "o": {"k": "v"}, "s": "x"}
        assert await store.get(self.sid("c")) is not await store.get(self.sid("c"))

    async def test_merge_with_remove(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("r"), {"a": 1, "b": 2, "c": 3})
        await self.merge(store, self.sid("r"), {"d": 4, "b": 20}, remove=("a", "b", "missing", "a"))
        assert await store.get(self.sid("r")) == {"b": 20, "c": 3, "d": 4}

    async def test_empty_merge_creates_the_session(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("e"), {})
        assert await store.get(self.sid("e")) == {}
        assert await store.delete(self.sid("e")) is True

    async def test_remove_keys(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("k"), {"a": 1, "b": 2, "c": 3})
        assert await store.remove_keys(self.sid("k"), ["a", "a", "zz"], ttl=self.ttl) == 1
        assert await store.get(self.sid("k")) == {"b": 2, "c": 3}
        assert await store.remove_keys(self.sid("k"), [], ttl=self.ttl) == 0
        assert await store.remove_keys(self.sid("k"), ["b", "c"], ttl=self.ttl) == 2
        assert await store.get(self.sid("k")) == {}
        assert await store.delete(self.sid("k")) is False  # emptied sessions are gone

    async def test_delete_leaves_nothing(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("d"), {"a": 1})
        await self.merge(store, self.sid("d2"), {"b": 2})
        assert await store.delete(self.sid("d")) is True
        assert await store.delete(self.sid("d")) is False
        assert await store.get(self.sid("d")) == {}
        assert await store.touch(self.sid("d"), ttl=self.ttl) is False
        await self.merge(store, self.sid("d"), {"c": 3})
        assert await store.get(self.sid("d")) == {"c": 3}
        assert await store.get(self.sid("d2")) == {"b": 2}

    async def test_sessions_are_independent(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("i1"), {"a": 1})
        await self.merge(store, self.sid("i2"), {"a": 2})
        assert await store.get(self.sid("i1")) == {"a": 1}
        assert await store.get(self.sid("i2")) == {"a": 2}

    # -- size contract ---------------------------------------------------------------

    async def test_size_limit_is_exact(self, store: SessionStore) -> None:
        base = {"k": "x" * 10, "é\n": "\u2028\x01"}
        limit = size_of(base)
        await self.merge(store, self.sid("z"), base, max_bytes=limit)  # exactly at the limit
        assert await store.get(self.sid("z")) == base
        with pytest.raises(MetadataTooLarge) as info:
            await self.merge(store, self.sid("z"), {"k": "x" * 11}, max_bytes=limit)
        assert info.value.size == limit + 1
        assert info.value.limit == limit
        assert "x" * 10 not in str(info.value)
        assert await store.get(self.sid("z")) == base
        # Shrinking one key makes room for another.
        await self.merge(store, self.sid("z"), {"k": "x", "m": 1234}, max_bytes=limit)
        assert size_of(await store.get(self.sid("z"))) <= limit

    async def test_refused_merge_changes_nothing(self, store: SessionStore) -> None:
        await self.merge(store, self.sid("rf"), {"a": 1, "b": "two"})
        with pytest.raises(MetadataTooLarge):
            await self.merge(store, self.sid("rf"), {"c": "x" * 200}, remove=("a",), max_bytes=100)
        assert await store.get(self.sid("rf")) == {"a": 1, "b": "two"}
        with pytest.raises(MetadataTooLarge):
            await self.merge(store, self.sid("new"), {"c": "x" * 200}, max_bytes=100)
        assert await store.get(self.sid("new")) == {}
        assert await store.delete(self.sid("new")) is False

    async def test_bad_fields_change_nothing(self, store: SessionStore) -> None:
        """A merge with a bad key or value anywhere in it is refused whole."""
        sid = self.sid("bad")
        await self.merge(store, sid, {"a": 1, "b": "two"})
        bad_fields: list[dict[Any, Any]] = [
            {"a": b"2", "c": b""},  # an empty value after a good one
            {"a": b"2", "c": "3"},  # str, not bytes
            {"a": b"2", 7: b"3"},  # a key that is not a str
            {"a": b"2", "\ud800": b"3"},  # a key that is not valid UTF-8
        ]
        for fields in bad_fields:
            with pytest.raises((TypeError, ValueError)) as info:
                await store.merge(sid, fields, remove=("b",), ttl=self.ttl, max_bytes=LIMIT)
            assert not isinstance(info.value, MetadataTooLarge)
            assert await store.get(sid) == {"a": 1, "b": "two"}

    async def test_failed_merge_keeps_the_size_exact(self, store: SessionStore) -> None:
        """Issue 14.3: a merge refused half-way leaves no stale size behind.

        The refused merge carries a 30,000-byte value before a bad key; if its size
        were kept, shrinking that key later would let a 90,000-byte value in.
        """
        sid = self.sid("bypass")
        await self.merge(store, sid, {"obj": {"nested": [1, 2, 3]}})
        fields = {"big": orjson.dumps("A" * 30_000), "\ud800": b"1"}
        with pytest.raises((TypeError, ValueError)):
            await store.merge(sid, fields, ttl=self.ttl, max_bytes=LIMIT)
        await self.merge(store, sid, {"big": "x"})
        with pytest.raises(MetadataTooLarge) as info:
            await self.merge(store, sid, {"pad": "B" * 90_000})
        expected = {"obj": {"nested": [1, 2, 3]}, "big": "x"}
        assert info.value.size == size_of({**expected, "pad": "B" * 90_000})
        assert await store.get(sid) == expected

    async def test_size_model(self, store: SessionStore) -> None:
        """A seeded random walk of merges/removals against a dict model and orjson sizes."""
        rng = random.Random(20261122)
        keys = ["a", "b", "é", 'q"', "\n", "long-key-" * 3, ""]
        values: list[Any] = [0, -1, 2.5, "", "x" * 40, "✓" * 7, None, True, [1, {"a": "b"}], {}]
        model: dict[str, Any] = {}
        limit = 180
        for step in range(160):
            fields = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, 3))}
            remove = tuple(rng.sample(keys, rng.randint(0, 2)))
            after = {k: v for k, v in model.items() if k not in remove or k in fields}
            after.update(fields)
            expected = object_size(
                sum(entry_size(k, orjson.dumps(v)) for k, v in after.items()), len(after)
            )
            assert expected == size_of(after)
            if expected > limit:
                with pytest.raises(MetadataTooLarge) as info:
                    await self.merge(store, self.sid("w"), fields, remove=remove, max_bytes=limit)
                assert info.value.size == expected, step
            else:
                await self.merge(store, self.sid("w"), fields, remove=remove, max_bytes=limit)
                model = after
            got = await store.get(self.sid("w"))
            assert got == model, step

    # -- concurrency -------------------------------------------------------------------

    async def test_concurrent_merges_lose_nothing(self, store: SessionStore) -> None:
        await asyncio.gather(*(self.merge(store, self.sid("cc"), {f"k{i}": i}) for i in range(200)))
        assert await store.get(self.sid("cc")) == {f"k{i}": i for i in range(200)}

    # -- expiry ------------------------------------------------------------------------

    async def test_sessions_expire_after_last_write(
        self, store: SessionStore, clock: ExpiryControl
    ) -> None:
        self.need_expiry()
        await self.merge(store, self.sid("t"), {"a": 1})
        await clock.advance(self.TTL * 0.5)
        await self.merge(store, self.sid("t"), {"b": 2})  # restarts the TTL
        await clock.advance(self.TTL * 0.5)
        assert await store.get(self.sid("t")) == {"a": 1, "b": 2}
        await clock.advance(self.TTL * 1.5)
        assert await store.get(self.sid("t")) == {}
        assert await store.delete(self.sid("t")) is False

    async def test_touch_restarts_the_ttl(self, store: SessionStore, clock: ExpiryControl) -> None:
        self.need_expiry()
        await self.merge(store, self.sid("tt"), {"a": 1})
        await clock.advance(self.TTL * 0.5)
        assert await store.touch(self.sid("tt"), ttl=self.ttl) is True
        await clock.advance(self.TTL * 0.5)
        assert await store.touch(self.sid("tt"), ttl=self.ttl) is True
        await clock.advance(self.TTL * 0.5)
        assert await store.get(self.sid("tt")) == {"a": 1}
        await clock.advance(self.TTL * 1.5)
        assert await store.touch(self.sid("tt"), ttl=self.ttl) is False

    async def test_remove_keys_restarts_the_ttl(
        self, store: SessionStore, clock: ExpiryControl
    ) -> None:
        self.need_expiry()
        await self.merge(store, self.sid("rt"), {"a": 1, "b": 2})
        await clock.advance(self.TTL * 0.5)
        assert await store.remove_keys(self.sid("rt"), ["a"], ttl=self.ttl) == 1
        await clock.advance(self.TTL * 0.5)
        assert await store.get(self.sid("rt")) == {"b": 2}

    async def test_write_after_expiry_starts_fresh(
        self, store: SessionStore, clock: ExpiryControl
    ) -> None:
        self.need_expiry()
        await self.merge(store, self.sid("f"), {"old": "x" * 50})
        await clock.advance(self.TTL * 1.5)
        await self.merge(store, self.sid("f"), {"new": 1}, max_bytes=20)
        assert await store.get(self.sid("f")) == {"new": 1}

    async def test_cleanup_removes_expired(self, store: SessionStore, clock: ExpiryControl) -> None:
        self.need_expiry()
        for i in range(5):
            await self.merge(store, self.sid(f"old{i}"), {"i": i})
        await clock.advance(self.TTL * 0.5)
        for i in range(3):
            await self.merge(store, self.sid(f"new{i}"), {"i": i})
        await clock.advance(self.TTL * 0.75)  # the old ones are past their TTL
        removed = await store.cleanup()
        assert removed == (5 if self.CLEANUP_COUNTS else 0)
        for i in range(5):
            assert await store.get(self.sid(f"old{i}")) == {}
        for i in range(3):
            assert await store.get(self.sid(f"new{i}")) == {"i": i}
        assert await store.cleanup() == 0

    async def test_cleanup_by_age(self, store: SessionStore, clock: ExpiryControl) -> None:
        self.need_expiry()
        if not self.AGE_CLEANUP:
            assert await store.cleanup(max_age=0) == 0
            return
        await self.merge(store, self.sid("a1"), {"a": 1})
        await clock.advance(self.TTL * 0.5)
        await self.merge(store, self.sid("a2"), {"a": 2})
        assert await store.cleanup(max_age=self.TTL * 0.25) == 1
        assert await store.get(self.sid("a1")) == {}
        assert await store.get(self.sid("a2")) == {"a": 2}
        assert await store.cleanup(max_age=0) == 1  # cleanup(0) removes everything
        assert await store.get(self.sid("a2")) == {}

    async def test_aclose(self, store: SessionStore) -> None:
        """Closing twice is fine; the data then is gone (in-process) or outlives the client."""
        sid = self.sid("close")
        await self.merge(store, sid, {"a": 1})
        assert await store.aclose() is None
        assert await store.aclose() is None
        again = await self.reopen(store)
        if again is None:
            assert await store.get(sid) == {}
            return
        try:
            assert await again.get(sid) == {"a": 1}
        finally:
            await again.aclose()
