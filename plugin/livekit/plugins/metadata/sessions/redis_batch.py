"""Script calls made in one pass of the event loop go to Redis as one pipeline.

With 16 concurrent requests a token endpoint makes many ``EVALSHA`` calls at
once; sent one by one, each costs a connection checkout, a ``send`` and a
``recv`` (on loopback the kernel's work for both lands on the caller's CPU).
:class:`ScriptBatch` queues the calls of one loop pass and sends them in one
non-transactional pipeline: one write, one read, replies matched in order. Each
call still runs atomically on its own (a pipeline is no transaction); a script
the server does not know (``NOSCRIPT``, after a restart or failover) is loaded
once and its calls sent again. One server or a Sentinel-managed master only
(a Cluster routes per key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = ["ScriptBatch"]

_Call = tuple[Any, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatch:
    """Runs registered scripts (redis-py ``Script`` objects) in per-loop-pass pipelines.

    A batch that is not answered within ``timeout`` seconds (a connection to wait
    for included) fails each of its calls with ``TimeoutError``: one deadline per
    batch rather than a timer per call.
    """

    def __init__(self, client: Any, timeout: float) -> None:
        from redis.exceptions import NoScriptError

        self._client = client
        self._timeout = timeout
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._no_script = NoScriptError

    def __repr__(self) -> str:
        return f"ScriptBatch(pending={len(self._pending)}, in_flight={len(self._tasks)})"

    def run(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        """The script's reply (or its error), once the pipeline it joins has been answered."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await asyncio.wait_for(self._answer(batch), self._timeout)
        except BaseException as exc:  # the pipeline failed as a whole: every caller hears it
            for *_, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller gave up (its deadline)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _answer(self, batch: list[_Call]) -> list[Any]:
        replies = await self._execute(batch)
        missing = [i for i, r in enumerate(replies) if isinstance(r, self._no_script)]
        if missing:  # the server forgot the scripts: load each once, send those again
            for script in {id(batch[i][0]): batch[i][0] for i in missing}.values():
                await self._client.script_load(script.script)
            again = await self._execute([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
