"""Property: no sequence of writes, valid or not, can make a store disagree with a dict model.

Random sequences of writes go through ``SessionManager`` (every write method) and
straight to the store (raw ``merge`` calls with malformed fields): invalid keys,
lone surrogates, NaN and infinities, non-JSON types, integers beyond 64 bits,
oversize values, removals. After every step the stored session must equal a plain
dict model (a refused write changes nothing) and its compact JSON must fit the cap.

The same property runs against ``MemoryStore`` (unit, many examples) and a real
``RedisStore`` (integration, a bounded number of examples so it takes seconds).
"""

from __future__ import annotations

import asyncio
import datetime
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from livekit.plugins.metadata.errors import MetadataTooLarge
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.memory import MemoryStore
from livekit.plugins.metadata.sessions.store import SessionStore
from tests.clock import FakeClock
from tests.strategies import examples, json_values

CAP = 400
TTL = 60.0
SECRET = "property-secret-0123456789abcdef0123456789"

# -- what a step may write ----------------------------------------------------------------

_valid_values = json_values | st.just("X" * 300)  # the big one pushes sessions over the cap
_invalid_values = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        "lone \ud800 surrogate",
        ["ok", "\udfff"],
        {"deep": [1, math.nan]},
        2**64,
        -(2**63) - 1,
        {1, 2},
        b"bytes",
        datetime.date(2024, 1, 1),
    ]
)
_valid_keys = st.sampled_from(["a", "b", "c", "é✓", 'q"', "", "long-key-" * 4]) | st.text(
    max_size=4
)
_invalid_keys = st.sampled_from(["\ud800", "a\udfffb", 7, None])

# An entry is (key, value, ok): ok is False when the key or the value is invalid.
_entry = st.one_of(
    st.tuples(_valid_keys, _valid_values, st.just(True)),
    st.tuples(_valid_keys, _invalid_values, st.just(False)),
    st.tuples(_invalid_keys, _valid_values, st.just(False)),
)
_entries = st.lists(_entry, max_size=4)
_remove = st.lists(_valid_keys, max_size=3)

# Raw store fields: (key, encoded value, ok); the store itself must refuse the bad ones.
_raw_field = st.one_of(
    st.tuples(_valid_keys, json_values.map(orjson.dumps), st.just(True)),
    st.tuples(_invalid_keys, st.just(b"1"), st.just(False)),
    st.tuples(_valid_keys, st.sampled_from([b"", "1", None, 5]), st.just(False)),
)

_step = st.one_of(
    st.tuples(st.just("set"), _entries),
    st.tuples(st.just("set_one"), _entry.map(lambda e: [e])),
    st.tuples(st.just("update"), _entries, _remove),
    st.tuples(st.just("merge_get"), _entries),
    st.tuples(st.just("remove"), _remove),
    st.tuples(st.just("raw"), st.lists(_raw_field, max_size=3), _remove),
)
_steps = st.lists(_step, min_size=1, max_size=10)


def _mapping(entries: list[tuple[Any, Any, bool]]) -> tuple[dict[Any, Any], bool]:
    """The dict the entries make (later keys win) and whether all of it is valid."""
    values: dict[Any, Any] = {}
    oks: dict[Any, bool] = {}
    for key, value, ok in entries:
        values[key] = value
        oks[key] = ok
    return values, all(oks.values())


async def _apply(
    sm: SessionManager, store: SessionStore, sid: str, step: tuple[Any, ...], cap: int
) -> dict[str, Any] | None:
    """Run one step; returns what a reading step returned."""
    kind = step[0]
    if kind == "set":
        await sm.set_session_metadata(sid, _mapping(step[1])[0])
    elif kind == "set_one":
        ((key, value, _ok),) = step[1]
        assert await sm.set_session_metadata(sid, key, value) is True
    elif kind == "update":
        await sm.update_session_metadata(sid, _mapping(step[1])[0], remove=step[2])
    elif kind == "merge_get":
        return await sm.merge_session_metadata(sid, _mapping(step[1])[0])
    elif kind == "remove":
        return {"removed": await sm.remove_session_keys(sid, step[1])}
    else:
        fields = _mapping(step[1])[0]
        await store.merge(
            sm.named_sessions.key(sid), fields, remove=step[2], ttl=TTL, max_bytes=cap
        )
    return None


