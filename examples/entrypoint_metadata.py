"""A minimal agent entrypoint that loads job and caller metadata into a session.

Run against a LiveKit server (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)::

    uv run python examples/entrypoint_metadata.py dev

Importing this module starts nothing; the worker starts only under ``__main__``.
"""

from __future__ import annotations

import logging

from livekit.agents import AgentServer, JobContext

from livekit.plugins.metadata import MetadataAdapter, SessionManager
from livekit.plugins.metadata.agent.worker import run_worker

logger = logging.getLogger("entrypoint-metadata")

server = AgentServer()


def make_adapter() -> MetadataAdapter:
    """The job's adapter; ``SessionManager(RedisStore.from_url(...))`` shares across workers."""
    return MetadataAdapter(SessionManager(), protected_keys=["agent"])


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """Load job + caller metadata (kept in sync while the call lasts) and read it."""
    session = await make_adapter().attach(ctx)  # bad metadata is logged and counted, never raised
    metadata = await session.get()
    logger.info("session %s holds keys %s", session.id, sorted(metadata))
    await session.set("greeted", True)
    await session.publish(["greeted"])  # visible to the caller as an agent attribute


def main() -> None:
    """Run the worker; a missing or bad setting is one line naming the fix, and exit 1."""
    run_worker(server)


if __name__ == "__main__":
    main()
