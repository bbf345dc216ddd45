"""RedisStore vs raw redis-py vs read-modify-write JSON: sessions/second and bytes/session.

The bench starts its own ``redis-server`` (persistence off) on a free loopback port
and stops it by PID. One "session op" is *merge 5 keys + read the session back*,
on a rotating set of 1,000 session ids with the same five pre-encoded JSON values
(about 100 B of metadata). Exactly what each case sends:

* ``raw redis-py HSET + HGETALL`` (baseline): ``HSET key f1 v1 .. f5 v5`` then
  ``HGETALL key``; 2 round trips; no TTL, no size check, values not decoded.
* ``RedisStore merge + get``: ``EVALSHA`` of the merge script (size check under the
  byte limit, ``HSET`` of 5 fields + the size field, ``PEXPIRE``; atomic), then
  ``HGETALL`` and orjson-decoding of each value; 2 round trips, each under the
  store's deadline. What ``SessionManager`` does with a store lacking the fused op.
* ``RedisStore merge_and_get``: the optional fused operation
  (:class:`~livekit.plugins.metadata.sessions.store.MergeAndGet`): one ``EVALSHA`` of the
  same merge script, which after the write also reads the hash (``HGETALL``
  inside the script) and returns it as one JSON object text; one ``orjson.loads``;
  1 round trip, atomic, under the store's deadline. The targets apply to this
  case (``SessionManager`` uses it when the store offers it).
* ``raw redis-py pipeline HSET+PEXPIRE+HGETALL (MULTI)``: the three commands in one
  MULTI/EXEC pipeline; 1 round trip; no size check, values not decoded. Shown for
  scale: the raw floor for a fused merge-and-read.
* ``RMW JSON GET+SET, then GET``: the rejected design: ``GET``, ``orjson.loads``,
  ``dict.update``, ``orjson.dumps``, ``SET .. PX ttl``, then ``GET`` + ``loads`` to
  read it back; 3 round trips. Not atomic: it loses concurrent updates (see the
  2 × 500 test, where this design loses almost every key).

Two tables: one asyncio task (latency-bound), and 50 concurrent tasks on one
event loop (client-CPU-bound on a small machine); under each, the issue's targets
computed from the same run (throughput ratios of ``merge_and_get``: ≥ 0.9× raw,
≥ 2× read-modify-write). A memory table follows: Redis bytes per 5-key session
with a TTL.

Then two topology tables (1 and 50 tasks): ``merge_and_get`` on the single server
(baseline) vs a Redis Cluster (3 masters + 3 replicas) and a Sentinel-managed
master with one replica, each also with ``durability="wait"``, started from the
test fixtures' classes; under each, the cost of ``wait`` as a ratio.

Run: ``uv run python -m bench.bench_redis [--quick]``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench._harness import Case, Table, format_table, measure
from livekit.plugins.metadata.sessions.redis import Durability, RedisStore

__all__ = ["run"]

_FIELDS: dict[str, Any] = {
    "user_id": "u-1234567",
    "tier": "gold",
    "lang": "en-US",
    "room": "support-room-42",
    "flags": ["beta", "vip"],
}
_ENCODED = {k: orjson.dumps(v) for k, v in _FIELDS.items()}
_RAW_MAPPING = {k.encode(): v for k, v in _ENCODED.items()}
_TTL = 3600.0
_TTL_MS = 3_600_000
_MAX_BYTES = 64_000
_N_SESSIONS = 1000
_CONCURRENCY = 50
_WARMUP = 4 * _CONCURRENCY


class _Server:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench_redis: redis-server not found on PATH")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="lkmeta-bench-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--protected-mode",
                "yes",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise SystemExit("bench_redis: redis-server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_Op = Callable[[str], Awaitable[object]]


class _Driver:
    """Runs one case's session op ``loops`` times, sequentially or over N tasks.

    Every case gets its own event loop, client and key prefix, created on first use.
    """

    def __init__(
        self, url: str, name: str, concurrency: int, durability: Durability = "primary"
    ) -> None:
        self.url = url
        self.prefix = f"b{name}:"
        self.concurrency = concurrency
        self.durability: Durability = durability
        self.loop = asyncio.new_event_loop()
        self.raw: aioredis.Redis | None = None
        self.store: RedisStore | None = None

    def _setup(self) -> None:
        if self.store is not None:
            return
        if self.url.startswith("redis://"):  # the raw cases need a plain client
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=64, timeout=5.0, socket_timeout=5.0
            )
            self.raw = aioredis.Redis.from_pool(pool)
        self.store = RedisStore.from_url(
            self.url, prefix=self.prefix, pool_size=64, timeout=5.0, durability=self.durability
        )

    def case(self, make_op: Callable[[_Driver], _Op]) -> Callable[[int], object]:
        op: _Op | None = None

        async def body(loops: int) -> None:
            if self.concurrency == 1:
                for i in range(loops):
                    await op_ref(str(i % _N_SESSIONS))
                return
            per, extra = divmod(loops, self.concurrency)

            async def worker(w: int, n: int) -> None:
                for i in range(n):
                    await op_ref(str((w * 7919 + i) % _N_SESSIONS))

            await asyncio.gather(
                *(worker(w, per + (1 if w < extra else 0)) for w in range(self.concurrency))
            )

        async def op_ref(sid: str) -> object:
            assert op is not None
            return await op(sid)

        def fn(loops: int) -> object:
            nonlocal op
            if op is None:
                self._setup()
                op = make_op(self)
                # Warm up outside the timings: connections, a cluster's topology discovery
                # and script loading would otherwise fall into the calibration's first
                # calls and leave it with a handful of loops (a latency, not a rate).
                self.loop.run_until_complete(body(_WARMUP))
            return self.loop.run_until_complete(body(loops))

        return fn

    def close(self) -> None:
        async def _close() -> None:
            if self.store is not None:
                await self.store.aclose()
            if self.raw is not None:
                await self.raw.aclose()

        self.loop.run_until_complete(_close())
        self.loop.close()


def _raw(d: _Driver) -> _Op:
    raw = d.raw
    assert raw is not None
    prefix = d.prefix

    async def op(sid: str) -> object:
        key = prefix + sid
        await raw.hset(key, mapping=_RAW_MAPPING)
        return await raw.hgetall(key)

    return op


def _store(d: _Driver) -> _Op:
    store = d.store
    assert store is not None

    async def op(sid: str) -> object:
        await store.merge(sid, _ENCODED, ttl=_TTL, max_bytes=_MAX_BYTES)
        return await store.get(sid)

    return op


def _fused(d: _Driver) -> _Op:
    store = d.store
    assert store is not None

    async def op(sid: str) -> object:
        return await store.merge_and_get(sid, _ENCODED, ttl=_TTL, max_bytes=_MAX_BYTES)

    return op


def _pipeline(d: _Driver) -> _Op:
    raw = d.raw
    assert raw is not None
    prefix = d.prefix

    async def op(sid: str) -> object:
        key = prefix + sid
        async with raw.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_RAW_MAPPING)
            pipe.pexpire(key, _TTL_MS)
            pipe.hgetall(key)
            return (await pipe.execute())[-1]

    return op


def _rmw(d: _Driver) -> _Op:
    raw = d.raw
    assert raw is not None
    prefix = d.prefix

    async def op(sid: str) -> object:
        key = prefix + sid
        current = await raw.get(key)
        doc = orjson.loads(current) if current else {}
        doc.update(_FIELDS)
        await raw.set(key, orjson.dumps(doc), px=_TTL_MS)
        again = await raw.get(key)
        return orjson.loads(again) if again else {}

    return op


_CASES: list[tuple[str, str, Callable[[_Driver], _Op], bool]] = [
    ("raw", "raw redis-py HSET + HGETALL (2 RTT)", _raw, True),
    ("store", "RedisStore merge + get (2 RTT, atomic, TTL, size check)", _store, False),
    (
        "fused",
        "RedisStore merge_and_get (1 RTT, atomic, TTL, size check)",
        _fused,
        False,
    ),
    ("pipe", "raw redis-py pipeline HSET+PEXPIRE+HGETALL, MULTI (1 RTT)", _pipeline, False),
    ("rmw", "RMW JSON GET+SET, then GET (3 RTT, loses updates)", _rmw, False),
]


def _throughput(url: str, concurrency: int, quick: bool) -> Table:
    drivers: list[_Driver] = []
    cases: list[Case] = []
    for tag, name, make_op, baseline in _CASES:
        d = _Driver(url, f"{tag}{concurrency}", concurrency)
        drivers.append(d)
        cases.append(Case(name, d.case(make_op), baseline=baseline))
    try:
        title = (
            "Redis session op (merge 5 keys + get), 1 asyncio task"
            if concurrency == 1
            else f"Redis session op (merge 5 keys + get), {concurrency} concurrent asyncio tasks"
        )
        table = measure(
            title,
            cases,
            repeats=5 if quick else 7,
            target=0.1 if quick else 0.25,
            note="Rate = sessions/second through one client; time vs baseline < 1 is faster.",
        )
        table.note += "\n\n" + _targets(table)
        return table
    finally:
        for d in drivers:
            d.close()


def _targets(table: Table) -> str:
    """The issue's targets, as throughput ratios (baseline time / case time), same run."""
    by_tag = dict(zip((tag for tag, *_ in _CASES), table.results, strict=True))
    fused, raw, rmw = by_tag["fused"].median, by_tag["raw"].median, by_tag["rmw"].median
    vs_raw, vs_rmw = raw / fused, rmw / fused
    return (
        f"Targets (throughput of `merge_and_get` = case time of the other / its time): "
        f"vs raw redis-py {vs_raw:.2f}× (target ≥ 0.9×: {'met' if vs_raw >= 0.9 else 'MISSED'}); "
        f"vs read-modify-write {vs_rmw:.2f}× (target ≥ 2×: {'met' if vs_rmw >= 2 else 'MISSED'})."
    )