def _expect(step: tuple[Any, ...], model: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(valid, the session after the step if it is accepted) for the model."""
    kind = step[0]
    if kind == "remove":
        return True, {k: v for k, v in model.items() if k not in step[1]}
    if kind == "raw":
        raw, ok = _mapping(step[1])
        fields = {k: orjson.loads(v) for k, v in raw.items()} if ok else {}
        remove = step[2]
    else:
        fields, ok = _mapping(step[1])
        remove = step[2] if kind == "update" else []
    after = {k: v for k, v in model.items() if k not in remove or k in fields}
    after.update(fields)
    return ok, after


async def _check_sequence(
    sm: SessionManager, store: SessionStore, steps: list[Any], cap: int = CAP
) -> None:
    sid = f"prop-{uuid.uuid4().hex}"
    model: dict[str, Any] = {}
    for i, step in enumerate(steps):
        valid, after = _expect(step, model)
        error: Exception | None = None
        try:
            returned = await _apply(sm, store, sid, step, cap)
        except (TypeError, ValueError) as exc:  # MetadataTooLarge is a ValueError
            error = exc
        if isinstance(error, MetadataTooLarge):
            assert valid, (i, step[0], "a refused invalid write must fail validation first")
            assert error.size == len(orjson.dumps(after)) > cap, (i, step[0])
        elif error is not None:
            assert not valid, (i, step[0], repr(error))
        else:
            assert valid, (i, step[0], "an invalid write was accepted")
            assert len(orjson.dumps(after)) <= cap, (i, step[0], "a write over the cap passed")
            if step[0] == "merge_get":
                assert returned == after, i
            elif step[0] == "remove":
                assert returned == {"removed": len(set(step[1]) & set(model))}, i
            model = after
        stored = await store.get(sm.named_sessions.key(sid))
        assert stored == model, (i, step[0])
        assert len(orjson.dumps(stored)) <= cap, i


def _runner(
    make: Callable[[], tuple[SessionManager, SessionStore]], examples: int
) -> Iterator[Callable[[], None]]:
    loop = asyncio.new_event_loop()
    sm, store = make()

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_steps)
    def run(steps: list[Any]) -> None:
        loop.run_until_complete(_check_sequence(sm, store, steps))

    try:
        yield run
    finally:
        loop.run_until_complete(sm.aclose())
        loop.close()


@pytest.mark.unit
def test_memory_store_equals_the_model() -> None:
    """MemoryStore: any sequence of valid and invalid writes matches a dict, within the cap."""

    def make() -> tuple[SessionManager, SessionStore]:
        store = MemoryStore(clock=FakeClock())
        return SessionManager(store, secret_key=SECRET, max_session_bytes=CAP), store

    for run in _runner(make, examples=examples(300)):
        run()


@pytest.mark.integration
def test_redis_store_equals_the_model(redis_url: str) -> None:
    """RedisStore on a real server: the same property, with fewer examples."""
    from livekit.plugins.metadata.sessions.redis import RedisStore

    def make() -> tuple[SessionManager, SessionStore]:
        store = RedisStore.from_url(redis_url, timeout=5.0)
        return SessionManager(store, secret_key=SECRET, max_session_bytes=CAP), store

    for run in _runner(make, examples=examples(40)):
        run()


# -- the reported bypass, replayed on every store ------------------------------------------

_BYPASS = [
    ("set", [("obj", {"nested": {"list": [1, 2, 3], "text": "x" * 20}}, True)]),
    ("set", [("big", "A" * 30_000, True), ("\ud800", 1, False)]),
    ("set", [("big", "x", True)]),
    ("set", [("pad", "B" * 90_000, True)]),
]


@pytest.mark.unit
async def test_issue_14_3_bypass_is_refused_by_memory_store() -> None:
    """Set an object, fail a write with a bad key, shrink a key, pad: the pad is refused."""
    store = MemoryStore(clock=FakeClock())
    async with SessionManager(store, secret_key=SECRET, max_session_bytes=64_000) as sm:
        await _check_sequence(sm, store, _BYPASS, cap=64_000)


@pytest.mark.integration
async def test_issue_14_3_bypass_is_refused_by_redis_store(redis_url: str) -> None:
    """The same sequence against a real Redis."""
    from livekit.plugins.metadata.sessions.redis import RedisStore

    store = RedisStore.from_url(redis_url, timeout=5.0)
    async with SessionManager(store, secret_key=SECRET, max_session_bytes=64_000) as sm:
        await _check_sequence(sm, store, _BYPASS, cap=64_000)
