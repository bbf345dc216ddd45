"""MetadataRouter: per-decision cost with 10 and with 1,000 rules.

Each operation is one ``router.route(metadata)`` call (match + building the
``Route`` with its job metadata), cycling through a fixed list of metadata
mappings that hit early rules, late rules, nested paths and the default.

* **10 rules**: a realistic support/sales/language/VIP rule set (equality, ``in``,
  ``exists``, ``not``, ``prefix``, numeric and a dotted path), default ``general``.
* **1,000 rules**: 990 rules with two equality conditions each (``tenant`` and
  ``department``) plus 10 non-indexable rules (``prefix``/``regex``/numeric)
  spread through the list; the metadata hits rules near the start, the middle,
  the end, and nothing (default).

The anchor row repeats perf-baseline.md's "get + dict() copy" (80 ns on the
reference VM), so a run on a slower or busier machine can be scaled back.

The same-run baseline is :class:`LinearScan` over the same compiled rules: a naive
linear scan that checks every rule in order (identical results, proven by the
hypothesis test in ``tests/test_router.py``). Targets from issue 5: ≤ 2 µs per
decision at 10 rules; the 1,000-rule cost ≤ 10× the 10-rule cost.

A second table routes phone calls (issue 17): ``when_attributes`` rules on the
dialed number (``sip.trunkPhoneNumber: {phone: ...}``) at 10, 1,000 and 10,000
rules, for repeat callers (the memoized normalization hits) and new callers (the
memo cleared before each decision: every decision normalizes),
next to the cost of normalizing one number with libphonenumber and the baseline,
a dict lookup of an already-normalized E.164 string. Target: a decision with
10,000 number rules costs ≤ 2× one with 10.

Run: ``uv run python -m bench.bench_router [--quick]``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from bench._harness import Case, Table, format_table, measure
from livekit.plugins.metadata.routing.phone import normalize_number
from livekit.plugins.metadata.routing.route import Route
from livekit.plugins.metadata.routing.router import MetadataRouter

__all__ = [
    "LinearScan",
    "phone_rules",
    "phone_samples",
    "route_case",
    "rules_10",
    "rules_1000",
    "run",
    "samples_10",
    "samples_1000",
]

_ANCHOR = "anchor: dict.get + dict() copy of 5 keys"
_ANCHOR_REFERENCE_S = 80e-9
"""perf-baseline.md §3 "get + dict() copy" at 1k sessions on the reference 2-vCPU VM."""


def rules_10() -> dict[str, Any]:
    """Ten realistic rules over department, language and caller fields."""
    return {
        "rules": [
            {
                "name": "blocked",
                "when": {"tenant": {"in": ["banned", "suspended"]}},
                "reject": True,
            },
            {
                "name": "vip",
                "when": {"caller.tier": "vip", "caller.id": {"exists": True}},
                "agent": "vip",
            },
            {
                "name": "support-es",
                "when": {"department": "support", "language": {"in": ["es", "es-MX"]}},
                "agent": "support-es",
                "job_metadata": ["department", "language", "customer"],
            },
            {
                "name": "support-fr",
                "when": {"department": "support", "language": "fr"},
                "agent": "support-fr",
            },
            {
                "name": "support-en",
                "when": {"department": "support", "language": {"not": {"in": ["es", "fr"]}}},
                "agent": "support",
            },
            {
                "name": "sales-eu",
                "when": {"department": "sales", "phone": {"prefix": "+3"}},
                "agent": "sales-eu",
            },
            {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
            {
                "name": "billing",
                "when": {"department": "billing", "amount": {"gte": 1000}},
                "agent": "billing-senior",
            },
            {"name": "billing-std", "when": {"department": "billing"}, "agent": "billing"},
            {"name": "minor", "when": {"age": {"lt": 18}}, "agent": "guardian"},
        ],
        "default": "general",
    }


def samples_10() -> list[dict[str, Any]]:
    """Metadata hitting early rules, late rules, a nested path and the default."""
    return [
        {"department": "support", "language": "es", "customer": "c-1"},
        {"department": "support", "language": "fr"},
        {"department": "support", "language": "en"},
        {"department": "sales", "phone": "+3312345"},
        {"department": "sales", "phone": "+1555"},
        {"department": "billing", "amount": 5000},
        {"caller": {"tier": "vip", "id": 7}, "department": "support"},
        {"age": 12},
        {"department": "unknown"},
        {},
    ]


def rules_1000() -> dict[str, Any]:
    """990 two-equality rules plus 10 non-indexable rules spread through the list."""
    rules: list[dict[str, Any]] = []
    for i in range(1000):
        if i % 100 == 50:
            rules.append(
                {
                    "name": f"scan-{i}",
                    "when": {"phone": {"prefix": f"+{i}"}, "amount": {"gt": i}},
                    "agent": f"agent-{i % 20}",
                }
            )
        else:
            rules.append(
                {
                    "name": f"tenant-{i}",
                    "when": {"tenant": f"t{i}", "department": f"d{i % 5}"},
                    "agent": f"agent-{i % 20}",
                }
            )
    return {"rules": rules, "default": "general"}


def samples_1000() -> list[dict[str, Any]]:
    """Metadata hitting rules at the start, middle and end, a scan rule and nothing."""
    return [
        {"tenant": "t3", "department": "d3"},
        {"tenant": "t120", "department": "d0"},
        {"tenant": "t499", "department": "d4"},
        {"tenant": "t777", "department": "d2"},
        {"tenant": "t998", "department": "d3"},
        {"tenant": "t998", "department": "d0"},
        {"phone": "+650123", "amount": 900},
        {"tenant": "t5000", "department": "d1"},
        {"department": "d1"},
        {},
    ]


class LinearScan:
    """The baseline: the router's compiled rules checked one by one, in order."""

    def __init__(self, router: MetadataRouter) -> None:
        self._rules = [
            (tuple((c.check, c.source == "attributes") for c in r.conds), r.target)
            for r in router.rule_set.rules
        ]
        self._default = router.rule_set.default

    def route(self, md: Mapping[str, Any], attributes: Mapping[str, str] | None = None) -> Route:
        attrs = attributes or {}
        for checks, target in self._rules:
            for check, on_attrs in checks:
                if not check(attrs if on_attrs else md):
                    break
            else:
                return Route(**target.fields, metadata=dict(md))
        assert self._default is not None
        return Route(**self._default.fields, metadata=dict(md))

    def match_index(self, md: Mapping[str, Any]) -> int | None:
        route = self.route(md)
        return route.rule_index


