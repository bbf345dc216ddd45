"""SessionManager benchmarks (issue 2), each figure against a baseline in the same run.

Tables:

* **set / get at 1k, 100k and 1M sessions** (quick: 1k and 100k) — our
  ``SessionManager`` over the default ``MemoryStore`` against a plain
  dict-of-dicts merge (``d.setdefault(sid, {}).update(m)``) and get (``d.get`` +
  ``dict()`` copy, since ours returns a copy), on the same random order of
  existing session ids. ``m`` is the 5-key, 107-byte sample of
  ``perf-baseline.md`` §3; the 1-key rows use the ``(sid, key, value)`` form.
* **cleanup cost vs stored sessions** — a literal Python port of SignalWire TS's
  ``setSessionMetadata`` (a full timestamp scan on every set above 1000
  sessions) against ours and the dict, at 1k / 10k / 100k (quick: 1k / 100k). The model's stores
  are pre-filled directly: filling them *through* its set is O(n²) (about 70 s
  at 100k), so its fill cost is timed only at 1k and 10k.
* **tool tokens** — generate / validate against ``signalwire-agents``'
  ``SessionManager`` (same secret, same call id and function).

Targets (issue 15.1/15.2; each table's note says met or MISSED): set at 1k sessions
≤ 15× the dict-of-dicts merge; growth of the set cost from 1k to the largest size
≤ 1.5× the dict's own growth (quick: 100k, full: 1M); at 100k sessions ≥ 100×
faster than the TS port's set; tool tokens ≤ 1× ``signalwire-agents``' time.

Run: ``uv run python -m bench.bench_session`` (add ``--quick`` for the small run).
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import time
from collections.abc import Callable
from itertools import cycle, islice
from typing import Any

from orjson import dumps

from livekit.plugins.metadata.sessions.manager import SessionManager

from ._harness import Case, Table, format_table, measure, run_async_loop

__all__ = ["run"]

M: dict[str, Any] = {
    "user_id": "user-00000001",
    "room": "room-0001",
    "lang": "en",
    "plan": "pro",
    "started_at": "2025-11-22T02:51:01Z",
}
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
CALL_ID = "call-7f3c2a9e4b1d4c0e9a8b"
FUNCTION = "get_weather"
TTL = 10**9  # nothing expires during the set/get tables

BASE_SET = "dict-of-dicts merge: d.setdefault(sid, {}).update(m)"
OURS_SET = "await sm.set_session_metadata(sid, m)"
OURS_SET1 = "await sm.set_session_metadata(sid, k, v) (1 key)"
BASE_SET1 = "dict-of-dicts, 1 key: d.setdefault(sid, {})[k] = v"
BASE_GET = "dict-of-dicts get + dict() copy"
OURS_GET = "await sm.get_session_metadata(sid) (a copy)"
TS_SET = "TS port: set with full cleanup scan"
OURS_SCAN_SET = "ours: await sm.set_session_metadata (age-ordered)"


def _sids(n: int) -> list[str]:
    return [f"sess-{i:023d}" for i in range(n)]


def _order(sids: list[str], k: int = 200_000) -> list[str]:
    rng = random.Random(n := len(sids))
    return [sids[rng.randrange(n)] for _ in range(min(k, max(n, 10_000)))]


def _fill_manager(sm: SessionManager, sids: list[str]) -> float:
    async def fill() -> None:
        for sid in sids:
            await sm.set_session_metadata(sid, dict(M))

    t0 = time.perf_counter()
    asyncio.run(fill())
    return (time.perf_counter() - t0) / len(sids)


def _set_cases(d: dict[str, dict[str, Any]], sm: SessionManager, order: list[str]) -> list[Case]:
    """The set table's cases over the same random order of existing ids."""

    class DictStore:
        async def amerge(self, sid: str, m: dict[str, Any]) -> None:
            d.setdefault(sid, {}).update(m)

    ds = DictStore()

    def dict_merge(loops: int) -> None:
        m = M
        for sid in islice(cycle(order), loops):
            d.setdefault(sid, {}).update(m)

    def dict_set1(loops: int) -> None:
        for sid in islice(cycle(order), loops):
            d.setdefault(sid, {})["plan"] = "team"

    async def amerge(loops: int) -> None:
        m = M
        for sid in islice(cycle(order), loops):
            await ds.amerge(sid, m)

    async def encode_only(sid: str, m: dict[str, Any]) -> None:
        for v in m.values():
            dumps(v)

    async def floor(loops: int) -> None:
        m = M
        for sid in islice(cycle(order), loops):
            await encode_only(sid, m)

    async def sm_set(loops: int) -> None:
        m = M
        s = sm.set_session_metadata
        for sid in islice(cycle(order), loops):
            await s(sid, m)

    async def sm_set1(loops: int) -> None:
        s = sm.set_session_metadata
        for sid in islice(cycle(order), loops):
            await s(sid, "plan", "team")

    return [
        Case(BASE_SET, dict_merge, baseline=True),
        Case(BASE_SET1, dict_set1),
        Case("await dict amerge() (async def wrapper)", run_async_loop(amerge)),
        Case(
            "floor: await + orjson.dumps of each value (validation, no store)",
            run_async_loop(floor),
        ),
        Case(OURS_SET, run_async_loop(sm_set)),
        Case(OURS_SET1, run_async_loop(sm_set1)),
    ]


