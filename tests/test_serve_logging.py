"""``lk-metadata serve``'s own log handler and formatter (issue 24: the log line off the hot path).

The formatter gives the same text as ``logging.Formatter`` with the same format;
the handler writes every line but flushes its stream once per event-loop
iteration, and at once outside a loop (start-up, exit).
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys

import pytest

from livekit.plugins.metadata.server.run import LOG_FORMAT, CachedTimeFormatter, LoopFlushedHandler

pytestmark = pytest.mark.unit


class CountingStream(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def record(
    msg: str = "token request status=%d", args: tuple[object, ...] = (201,)
) -> logging.LogRecord:
    return logging.LogRecord("livekit.plugins.metadata", logging.INFO, __file__, 1, msg, args, None)


def test_the_formatter_writes_what_logging_formatter_writes() -> None:
    ours, stdlib = CachedTimeFormatter(LOG_FORMAT), logging.Formatter(LOG_FORMAT)
    for rec in (record(), record("100%% %s", ("done",)), record("plain", ())):
        assert ours.format(rec) == stdlib.format(rec)
    try:
        raise ValueError("boom")
    except ValueError:
        failing = record()
        failing.exc_info = sys.exc_info()
    assert ours.format(failing) == logging.Formatter(LOG_FORMAT).format(failing)
    other = CachedTimeFormatter("%(levelname)s|%(message)s|%(asctime)s")
    same = record()  # one record: two would carry two creation times
    assert other.format(same) == logging.Formatter("%(levelname)s|%(message)s|%(asctime)s").format(
        same
    )


def test_lines_in_one_loop_iteration_reach_the_stream_in_one_flush() -> None:
    stream = CountingStream()
    handler = LoopFlushedHandler(stream)
    handler.setFormatter(CachedTimeFormatter(LOG_FORMAT))

    async def burst() -> tuple[int, int]:
        for _ in range(16):
            handler.handle(record())
        during = stream.flushes
        await asyncio.sleep(0)  # the iteration ends
        await asyncio.sleep(0)
        return during, stream.flushes

    during, after = asyncio.run(burst())
    assert (during, after) == (0, 1)
    assert stream.getvalue().count("token request status=201\n") == 16
    handler.handle(record())  # no running loop: flushed at once
    assert stream.flushes == 2


def test_a_message_written_directly_is_the_line_a_record_gives() -> None:
    stream = io.StringIO()
    handler = LoopFlushedHandler(stream)
    handler.setFormatter(CachedTimeFormatter(LOG_FORMAT))
    rec = record("plain", ())
    handler.handle(rec)
    created_ns = int(rec.created) * 1_000_000_000 + int(rec.msecs) * 1_000_000
    assert handler.write_message(logging.INFO, "plain", created_ns)
    first, second = stream.getvalue().splitlines()
    assert first == second
    handler.addFilter(lambda r: True)  # a filter needs a record: not written directly
    assert not handler.write_message(logging.INFO, "plain")
    other = LoopFlushedHandler(io.StringIO())
    other.setFormatter(logging.Formatter(LOG_FORMAT))
    assert not other.write_message(logging.INFO, "plain")


def test_the_token_line_goes_through_a_record_for_any_other_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from livekit.plugins.metadata.server import core
    from livekit.plugins.metadata.server.messages import EndpointRequest

    request = EndpointRequest("POST", "/token", {}, body=b"")
    request.log.update(principal="bench", room="r-1", agent="support")
    with caplog.at_level(logging.INFO, logger="livekit.plugins.metadata"):
        core._log_request(request, 201, None, 1.5)
    (rec,) = [r for r in caplog.records if r.getMessage().startswith("token request")]
    assert rec.getMessage() == (
        "token request principal=bench room=r-1 agent=support status=201 code=- latency_ms=1.50"
    )
    assert rec.__dict__["room"] == "r-1"