def _topologies(single_url: str, quick: bool) -> list[Table]:
    """``merge_and_get`` on one server vs a Redis Cluster and Sentinel, and the cost of WAIT."""
    from tests.fixtures.redis_cluster import RedisCluster
    from tests.fixtures.redis_sentinel import RedisSentinel

    cluster = RedisCluster(_binary("redis-server"), _binary("redis-cli"))
    sentinel = RedisSentinel(_binary("redis-server"))
    try:
        cluster.start()
        sentinel.start()
        setups: list[tuple[str, str, str, Durability]] = [
            ("one", "single server", single_url, "primary"),
            ("cl", "Redis Cluster, 3 masters + 3 replicas", cluster.url, "primary"),
            ("clw", "Redis Cluster, durability='wait'", cluster.url, "wait"),
            ("se", "Sentinel, master + replica", sentinel.url, "primary"),
            ("sew", "Sentinel, durability='wait'", sentinel.url, "wait"),
        ]
        return [_topology_table(setups, n, quick) for n in (1, _CONCURRENCY)]
    finally:
        cluster.close()
        sentinel.close()


def _topology_table(
    setups: list[tuple[str, str, str, Durability]], concurrency: int, quick: bool
) -> Table:
    drivers = [
        _Driver(url, f"t{tag}{concurrency}", concurrency, dur) for tag, _, url, dur in setups
    ]
    try:
        cases = [
            Case(name, d.case(_fused), baseline=tag == "one")
            for d, (tag, name, _, _) in zip(drivers, setups, strict=True)
        ]
        tasks = "1 asyncio task" if concurrency == 1 else f"{concurrency} concurrent asyncio tasks"
        table = measure(
            f"RedisStore merge_and_get by topology, {tasks}",
            cases,
            repeats=5 if quick else 7,
            target=0.1 if quick else 0.25,
            note="Rate = sessions/second (merge 5 keys + read back, 1 round trip) through one "
            "client; all servers on this machine's loopback.",
        )
        med = {tag: r.median for (tag, *_), r in zip(setups, table.results, strict=True)}
        table.note += (
            f"\n\nCost of durability='wait' (case time / same topology's time): "
            f"cluster {med['clw'] / med['cl']:.2f}×, Sentinel {med['sew'] / med['se']:.2f}×."
        )
        return table
    finally:
        for d in drivers:
            d.close()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"bench_redis: {name} not found on PATH")
    return path