def _get_cases(d: dict[str, dict[str, Any]], sm: SessionManager, order: list[str]) -> list[Case]:
    """The get table's cases over the same random order of existing ids."""

    def dict_get_copy(loops: int) -> None:
        g = d.get
        for sid in islice(cycle(order), loops):
            dict(g(sid))  # type: ignore[arg-type]

    def dict_get(loops: int) -> None:
        g = d.get
        for sid in islice(cycle(order), loops):
            g(sid)

    async def sm_get(loops: int) -> None:
        g = sm.get_session_metadata
        for sid in islice(cycle(order), loops):
            await g(sid)

    return [
        Case(BASE_GET, dict_get_copy, baseline=True),
        Case("dict-of-dicts get (live object, no copy)", dict_get),
        Case(OURS_GET, run_async_loop(sm_get)),
    ]


def _set_get_tables(n: int, repeats: int, target: float) -> tuple[Table, Table, dict[str, float]]:
    sids = _sids(n)
    order = _order(sids)
    d: dict[str, dict[str, Any]] = {sid: dict(M) for sid in sids}
    sm = SessionManager(secret_key=SECRET, session_ttl=TTL)
    fill = _fill_manager(sm, sids)
    label = f"{n:,}"
    # Everything built so far lives for the whole table: freeze it, so the harness's
    # gc.collect() before each repetition does not walk millions of live objects.
    gc.collect()
    gc.freeze()
    set_table = measure(
        f"set at {label} sessions (5-key merge unless noted)",
        _set_cases(d, sm, order),
        repeats=repeats,
        target=target,
        note=f"Filling {label} sessions through set_session_metadata took "
        f"{fill * 1e9:.0f} ns per session.",
    )
    get_table = measure(
        f"get at {label} sessions",
        _get_cases(d, sm, order),
        repeats=repeats,
        target=target,
    )
    med = {r.name: r.median for r in set_table.results + get_table.results}
    gc.unfreeze()
    return set_table, get_table, med


class TsScanModel:
    """A literal port of SignalWire TS ``setSessionMetadata`` / ``cleanup`` (§7.2).

    Two maps, a shallow-merged copy per set, a timestamp per set, and after any set
    that leaves more than 1000 sessions a walk over *every* timestamp. Deletion
    keeps the timestamp, as TS does.
    """

    def __init__(self, token_expiry_secs: int = 900) -> None:
        self.token_expiry_secs = token_expiry_secs
        self.session_metadata: dict[str, dict[str, Any]] = {}
        self.session_timestamps: dict[str, float] = {}

    def set_session_metadata(self, session_id: str, metadata: dict[str, Any]) -> None:
        existing = self.session_metadata.get(session_id, {})
        self.session_metadata[session_id] = {**existing, **metadata}
        self.session_timestamps[session_id] = time.time() * 1000
        if len(self.session_metadata) > 1000:
            self.cleanup()

    def cleanup(self, max_age_ms: float | None = None) -> int:
        if max_age_ms is None:
            max_age_ms = self.token_expiry_secs * 1000
        cutoff = time.time() * 1000 - max_age_ms
        removed = 0
        for sid, ts in list(self.session_timestamps.items()):  # JS: for..of over the Map
            if ts <= cutoff:
                self.session_metadata.pop(sid, None)
                del self.session_timestamps[sid]
                removed += 1
        return removed


