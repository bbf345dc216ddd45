"""Start a LiveKit agent worker, or say in one line which setting keeps it from LiveKit."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from livekit.agents import AgentServer

__all__ = ["DEV_SETTINGS", "WORKER_MODES", "run_worker", "settings_problem"]

WORKER_MODES = ("dev", "start", "connect")
"""The ``livekit.agents`` CLI modes that connect to a LiveKit server."""

DEV_SETTINGS = (
    "start `livekit-server --dev` and export LIVEKIT_URL=ws://127.0.0.1:7880 "
    "LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret"
)
"""The fix printed after a settings problem: the local development server's settings."""


def settings_problem(
    environ: Mapping[str, str] | None = None, *, timeout: float = 3.0
) -> str | None:
    """What would keep a worker from reaching LiveKit, in a few words (never the key or the
    secret), or None: checks the ``LIVEKIT_*`` settings and asks the URL's host for any answer."""
    env = os.environ if environ is None else environ
    url = env.get("LIVEKIT_URL", "")
    if not url:
        return "LIVEKIT_URL is not set"
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        return "LIVEKIT_URL is not a LiveKit URL (ws://, wss://, http:// or https:// and a host)"
    if not env.get("LIVEKIT_API_KEY") or not env.get("LIVEKIT_API_SECRET"):
        return "LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not set"
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}/", timeout=timeout):  # noqa: S310
            pass
    except urllib.error.HTTPError:
        pass  # the server answered
    except OSError:
        return f"nothing answers at LIVEKIT_URL ({parts.netloc})"
    return None


def run_worker(server: AgentServer, argv: Sequence[str] | None = None) -> None:
    """``cli.run_app(server)``, after checking the settings in a connecting mode.

    Raises SystemExit (status 1) after one line on stderr: ``error: <problem>; <fix>``.
    """
    args = sys.argv if argv is None else argv
    if len(args) > 1 and args[1] in WORKER_MODES:
        problem = settings_problem()
        if problem is not None:
            print(f"error: {problem}; {DEV_SETTINGS}", file=sys.stderr)
            raise SystemExit(1)
    from livekit.agents import cli

    cli.run_app(server)
