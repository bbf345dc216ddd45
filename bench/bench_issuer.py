"""TokenIssuer vs the ``livekit.api.AccessToken`` chain: mint and verify, tokens per second.

Same inputs for both sides, as in ``perf-baseline.md`` §1: identity, a compact
flat JSON metadata string of 100 B, 4 KiB or 64 KiB placed in **both** the
participant metadata and the dispatch (job) metadata, ``VideoGrants(room_join=True,
room=...)`` and one agent dispatch. The baseline builds a fresh ``AccessToken``
per token (``with_identity`` + ``with_metadata`` + ``with_grants`` +
``with_room_config`` + ``to_jwt``).

TokenIssuer cases:

* ``mint (job_metadata=metadata)``: the same string object for both places, so
  it is validated and serialized once (the common "same metadata for the agent"
  call);
* ``mint (Dispatch(metadata=...))``: the same string given as the dispatch's own
  metadata (also recognised as the same object, so also validated once);
* ``mint (dict input)``: metadata given as a dict (serialized, not parsed).

A second 100 B table mints with **every grant type** livekit-api has (video, SIP,
inference, observability, agent, agent endpoint, agent thread) on both sides, and
a third compares ``await TokenIssuer.amint`` (a session per token in a
``MemoryStore``) with ``mint`` in the same run.

``--quick`` keeps the first two cases of the mint tables, the grant and amint
tables and the 100 B verify table.

Every TokenIssuer case validates the metadata (JSON object, size) and the
identity/room before signing; the baseline validates nothing. The issuer's
metadata limit is raised to 65,536 bytes for the 64 KiB row.

Run: ``uv run python -m bench.bench_issuer [--quick]``.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
from livekit import api

from bench._harness import Case, Table, format_table, measure
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer

__all__ = ["make_metadata", "run"]

_KEY = "APIbenchkey"
_SECRET = "bench-secret-" + "x" * 40
_SIZES = (("100 B", 100), ("4 KiB", 4096), ("64 KiB", 65_536))


def make_metadata(size: int) -> str:
    """A compact, flat JSON object of exactly ``size`` UTF-8 bytes."""
    fields: dict[str, str] = {}
    i = 0
    while True:
        fields[f"k{i:04d}"] = ""
        text = orjson.dumps(fields)
        if len(text) + 24 > size:
            break
        fields[f"k{i:04d}"] = "v" * 16
        i += 1
    last = f"k{i:04d}"
    fields[last] = ""
    fields[last] = "v" * (size - len(orjson.dumps(fields)))
    text = orjson.dumps(fields)
    assert len(text) == size, (len(text), size)
    return text.decode()


def _lk_mint(metadata: str) -> str:
    return (
        api.AccessToken(_KEY, _SECRET)
        .with_identity("user-1")
        .with_metadata(metadata)
        .with_grants(api.VideoGrants(room_join=True, room="room-1"))
        .with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name="triage", metadata=metadata)]
            )
        )
        .to_jwt()
    )


_ALL_GRANTS = (
    api.SIPGrants(call=True),
    api.InferenceGrants(perform=True),
    api.ObservabilityGrants(write=True),
    api.AgentGrants(dispatch_admin=True),
    api.AgentEndpointGrants(call=True, agent_name="triage"),
    api.AgentThreadGrants(scope="s", read=True),
)
_SETTERS = (
    "with_sip_grants",
    "with_inference_grants",
    "with_observability_grants",
    "with_agent_grants",
    "with_agent_endpoint_grants",
    "with_agent_thread_grants",
)


def _lk_mint_all_grants(metadata: str) -> str:
    token = (
        api.AccessToken(_KEY, _SECRET)
        .with_identity("user-1")
        .with_metadata(metadata)
        .with_grants(api.VideoGrants(room_join=True, room="room-1"))
    )
    for setter, grant in zip(_SETTERS, _ALL_GRANTS, strict=True):
        getattr(token, setter)(grant)
    return token.to_jwt()


def _grant_and_session_tables(repeats: int, target: float) -> list[Table]:
    """100 B: every grant type on both sides; amint (session per token) vs mint."""
    md = make_metadata(100)
    issuer = TokenIssuer(_KEY, _SECRET)
    grants = [api.VideoGrants(room_join=True), *_ALL_GRANTS]
    ours = issuer.mint("user-1", "room-1", metadata=md, grants=grants)
    theirs = _lk_mint_all_grants(md)
    assert len(ours) == len(theirs), (len(ours), len(theirs))

    def lk_all(loops: int) -> None:
        for _ in range(loops):
            _lk_mint_all_grants(md)

    def ours_all(loops: int) -> None:
        mint = issuer.mint
        for _ in range(loops):
            mint("user-1", "room-1", metadata=md, grants=grants)

    loop = asyncio.new_event_loop()
    sessions = SessionManager(secret_key="b" * 32)
    with_sessions = TokenIssuer(_KEY, _SECRET, sessions=sessions)
    private = {"customer_id": "c-123", "tier": "gold"}

    def plain_mint(loops: int) -> None:
        mint = with_sessions.mint
        for _ in range(loops):
            mint("user-1", "room-1", metadata=md, dispatch="triage")

    def session_mint(loops: int) -> None:
        async def go() -> None:
            amint = with_sessions.amint
            for _ in range(loops):
                await amint(
                    "user-1", "room-1", metadata=md, private_metadata=private, dispatch="triage"
                )

        loop.run_until_complete(go())

    cases: list[tuple[str, list[Case], str]] = [
        (
            "Mint with every grant type, 100 B metadata",
            [
                Case("AccessToken chain, 7 grant setters + to_jwt()", lk_all, baseline=True),
                Case("TokenIssuer.mint (grants=[7 grants])", ours_all),
            ],
            f"Same claims on both sides ({len(ours):,}-char tokens).",
        ),
        (
            "Session per token, 100 B metadata + 2 private keys",
            [
                Case("TokenIssuer.mint (no session)", plain_mint, baseline=True),
                Case("await TokenIssuer.amint (MemoryStore session)", session_mint),
            ],
            "amint creates a session, writes public + private + owner keys, sets its TTL.",
        ),
    ]
    try:
        return [
            measure(title, case_list, repeats=repeats, target=target, note=note)
            for title, case_list, note in cases
        ]
    finally:
        loop.close()


def _speedups(tables: list[Table]) -> None:
    for table in tables:
        base = table.baseline()
        if base is None:
            continue
        speedups = ", ".join(
            f"{r.name}: {base.median / r.median:.2f}×" for r in table.results if not r.baseline
        )
        table.note += f" Speed-up vs baseline (baseline time / case time): {speedups}."


def run(quick: bool = False) -> list[Table]:
    """Mint and verify tables, one per metadata size."""
    repeats = 5 if quick else 7
    target = 0.02 if quick else 0.2
    issuer = TokenIssuer(_KEY, _SECRET, max_metadata_bytes=65_536)
    verifier = api.TokenVerifier(_KEY, _SECRET)
    tables: list[Table] = []
    for label, size in _SIZES:
        md = make_metadata(size)
        md_dict = orjson.loads(md)
        triage = Dispatch("triage")

        def lk_chain(loops: int, md: str = md) -> None:
            for _ in range(loops):
                _lk_mint(md)

        def ours_same(loops: int, md: str = md, d: Dispatch = triage) -> None:
            mint = issuer.mint
            for _ in range(loops):
                mint("user-1", "room-1", metadata=md, dispatch=d, job_metadata=md)

        def ours_own(loops: int, md: str = md) -> None:
            mint = issuer.mint
            for _ in range(loops):
                mint("user-1", "room-1", metadata=md, dispatch=Dispatch("triage", metadata=md))

        def ours_dict(loops: int, md: dict[str, str] = md_dict, d: Dispatch = triage) -> None:
            mint = issuer.mint
            for _ in range(loops):
                mint("user-1", "room-1", metadata=md, dispatch=d, job_metadata=md)

        lk_token = _lk_mint(md)
        our_token = issuer.mint("user-1", "room-1", metadata=md, dispatch=triage, job_metadata=md)
        assert verifier.verify(our_token).metadata == md
        note = f"Token sizes: AccessToken {len(lk_token):,} chars, TokenIssuer {len(our_token):,}."
        cases = [
            Case("AccessToken chain + to_jwt()", lk_chain, baseline=True),
            Case("TokenIssuer.mint (job_metadata=metadata)", ours_same),
        ]
        if not quick:
            cases += [
                Case("TokenIssuer.mint (Dispatch(metadata=...))", ours_own),
                Case("TokenIssuer.mint (dict input)", ours_dict),
            ]
        tables.append(
            measure(
                f"Mint, {label} metadata (participant + job)",
                cases,
                repeats=repeats,
                target=target,
                note=note,
            )
        )

        def lk_verify(loops: int, token: str = lk_token) -> None:
            verify = verifier.verify
            for _ in range(loops):
                verify(token)

        def ours_verify(loops: int, token: str = lk_token) -> None:
            verify = issuer.verify
            for _ in range(loops):
                verify(token)

        if quick and size > 100:
            continue  # verifying large tokens takes ms each: full runs only
        tables.append(
            measure(
                f"Verify, {label} metadata",
                [
                    Case("TokenVerifier.verify()", lk_verify, baseline=True),
                    Case("TokenIssuer.verify() (+ parse metadata, exp)", ours_verify),
                ],
                repeats=repeats,
                target=target,
                note="Both verify the same AccessToken-minted token.",
            )
        )
        if size == 100:
            tables += _grant_and_session_tables(repeats, target)
    _speedups(tables)
    return tables


if __name__ == "__main__":
    for table in run(quick="--quick" in sys.argv[1:]):
        print(format_table(table))
