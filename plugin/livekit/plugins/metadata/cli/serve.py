"""``lk-metadata serve``: run the token endpoint (:mod:`livekit.plugins.metadata.server.run`)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import exit_on_errors, fail

__all__ = ["serve_command"]


def serve_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", metavar="FILE", help="Server config file (YAML/TOML/JSON)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST", help="Override the configured host.")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", metavar="PORT", help="Override the configured port.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            max=256,
            help="Serving processes on the one port (SO_REUSEPORT where the OS has it).",
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
    with exit_on_errors():
        try:
            server.run(
                config_path=str(config) if config is not None else None,
                host=host,
                port=port,
                workers=workers,
            )
        except KeyboardInterrupt:
            return
