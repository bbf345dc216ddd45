"""``lk-metadata serve``: run the token endpoint (:mod:`livekit.plugins.metadata.server.run`)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

from ._common import exit_on_errors, fail, opt

__all__ = ["serve_command"]


def serve_command(
    config: Annotated[
        Path | None, opt("--config -c", "FILE", "Server config file (YAML/TOML/JSON).")
    ] = None,
    host: Annotated[str | None, opt("--host", "HOST", "Override the configured host.")] = None,
    port: Annotated[int | None, opt("--port", "PORT", "Override the configured port.")] = None,
    workers: Annotated[
        int,
        opt(
            "--workers",
            "N",
            "Serving processes on the one port (SO_REUSEPORT where the OS has it).",
            min=1,
            max=256,
        ),
    ] = 1,
) -> None:
    """Run the token endpoint (LiveKit's standard token-endpoint format)."""
    try:
        server: Any = importlib.import_module("livekit.plugins.metadata.server.run")
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("livekit.plugins.metadata"):
            fail(f"the token server needs the missing package {exc.name!r}", 1)
        fail("the token server is not available in this installation", 1)
    config_path = str(config) if config is not None else None
    with exit_on_errors():
        try:
            server.run(config_path=config_path, host=host, port=port, workers=workers)
        except KeyboardInterrupt:
            return
