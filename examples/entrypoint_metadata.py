"""A minimal agent entrypoint that loads job and caller metadata into a session.

Run against a LiveKit server (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)::

    uv run python examples/entrypoint_metadata.py dev

Importing this module starts nothing; the worker starts only under ``__main__``.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from livekit.agents import AgentServer, JobContext, cli

from livekit.plugins.metadata import MetadataAdapter, SessionManager

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


WORKER_MODES = ("dev", "start", "connect")
DEV_SETTINGS = (
    "start `livekit-server --dev` and export LIVEKIT_URL=ws://127.0.0.1:7880 "
    "LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret"
)


def settings_problem() -> str | None:
    """What would keep this worker from reaching LiveKit, in a few words, or None."""
    url = os.environ.get("LIVEKIT_URL", "")
    if not url:
        return "LIVEKIT_URL is not set"
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        return "LIVEKIT_URL is not a LiveKit URL (ws://, wss://, http:// or https:// and a host)"
    if not os.environ.get("LIVEKIT_API_KEY") or not os.environ.get("LIVEKIT_API_SECRET"):
        return "LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not set"
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}/", timeout=3):  # noqa: S310
            pass
    except urllib.error.HTTPError:
        pass  # the server answered
    except OSError:
        return f"nothing answers at LIVEKIT_URL ({parts.netloc})"
    return None


def main() -> None:
    """Run the worker; a missing or bad setting is one line naming the fix, and exit 1."""
    if len(sys.argv) > 1 and sys.argv[1] in WORKER_MODES:
        problem = settings_problem()
        if problem is not None:
            print(f"error: {problem}; {DEV_SETTINGS}", file=sys.stderr)
            raise SystemExit(1)
    cli.run_app(server)


if __name__ == "__main__":
    main()