def _scan_table(n: int, repeats: int, target: float, *, fill_limit: int = 10_000) -> Table:
    sids = _sids(n)
    order = _order(sids)
    now_ms = time.time() * 1000
    ts = TsScanModel()
    for sid in sids:  # pre-filled directly: filling through set is O(n^2)
        ts.session_metadata[sid] = dict(M)
        ts.session_timestamps[sid] = now_ms
    d: dict[str, dict[str, Any]] = {sid: dict(M) for sid in sids}
    sm = SessionManager(secret_key=SECRET, token_expiry_secs=900, session_ttl=900)
    _fill_manager(sm, sids)

    def dict_merge(loops: int) -> None:
        for sid in islice(cycle(order), loops):
            d.setdefault(sid, {}).update(M)

    def ts_set(loops: int) -> None:
        s = ts.set_session_metadata
        for sid in islice(cycle(order), loops):
            s(sid, M)

    async def sm_set(loops: int) -> None:
        s = sm.set_session_metadata
        for sid in islice(cycle(order), loops):
            await s(sid, M)

    cases = [
        Case("dict-of-dicts merge", dict_merge, baseline=True),
        Case(TS_SET, ts_set),
        Case(OURS_SCAN_SET, run_async_loop(sm_set)),
    ]
    note = ""
    if n <= fill_limit:
        fresh = TsScanModel()
        t0 = time.perf_counter()
        for sid in sids:
            fresh.set_session_metadata(sid, M)
        fill_ts = (time.perf_counter() - t0) / n
        sm2 = SessionManager(secret_key=SECRET, session_ttl=900)
        fill_ours = _fill_manager(sm2, sids)
        note = (
            f"Filling {n:,} sessions via set: TS port {fill_ts * 1e6:.2f} µs/op, "
            f"ours {fill_ours * 1e6:.2f} µs/op."
        )
    else:
        note = (
            f"Filling {n:,} sessions through the TS port's set is O(n²) "
            f"({'~5 s' if n <= 10_000 else '~70 s'}): skipped."
        )
    gc.collect()
    gc.freeze()
    try:
        return measure(
            f"set on an existing id with {n:,} sessions stored: cleanup cost",
            cases,
            repeats=repeats,
            target=target,
            note=note,
        )
    finally:
        gc.unfreeze()


def _token_tables(repeats: int, target: float) -> tuple[Table, Table]:
    from signalwire_agents.core.security.session_manager import SessionManager as SWManager

    sw = SWManager(token_expiry_secs=900, secret_key=SECRET)
    ours = SessionManager(secret_key=SECRET)
    rotated = SessionManager(secret_key=["another-secret-0123456789abcdef01234567", SECRET])
    sw_tok = sw.generate_token(FUNCTION, CALL_ID)
    our_tok = ours.generate_token(FUNCTION, CALL_ID)

    gc.collect()
    gc.freeze()  # the imported libraries are long-lived: keep the per-repetition collect cheap

    def loop(fn: Callable[[], object]) -> Callable[[int], None]:
        def run(loops: int) -> None:
            for _ in range(loops):
                fn()

        return run

    gen = measure(
        "tool token generate",
        [
            Case(
                "signalwire-agents generate_token",
                loop(lambda: sw.generate_token(FUNCTION, CALL_ID)),
                baseline=True,
            ),
            Case("ours generate_token", loop(lambda: ours.generate_token(FUNCTION, CALL_ID))),
        ],
        repeats=repeats,
        target=target,
    )
    val = measure(
        "tool token validate",
        [
            Case(
                "signalwire-agents validate_token: valid",
                loop(lambda: sw.validate_token(CALL_ID, FUNCTION, sw_tok)),
                baseline=True,
            ),
            Case(
                "ours validate_token: valid",
                loop(lambda: ours.validate_token(CALL_ID, FUNCTION, our_tok)),
            ),
            Case(
                "signalwire-agents validate_token: wrong call id",
                loop(lambda: sw.validate_token("call-other", FUNCTION, sw_tok)),
            ),
            Case(
                "ours validate_token: wrong call id",
                loop(lambda: ours.validate_token("call-other", FUNCTION, our_tok)),
            ),
            Case(
                "ours validate_token: signed with the 2nd (rotated) key",
                loop(lambda: rotated.validate_token(CALL_ID, FUNCTION, our_tok)),
            ),
            Case(
                "ours validate_token: not base64",
                loop(lambda: ours.validate_token(CALL_ID, FUNCTION, "invalid_token")),
            ),
        ],
        repeats=repeats,
        target=target,
    )
    gc.unfreeze()
    return gen, val


