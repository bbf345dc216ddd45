"""Metadata parse + merge per update: the codec against bare ``orjson.loads`` + ``dict.update``.

Per payload size (about 100 B, 4 KiB and 64 KiB of realistic, nested
participant metadata: a profile plus a list of small objects), one table with:

* ``orjson.loads + dict.update`` (baseline): what a hand-written entrypoint does,
  with no validation at all;
* ``json.loads + dict.update`` (stdlib): the same hand-written merge with the
  standard library's parser, for reference;
* ``codec parse_metadata + dict.update``: the same merge through the metadata
  contract (size limit, UTF-8, strict JSON, object check, exact nesting bound);
  target ≤ 1.2× the baseline (validation costs ≤ 20 %);
* ``adapter update path (a caller's view)``: an extra row, not part of the target —
  what one participant-metadata room event costs inside ``MetadataAdapter`` (parse,
  merge into the caller's view with its size check, counters).

Run: ``uv run python -m bench.bench_codec [--quick]``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson

from livekit.plugins.metadata.codec import parse_metadata

from ._harness import Case, Table, format_table, measure, run_async_loop

__all__ = ["make_payload", "run"]

SIZES = (("100 B", 100), ("4 KiB", 4096), ("64 KiB", 63_000))


def make_payload(size: int) -> bytes:
    """Compact JSON metadata of about ``size`` bytes (never over it, except the minimum)."""
    doc: dict[str, Any] = {"user": {"id": "u-1", "name": "Ada"}, "lang": "en"}
    i = 0
    while True:
        item = {
            "sku": f"S{i:05d}",
            "qty": i % 7,
            "price": round(i * 1.25, 2),
            "note": "fragile, handle with care",
            "opts": {"color": "red", "size": "M", "tags": ["a", "b"]},
        }
        trial = dict(doc)
        trial[f"item{i}"] = item
        if len(orjson.dumps(trial)) > size:
            break
        doc = trial
        i += 1
    if i == 0:
        doc["pad"] = "x" * max(0, size - len(orjson.dumps(doc)) - 9)
    return orjson.dumps(doc)


def _bare(data: bytes) -> Case:
    loads = orjson.loads

    def fn(loops: int) -> None:
        session: dict[str, Any] = {}
        for _ in range(loops):
            session.update(loads(data))

    return Case("orjson.loads + dict.update", fn, baseline=True)


def _stdlib(data: bytes) -> Case:
    loads = json.loads

    def fn(loops: int) -> None:
        session: dict[str, Any] = {}
        for _ in range(loops):
            session.update(loads(data))

    return Case("json.loads + dict.update (stdlib)", fn)


def _codec(data: bytes) -> Case:
    parse = parse_metadata

    def fn(loops: int) -> None:
        session: dict[str, Any] = {}
        for _ in range(loops):
            session.update(parse(data))

    return Case("codec parse_metadata + dict.update", fn)


class _Caller:
    """A stand-in remote participant (what the adapter reads of one)."""

    identity = "caller"
    sid = "PA_caller"
    metadata = ""
    kind = 0  # PARTICIPANT_KIND_STANDARD

    def __init__(self) -> None:
        self.attributes: dict[str, str] = {}


def _adapter(data: bytes) -> Case:
    from livekit import rtc
    from livekit.agents.testing import fake_job_context

    from livekit.plugins.metadata.agent.adapter import MetadataAdapter
    from livekit.plugins.metadata.sessions.manager import SessionManager

    class _Room(rtc.EventEmitter[str]):
        name = "bench"
        metadata = ""

        def __init__(self) -> None:
            super().__init__()
            self.remote_participants: dict[str, _Caller] = {}

        def isconnected(self) -> bool:
            return True

    adapter = MetadataAdapter(SessionManager(), flood_rate=1e12)
    text = data.decode()
    room, caller = _Room(), _Caller()

    async def make(loops: int) -> None:
        if not room.remote_participants:
            room.remote_participants[caller.identity] = caller
            with fake_job_context(room=room) as ctx:  # type: ignore[arg-type]
                await adapter.attach(ctx, caller)  # type: ignore[arg-type]
                ctx._tempdir.cleanup()
        for _ in range(loops):
            room.emit("participant_metadata_changed", caller, "", text)

    return Case("adapter update path (a caller's view)", run_async_loop(make))


def run(quick: bool = False) -> list[Table]:
    """Measure every size; ``quick`` uses shorter repetitions."""
    repeats, target = (5, 0.02) if quick else (9, 0.2)
    tables = []
    for label, size in SIZES:
        data = make_payload(size)
        # Sanity: the codec accepts it and agrees with orjson.
        assert parse_metadata(data) == orjson.loads(data) == json.loads(data)
        cases = [_bare(data), _stdlib(data), _codec(data), _adapter(data)]
        table = measure(
            f"parse + merge one metadata update, {label} ({len(data)} bytes)",
            cases,
            repeats=repeats,
            target=target,
            note="target: codec ≤ 1.2× the baseline; the stdlib and adapter rows are informational",
        )
        tables.append(table)
    return tables


if __name__ == "__main__":
    for t in run(quick="--quick" in sys.argv[1:]):
        print(format_table(t))
