"""A minimal agent entrypoint that loads job and caller metadata into a session.

Run against a LiveKit server (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)::

    uv run python examples/entrypoint_metadata.py dev

Importing this module starts nothing; the worker starts only under ``__main__``.
"""

from __future__ import annotations

import logging

from livekit.agents import AgentServer, JobContext, cli

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.sessions.manager import SessionManager

logger = logging.getLogger("entrypoint-metadata")

sessions = SessionManager()  # use SessionManager(RedisStore(...)) to share across workers
adapter = MetadataAdapter(sessions, protected_keys=["agent"])
server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """Load job + caller metadata (kept in sync while the call lasts) and read it."""
    session = await adapter.attach(ctx)  # bad metadata is logged and counted, never raised
    metadata = await session.get()
    logger.info("session %s holds keys %s", session.id, sorted(metadata))
    await session.set("greeted", True)
    await session.publish(["greeted"])  # visible to the caller as an agent attribute


if __name__ == "__main__":
    cli.run_app(server)