def phone_rules(n: int) -> dict[str, Any]:
    """``n`` rules, each for one dialed number (``+3491`` and 7 digits), default ``reception``."""
    return {
        "rules": [
            {
                "name": f"line-{i}",
                "when_attributes": {"sip.trunkPhoneNumber": {"phone": f"+3491{i:07d}"}},
                "agent": f"agent-{i % 20}",
            }
            for i in range(n)
        ],
        "default": "reception",
    }


_SPELLINGS = (
    lambda n: n,
    lambda n: "00" + n[1:],
    lambda n: f"tel:{n[:3]}-{n[3:6]}-{n[6:9]}-{n[9:]}",
    lambda n: f"sip:{n}@pbx.example.com",
    lambda n: n[1:],
)


def phone_samples(n: int, count: int = 10) -> list[dict[str, str]]:
    """``count`` calls to numbers spread over the ``n`` lines (every 10th dials no rule's
    number), in varying spellings."""
    out = []
    for k in range(count):
        line = (k * 7919) % n if k % 10 else n + k
        spelled = _SPELLINGS[k % len(_SPELLINGS)](f"+3491{line:07d}")
        out.append({"sip.trunkPhoneNumber": spelled, "sip.phoneNumber": f"+3460{k:07d}"})
    return out


def _phone_case(
    name: str, router: MetadataRouter, calls: Sequence[Mapping[str, str]], *, fresh: bool
) -> Case:
    route = router.route
    n = len(calls)
    empty: dict[str, Any] = {}
    forget = normalize_number.cache_clear

    def fn(loops: int) -> None:
        for i in range(loops):
            if fresh:
                forget()  # a new caller: this decision normalizes its number
            route(empty, attributes=calls[i % n])

    return Case(name, fn)


def _normalize_cases(numbers: Sequence[str]) -> list[Case]:
    normalized = {normalize_number(x) for x in numbers}
    table = dict.fromkeys(normalized, 1)
    keys = [k for k in normalized if k]
    uncached = normalize_number.__wrapped__  # type: ignore[attr-defined]

    def lookup(loops: int) -> None:
        get = table.get
        m = len(keys)
        for i in range(loops):
            get(keys[i % m])

    def normalize(loops: int) -> None:
        m = len(numbers)
        for i in range(loops):
            uncached(numbers[i % m], None)

    return [
        Case("dict lookup of a normalized E.164 string", lookup, baseline=True),
        Case("normalize one number (libphonenumber, uncached)", normalize),
    ]


