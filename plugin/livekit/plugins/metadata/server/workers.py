"""Listening sockets and serving processes for ``lk-metadata serve [--workers N]``.

The parent holds the address and forks; with ``SO_REUSEPORT`` each worker binds its own
socket, elsewhere all accept on the parent's. If one worker dies, the rest are stopped.
"""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from aiohttp import web

from ..errors import ConfigError
from ..log import logger
from .app import create_app
from .config import ServerConfig
from .edge import EdgeConfig, edge_runner, serve_edge
from .peers import SharedPeerCounts

__all__ = ["bind_sockets", "run_workers", "serve"]

_BACKLOG = 1024
_STARTUP_TIMEOUT = 120.0
_STOP_TIMEOUT = 20.0
_HAS_REUSEPORT = hasattr(socket, "SO_REUSEPORT")


def bind_sockets(
    host: str, port: int, *, reuse_port: bool = False, listen: bool = True
) -> list[socket.socket]:
    """Bind (and listen on) every address ``host`` resolves to (ConfigError if one cannot)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            if sockets and port == 0:
                address = (*address[:1], sockets[0].getsockname()[1], *address[2:])
            sock = _bind_one(family, kind, proto, address, reuse_port, listen)
            if sock is not None:
                sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise ConfigError(f"cannot listen on {host}:{port}: address not available")
    return sockets


def _bind_one(
    family: int, kind: int, proto: int, address: Any, reuse_port: bool, listen: bool
) -> socket.socket | None:
    """One bound socket; None when this address family is not enabled (as asyncio does)."""
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            return None
        host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
        where = f"{host}:{address[1]}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {where}: address already in use (is another server "
                "running there?)"
            ) from None
        raise ConfigError(f"cannot listen on {where}: {exc.strerror}") from None
    return sock


async def serve(
    app: web.Application,
    sockets: list[socket.socket],
    edge: EdgeConfig,
    *,
    ready: Callable[[], None] | None = None,
    peer_counts: SharedPeerCounts | None = None,
) -> None:
    """Serve ``app`` on bound sockets through the edge until SIGINT or SIGTERM."""
    runner = edge_runner(app, edge)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.Server] = []
    try:
        servers = await serve_edge(runner, sockets, edge, peer_counts=peer_counts, backlog=_BACKLOG)
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()


def run_workers(
    config: ServerConfig,
    workers: int,
    *,
    banner: Callable[[int], None],
    prepare: Callable[[], None],
) -> None:
    """Fork ``workers`` serving processes on one port; return when all have stopped.

    ``banner(port)`` runs once every worker listens, ``prepare()`` in each process once
    its app is built. ConfigError: the address is in use, no fork, or a worker failed.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigError("--workers needs an OS with fork(); use one process per port")
    ctx = multiprocessing.get_context("fork")
    if _HAS_REUSEPORT:
        # Fail clearly if anything listens there, then hold the port (bound, not
        # listening, so the kernel never hands this socket a connection).
        probes = bind_sockets(config.host, config.port)
        port = probes[0].getsockname()[1]
        for probe in probes:
            probe.close()
        held = bind_sockets(config.host, port, reuse_port=True, listen=False)
    else:
        held = bind_sockets(config.host, config.port)
        port = held[0].getsockname()[1]
    reports = ctx.Queue()
    peer_counts = SharedPeerCounts()
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.set())
    procs = [
        ctx.Process(
            target=_worker,
            args=(config, port, held, reports, prepare, peer_counts),
            name=f"lk-metadata-worker-{i}",
        )
        for i in range(workers)
    ]
    prepare()
    try:
        for proc in procs:
            proc.start()
        if _wait_ready(procs, reports, stopping):
            banner(port)
            _supervise(procs, stopping)
    finally:
        _stop_all(procs)
        for sock in held:
            sock.close()


def _worker(
    config: ServerConfig,
    port: int,
    held: list[socket.socket],
    reports: Any,
    prepare: Callable[[], None],
    peer_counts: SharedPeerCounts,
) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)  # the parent's handlers are not ours
    try:
        if _HAS_REUSEPORT:
            for sock in held:
                sock.close()
            sockets = bind_sockets(config.host, port, reuse_port=True)
        else:
            sockets = held
        app = create_app(config, warn_dev_keys=False)
    except Exception as exc:
        text = str(exc) if isinstance(exc, ConfigError) else type(exc).__name__
        reports.put(("error", text))
        return
    prepare()
    asyncio.run(
        serve(
            app,
            sockets,
            config.edge,
            ready=lambda: reports.put(("ready", "")),
            peer_counts=peer_counts,
        )
    )


def _wait_ready(procs: list[Any], reports: Any, stopping: threading.Event) -> bool:
    """True once every worker listens; False if asked to stop first."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    pending = len(procs)
    while pending:
        if stopping.is_set():
            return False
        if time.monotonic() > deadline:
            raise ConfigError("the workers did not start in time")
        try:
            kind, text = reports.get(timeout=0.2)
        except queue.Empty:
            if any(not proc.is_alive() for proc in procs):
                raise ConfigError("a worker exited while starting") from None
            continue
        if kind == "error":
            raise ConfigError(f"a worker failed to start: {text}")
        pending -= 1
    return True


def _supervise(procs: list[Any], stopping: threading.Event) -> None:
    sentinels = [proc.sentinel for proc in procs]
    while not stopping.is_set():
        if wait(sentinels, timeout=0.2):
            dead = next(proc for proc in procs if not proc.is_alive())
            logger.error(
                "worker %s exited with code %s; stopping the others", dead.name, dead.exitcode
            )
            raise SystemExit(1)


def _stop_all(procs: list[Any]) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        if proc.pid is None:
            continue
        proc.join(timeout=_STOP_TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=_STOP_TIMEOUT)
