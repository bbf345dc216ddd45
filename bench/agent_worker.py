"""Run a worker file's ``AgentServer`` for ``bench_agent``, as in production (``start``).

    python bench/agent_worker.py examples/agent.py
    python bench/agent_worker.py bench/bare_agent.py

The file is imported as a module of its own name (its directory put first on
``sys.path``), so LiveKit's job processes find its entrypoint and setup function by
that name, exactly as they find ``__main__``'s when the file is run directly: each
job process imports the file once. Jobs run in processes (``JobExecutorType.PROCESS``,
the forkserver on Linux), production mode (no reload, idle processes prewarmed).

Overrides, the same for every file: the worker's HTTP server binds 127.0.0.1 on a
free port (private attributes: ``AgentServer`` has no public setter for them),
``BENCH_IDLE_PROCESSES`` idle processes (default 2), no load threshold. Logs go to stderr;
``registered worker`` marks readiness; SIGTERM closes the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import signal
import sys
from pathlib import Path


def main() -> None:
    path = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(path.parent))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from livekit.agents import AgentServer

    module = importlib.import_module(path.stem)
    server = module.server
    assert isinstance(server, AgentServer)
    server._host = "127.0.0.1"
    server._port = 0
    server.update_options(
        max_retry=2,
        num_idle_processes=int(os.environ.get("BENCH_IDLE_PROCESSES", "2")),
        # LiveKit reserves load_threshold / num_idle_processes per job request it accepts
        # before the job runs: with 2 idle processes a burst of 10 calls would see the
        # worker "full" after two and lose the rest. The bench measures cost, not capacity.
        load_threshold=math.inf,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        task = asyncio.create_task(server.run(devmode=False))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        await server.aclose()
        for t in (task, stopper):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    asyncio.run(run())


if __name__ == "__main__":
    main()
