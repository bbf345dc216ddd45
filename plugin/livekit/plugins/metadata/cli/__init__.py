"""``lk-metadata``: mint and inspect metadata-carrying LiveKit tokens, route, serve, SIP.

Commands (``lk-metadata COMMAND --help``): ``token``, ``verify``, ``route``, ``serve``,
``sip export|sync|call``. Exit codes: 0 success, 1 failure, 2 bad usage. Errors are one
``error: ...`` line on stderr, never a traceback, a secret or a token.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..version import __version__
from . import route, serve, sip, tokens
from ._common import DEV_SERVER_URL, opt, parse_duration

__all__ = ["DEV_SERVER_URL", "app", "main", "parse_duration"]

app = typer.Typer(
    name="lk-metadata",
    help="Metadata-carrying LiveKit tokens, routing and the token server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: no <bool>/<str> type columns
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lk-metadata {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        opt(
            "--version", None, "Show the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    pass


app.command("token")(tokens.token_command)
app.command("verify")(tokens.verify_command)
app.command("route")(route.route_command)
app.command("serve")(serve.serve_command)
app.add_typer(sip.sip_app, name="sip")


def main() -> None:
    try:
        app(prog_name="lk-metadata")
    except SystemExit as exc:
        if "livekit.rtc" in sys.modules:  # `sip call` joined a room
            # LiveKit's native runtime can abort the interpreter's shutdown (SIGABRT).
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise
    except Exception as exc:  # last resort: never a traceback on the terminal
        typer.echo(f"error: unexpected failure ({type(exc).__name__})", err=True)
        sys.exit(1)
