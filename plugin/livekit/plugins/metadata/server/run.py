"""Process start-up for ``lk-metadata serve``: load the config, set up logging, bind, serve."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

from .._util import redact_url
from ..errors import ConfigError
from ..log import logger
from ..tokens.keys import DEV_KEYS_WARNING
from .app import create_app
from .config import Principal, RateLimit, ServerConfig
from .playground import playground_enabled
from .workers import bind_sockets, run_workers, serve

__all__ = [
    "LOG_FORMAT",
    "CachedTimeFormatter",
    "LoopFlushedHandler",
    "memory_workers_note",
    "prepare_process",
    "run",
]


def run(
    *,
    config_path: str | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
) -> None:
    """Run the token server until SIGINT/SIGTERM (``lk-metadata serve``); ``host`` and ``port``
    override the config file's. ConfigError: an invalid or incomplete config, an address
    that cannot be bound, or a worker that failed to start."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    overrides = {"host": host, "port": port}
    if config_path is not None:
        config = ServerConfig.from_file(config_path, **overrides)
    else:
        config = ServerConfig.from_mapping({k: v for k, v in overrides.items() if v is not None})
    _setup_logging()
    if config.credentials().dev:
        print(DEV_KEYS_WARNING, file=sys.stderr, flush=True)
    if workers == 1:
        sockets = bind_sockets(config.host, config.port)
        port = sockets[0].getsockname()[1]
        app = create_app(config, warn_dev_keys=False)  # the warning was printed above
        _print_banner(config, port, workers)
        prepare_process()
        asyncio.run(serve(app, sockets, config.edge))
        return
    if config.store == "memory" and config.limits is None:
        logger.warning(memory_workers_note(config, workers))
    run_workers(
        config,
        workers,
        banner=lambda bound: _print_banner(config, bound, workers),
        prepare=prepare_process,
    )


def _times(n: int, limit: RateLimit | None) -> str:
    if limit is None:
        return "off"
    return f"{n * limit.rate:g}/s, burst {n * limit.burst} ({n} x {limit.rate:g}/s, burst {limit.burst})"


def memory_workers_note(config: ServerConfig, workers: int) -> str:
    """The start-up line for ``store: memory`` with several workers: each keeps its own
    sessions and limits, so every limit but the connection cap is multiplied."""
    n = workers
    share = config.session_share(Principal(id="-"))
    return (
        f"store: memory with {n} workers: each worker keeps its own sessions and limits, so "
        f"for the whole server the effective limits are max_sessions {n * config.max_sessions} "
        f"({n} x {config.max_sessions}), sessions per principal {n * share} ({n} x {share}), "
        f"rate_limit {_times(n, config.rate_limit)}, "
        f"peer_rate_limit {_times(n, config.peer_rate_limit)}, "
        f"auth_failure_limit {_times(n, config.auth_failure_limit)}; the connection cap per "
        f"client address ({config.edge.max_connections_per_peer}) holds for the whole server. "
        "Configure a redis:// store to share every limit."
    )


LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
"""``lk-metadata serve``'s log format (when nothing else configured logging)."""


def _setup_logging() -> None:
    if not logging.getLogger().handlers and not logger.handlers:
        handler = LoopFlushedHandler(_buffered_stderr())
        handler.setFormatter(CachedTimeFormatter(LOG_FORMAT))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        # This process's own log format names no thread or process: skip collecting them.
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def _buffered_stderr() -> TextIO:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stderr  # not a real file (a test runner's capture): as it is
    return open(
        fd, "w", buffering=1 << 16, encoding="utf-8", errors="backslashreplace", closefd=False
    )


if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[TextIO]
else:  # generic at runtime only from Python 3.11
    _StreamHandler = logging.StreamHandler


class LoopFlushedHandler(_StreamHandler):
    """A ``StreamHandler`` that flushes once per event-loop iteration (at once outside a
    loop): the lines of many requests finished in one iteration take one write."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.flush_pending = False

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_pending = False
            super().flush()
            return
        if not self.flush_pending:
            self.flush_pending = True
            loop.call_soon(self.flush_now)

    def flush_now(self) -> None:
        self.flush_pending = False
        super().flush()

    def write_message(self, level: int, message: str, created_ns: int | None = None) -> bool:
        """Write ``message`` as a record of it would be written, without a ``LogRecord``
        (for a caller whose logger reaches only this handler). False, nothing written,
        when a record is needed: a filter, a higher level, another format, a failed write."""
        formatter = self.formatter
        if (
            self.filters
            or level < self.level
            or not isinstance(formatter, CachedTimeFormatter)
            or not formatter.fast
        ):
            return False
        ns = time.time_ns() if created_ns is None else created_ns
        stamp = formatter.stamp(ns / 1e9, (ns % 1_000_000_000) // 1_000_000)
        line = f"{stamp} {logging.getLevelName(level)} {message}{self.terminator}"
        with self.lock or contextlib.nullcontext():
            try:
                self.stream.write(line)
            except Exception:
                return False
            self.flush()
        return True


class CachedTimeFormatter(logging.Formatter):
    """``logging.Formatter`` (documented to override ``formatTime``), one strftime per second."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self.fast = fmt == LOG_FORMAT  # this format is built directly, without the % mapping
        self.second = -1
        self.stamped = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created, int(record.msecs))

    def stamp(self, created: float, msecs: int) -> str:
        second = int(created)
        if second != self.second:
            self.second = second
            self.stamped = time.strftime(self.default_time_format, self.converter(created))
        return f"{self.stamped},{msecs:03d}"

    def format(self, record: logging.LogRecord) -> str:
        if self.fast and not record.exc_info and not record.exc_text and not record.stack_info:
            record.message = message = record.getMessage()
            return f"{self.formatTime(record)} {record.levelname} {message}"
        return super().format(record)


def _print_banner(config: ServerConfig, port: int, workers: int) -> None:
    display_host = f"[{config.host}]" if ":" in config.host else config.host
    base = f"http://{display_host}:{port}"
    auth_hint = (
        "" if config.anonymous_allowed() else ' -H "Authorization: Bearer $TOKEN_SERVER_KEY"'
    )
    routing = "off" if config.rules == "none" else (config.rules or "bundled example rules")
    print(
        f"lk-metadata token server listening on {base}{config.path}"
        + (f" ({workers} workers)" if workers > 1 else "")
        + "\n"
        f"  LiveKit URL handed to clients: {config.server_url}\n"
        f"  routing: {routing}; store: {redact_url(config.store)}\n"
        + (f"  routing playground: {base}/playground\n" if playground_enabled(config) else "")
        + "Try it:\n"
        f"  curl -s -X POST {base}{config.path}{auth_hint} -H 'Content-Type: application/json' "
        '-d \'{"participant_metadata": "{\\"department\\": \\"support\\"}"}\'',
        flush=True,
    )


def prepare_process() -> None:
    """``gc.freeze()`` what start-up loaded (~150,000 objects from ``livekit.agents``) so no
    collection scans it again; :func:`run` calls it, call it when serving by other means."""
    import gc

    gc.collect()
    gc.freeze()