async def _memory(url: str, n: int) -> str:
    raw = aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(url, max_connections=4, timeout=5.0)
    )
    # few connections: client buffers stay constant and out of the per-session delta
    store = RedisStore.from_url(url, prefix="lkmeta:", pool_size=4)
    rows: list[str] = []
    try:

        async def used() -> int:
            await raw.execute_command("MEMORY", "PURGE")
            info = await raw.info("memory")
            return int(info["used_memory"])

        async def layout(
            label: str, write: Callable[[str], Awaitable[object]], sample_key: Callable[[str], str]
        ) -> None:
            await raw.flushall()
            before = await used()
            ids = [str(uuid.uuid4()) for _ in range(n)]
            for start in range(0, n, 50):
                await asyncio.gather(*(write(sid) for sid in ids[start : start + 50]))
            after = await used()
            sample = await raw.memory_usage(sample_key(ids[0]), samples=0)
            enc = await raw.object("encoding", sample_key(ids[0]))
            ttl = await raw.pttl(sample_key(ids[0]))
            payload = await _payload_bytes(raw, sample_key(ids[0]))
            rows.append(
                f"| {label} | {enc.decode() if isinstance(enc, bytes) else enc} | "
                f"{'yes' if ttl > 0 else 'no'} | {payload} | {sample} | "
                f"{(after - before) / n:.0f} |"
            )

        async def via_store(sid: str) -> None:
            await store.merge(sid, _ENCODED, ttl=_TTL, max_bytes=_MAX_BYTES)

        async def hash_ttl(sid: str) -> None:
            async with raw.pipeline(transaction=True) as pipe:
                pipe.hset("lkmeta:" + sid, mapping=_RAW_MAPPING)
                pipe.pexpire("lkmeta:" + sid, _TTL_MS)
                await pipe.execute()

        async def json_ttl(sid: str) -> None:
            await raw.set("lkmeta:" + sid, orjson.dumps(_FIELDS), px=_TTL_MS)

        def key(sid: str) -> str:
            return "lkmeta:" + sid

        await layout("warm-up", via_store, key)  # script cache, connections, allocator
        rows.clear()
        await layout("RedisStore (hash, 5 fields + size field)", via_store, key)
        await layout("raw hash, 5 fields", hash_ttl, key)
        await layout("JSON string (SET)", json_ttl, key)
        await raw.flushall()
    finally:
        await store.aclose()
        await raw.aclose()
    return "\n".join(
        [
            f"Redis memory per 5-key session with TTL (key `lkmeta:` + 36-char id; "
            f"{n:,} sessions; `MEMORY USAGE` excludes the expiry entry, the used_memory "
            "delta includes it). Target: ≤ 300 B per session with TTL. Payload = bytes of "
            "field names and values (hash) or of the string; layouts whose payloads differ by "
            "a few bytes can show the same memory, because Redis's allocator (jemalloc) "
            "rounds every allocation up to a size class.",
            "",
            "| layout | encoding | TTL | payload B | MEMORY USAGE sample B "
            "| used_memory delta B/session |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )


async def _payload_bytes(raw: aioredis.Redis, key: str) -> int:
    """Logical size of a session: field names + values of a hash, or the string's length."""
    if await raw.type(key) in (b"hash", "hash"):
        fields = await raw.hgetall(key)
        return sum(len(k) + len(v) for k, v in fields.items())
    return int(await raw.strlen(key))


def run(quick: bool = False) -> list[Table]:
    """Throughput tables (1 task, 50 tasks), with the memory table as the last note."""
    if shutil.which("redis-server") is None:
        reason = "skipped: redis-server is not on PATH (apt-get install redis-server)"
        print(f"bench_redis: {reason}", file=sys.stderr)
        return [Table("Redis session store", [], note=reason)]
    server = _Server()
    try:
        tables = [_throughput(server.url, 1, quick), _throughput(server.url, _CONCURRENCY, quick)]
        if shutil.which("redis-cli") is not None:
            tables += _topologies(server.url, quick)
        memory = asyncio.run(_memory(server.url, 5_000 if quick else 50_000))
        tables.append(Table("Redis memory per session", [], note=memory))
        return tables
    finally:
        server.stop()


if __name__ == "__main__":
    for table in run(quick="--quick" in sys.argv[1:]):
        print(format_table(table))