def run_phone(quick: bool = False) -> Table:
    """Decision cost at 10 / 1,000 / 10,000 number rules, and normalization per number."""
    repeats = 5 if quick else 9
    target = 0.05 if quick else 0.2
    sizes = (10, 1_000, 10_000)
    routers = {n: MetadataRouter.from_dict(phone_rules(n)) for n in sizes}
    calls = {n: phone_samples(n, 20) for n in sizes}
    for n in sizes:  # the index answers as a linear scan does
        scan = LinearScan(routers[n])
        for attrs in calls[n]:
            if routers[n].route({}, attributes=attrs) != scan.route({}, attributes=attrs):
                raise AssertionError("indexed and scanning routers disagree")
    cases = _normalize_cases([c["sip.trunkPhoneNumber"] for c in calls[10_000]])
    for fresh, who in ((False, "repeat"), (True, "new")):
        for n in sizes:
            name = f"decision, {n:,} number rules, {who} callers"
            cases.append(_phone_case(name, routers[n], calls[n], fresh=fresh))
    table = measure(
        "Phone routing: per-decision cost by number rules", cases, repeats=repeats, target=target
    )
    by = {r.name: r.median for r in table.results}
    ratios = []
    for who in ("repeat", "new"):
        r = (
            by[f"decision, 10,000 number rules, {who} callers"]
            / by[f"decision, 10 number rules, {who} callers"]
        )
        ratios.append(f"{who} callers {r:.2f}× ({'meets' if r <= 2 else 'MISSES'} ≤ 2×)")
    table.note = (
        "One op = one `route({}, attributes=...)` on the dialed number (`sip.trunkPhoneNumber`), "
        "20 calls cycling, numbers in varying spellings (E.164, 00-prefixed, tel: URI, sip: "
        "URI, no '+'), 10% dialing no rule's number. Repeat callers: the memoized "
        "normalization hits. New callers: the memo is cleared before each decision, so every "
        "decision normalizes. Baseline: a dict lookup of an already-normalized string "
        "(normalization: the same 20 spellings, uncached).\n\n"
        "10,000 / 10 number rules: " + "; ".join(ratios) + "."
    )
    return table


def route_case(
    name: str,
    router: MetadataRouter | LinearScan,
    samples: Sequence[Mapping[str, Any]],
    *,
    baseline: bool = False,
    match_only: bool = False,
) -> Case:
    route = router.match_index if match_only else router.route
    n = len(samples)

    def fn(loops: int) -> None:
        rounds, extra = divmod(loops, n)
        for _ in range(rounds):
            for md in samples:
                route(md)
        for md in samples[:extra]:
            route(md)

    return Case(name, fn, baseline=baseline)


def _check_same(a: MetadataRouter, b: LinearScan, samples: list[dict[str, Any]]) -> None:
    for md in samples:
        if a.route(md).rule_index != b.route(md).rule_index:
            raise AssertionError("indexed and scanning routers disagree")


def run(quick: bool = False) -> list[Table]:
    """One table: naive scan vs indexed routing at 10 and 1,000 rules."""
    repeats = 5 if quick else 9
    target = 0.05 if quick else 0.2
    r10, s10 = rules_10(), samples_10()
    r1k, s1k = rules_1000(), samples_1000()
    idx10, idx1k = MetadataRouter.from_dict(r10), MetadataRouter.from_dict(r1k)
    scan10, scan1k = LinearScan(idx10), LinearScan(idx1k)
    _check_same(idx10, scan10, s10)
    _check_same(idx1k, scan1k, s1k)
    anchor_src = {"sessions": {"k1": 1, "k2": "v", "k3": True, "k4": None, "k5": 2.5}}

    def anchor(loops: int) -> None:
        get = anchor_src.get
        for _ in range(loops):
            dict(get("sessions") or {})

    table = measure(
        "MetadataRouter.route(): per-decision cost",
        [
            Case(_ANCHOR, anchor),
            route_case("naive scan, 10 rules", scan10, list(s10), baseline=True),
            route_case("indexed, 10 rules", idx10, list(s10)),
            route_case(
                "indexed, 10 rules: match only (no Route)", idx10, list(s10), match_only=True
            ),
            route_case("indexed, 1,000 rules", idx1k, list(s1k)),
            route_case("naive scan, 1,000 rules", scan1k, list(s1k)),
        ],
        repeats=repeats,
        target=target,
    )
    by_name = {r.name: r.median for r in table.results}
    t10 = by_name["indexed, 10 rules"]
    t1k = by_name["indexed, 1,000 rules"]
    ratio = t1k / t10
    scale = _ANCHOR_REFERENCE_S / by_name[_ANCHOR]
    t10_ref = t10 * scale
    table.note = (
        "One op = one `route(metadata)` (match + Route with job metadata), cycling 10 "
        "metadata mappings per rule set (early, late, nested, default). Baseline: the same "
        "compiled rules checked one by one (`LinearScan`).\n\n"
        f"Targets: indexed 10 rules = {t10 * 1e6:.2f} µs on this run "
        f"({'meets' if t10 <= 2e-6 else 'misses'} ≤ 2 µs); scaled to the reference VM of "
        f"perf-baseline.md by the anchor row (80 ns there): {t10_ref * 1e6:.2f} µs "
        f"({'meets' if t10_ref <= 2e-6 else 'misses'} ≤ 2 µs). Indexed 1,000 rules / 10 rules = "
        f"{ratio:.2f}× ({'meets' if ratio <= 10 else 'MISSES'} ≤ 10×)."
    )
    return [table, run_phone(quick)]


if __name__ == "__main__":
    for table in run(quick="--quick" in sys.argv[1:]):
        print(format_table(table))