def _set_targets(medians: dict[int, dict[str, float]], small: int, big: int) -> str:
    """The set/get target lines: set ≤ 15× the dict merge, growth ≤ 1.5× the dict's."""
    m1 = medians[small]
    r_set = m1[OURS_SET] / m1[BASE_SET]
    lines = [f"Targets (ratios of medians from this run; growth {small:,}→{big:,} sessions):", ""]
    lines.append(
        f"- set at {small:,}: {r_set:.2f}× the dict merge "
        f"(target ≤ 15×: {'met' if r_set <= 15 else 'MISSED'}); 1-key form "
        f"{_ratio(m1[OURS_SET1], m1[BASE_SET1])} the dict 1-key set; "
        f"get {_ratio(m1[OURS_GET], m1[BASE_GET])} the dict get + copy"
    )
    for ours, base, what in (
        (OURS_SET, BASE_SET, "set"),
        (OURS_SET1, BASE_SET1, "set 1 key"),
        (OURS_GET, BASE_GET, "get"),
    ):
        g_ours = medians[big][ours] / medians[small][ours]
        g_dict = medians[big][base] / medians[small][base]
        verdict = "met" if g_ours <= 1.5 * g_dict else "MISSED"
        lines.append(
            f"- {what} growth: ours ×{g_ours:.2f}, dict ×{g_dict:.2f} → "
            f"{g_ours / g_dict:.2f}× the dict's growth (target ≤ 1.5×: {verdict})"
        )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×"


def run(quick: bool = False) -> list[Table]:
    """All session tables; ``quick`` skips 1M sessions and shortens repetitions."""
    repeats = 5 if quick else 7
    target = 0.015 if quick else 0.2
    sizes = [1_000, 100_000] if quick else [1_000, 100_000, 1_000_000]
    tables: list[Table] = []
    medians: dict[int, dict[str, float]] = {}
    for n in sizes:
        set_t, get_t, med = _set_get_tables(n, repeats, target)
        medians[n] = med
        tables += [set_t, get_t]

    tables[-1].note = _set_targets(medians, sizes[0], sizes[-1])

    scan_sizes = [1_000, 100_000] if quick else [1_000, 10_000, 100_000]
    for n in scan_sizes:
        tables.append(_scan_table(n, repeats, target, fill_limit=1_000 if quick else 10_000))
    scan = {r.name: r.median for r in tables[-1].results}
    ts_ratio = scan[TS_SET] / scan[OURS_SCAN_SET]
    tables[-1].note += (
        f"\n\nTarget: at {scan_sizes[-1]:,} sessions ours is ≥ 100× faster than the TS port: "
        f"{ts_ratio:,.0f}× ({'met' if ts_ratio >= 100 else 'MISSED'})."
    )

    gen, val = _token_tables(repeats if quick else 11, target)
    g = {r.name: r.median for r in gen.results}
    v = {r.name: r.median for r in val.results}
    gen.note = (
        f"ours / signalwire-agents: {_ratio(g['ours generate_token'], g['signalwire-agents generate_token'])}"
        " (target ≤ 1×)"
    )
    val.note = (
        "ours / signalwire-agents: valid "
        f"{_ratio(v['ours validate_token: valid'], v['signalwire-agents validate_token: valid'])}, "
        "wrong call id "
        f"{_ratio(v['ours validate_token: wrong call id'], v['signalwire-agents validate_token: wrong call id'])}"
        " (target ≤ 1×)"
    )
    tables += [gen, val]
    return tables


def _summary(tables: list[Table]) -> str:
    return "\n".join(format_table(t) for t in tables)


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    t0 = time.perf_counter()
    out = run(quick=quick)
    print(_summary(out))
    print(f"_{time.perf_counter() - t0:.0f} s_", file=sys.stderr)
