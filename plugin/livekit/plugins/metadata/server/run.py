"""Process start-up for ``lk-metadata serve``: load the config, set up logging, bind, serve."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from .._util import redact_url
from ..log import logger
from .app import create_app
from .config import ServerConfig

__all__ = ["prepare_process", "run"]


def run(
    *, config_path: str | None = None, host: str | None = None, port: int | None = None
) -> None:
    """Run the token server until interrupted (what ``lk-metadata serve`` calls).

    Args:
        config_path: A YAML/TOML/JSON config file (None: all defaults).
        host: Overrides the configured host.
        port: Overrides the configured port.

    Raises:
        ConfigError: The configuration is invalid or incomplete.
    """
    overrides = {"host": host, "port": port}
    if config_path is not None:
        config = ServerConfig.from_file(config_path, **overrides)
    else:
        config = ServerConfig.from_mapping({k: v for k, v in overrides.items() if v is not None})
    _setup_logging()
    if config.credentials().dev:
        print(
            "WARNING: LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not set. Using the LiveKit "
            "dev-server keys (devkey / secret):\n"
            "         tokens are only accepted by `livekit-server --dev`. Do not use this in "
            "production.",
            file=sys.stderr,
            flush=True,
        )
    app = create_app(config, warn_dev_keys=False)  # the warning was printed above
    _print_banner(config)
    prepare_process()
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        print=None,
        access_log=None,
        handle_signals=True,
    )


def _setup_logging() -> None:
    if not logging.getLogger().handlers and not logger.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def _print_banner(config: ServerConfig) -> None:
    display_host = f"[{config.host}]" if ":" in config.host else config.host
    base = f"http://{display_host}:{config.port}"
    auth_hint = (
        "" if config.anonymous_allowed() else ' -H "Authorization: Bearer $TOKEN_SERVER_KEY"'
    )
    routing = "off" if config.rules == "none" else (config.rules or "bundled example rules")
    print(
        f"lk-metadata token server listening on {base}{config.path}\n"
        f"  LiveKit URL handed to clients: {config.server_url}\n"
        f"  routing: {routing}; store: {redact_url(config.store)}\n"
        "Try it:\n"
        f"  curl -s -X POST {base}{config.path}{auth_hint} -H 'Content-Type: application/json' "
        '-d \'{"participant_metadata": "{\\"department\\": \\"support\\"}"}\'',
        flush=True,
    )


def prepare_process() -> None:
    """Move everything loaded at start-up out of the garbage collector's sight.

    Importing ``livekit.agents`` leaves ~150,000 long-lived objects that every
    full collection would scan again while serving; ``gc.freeze()`` (what
    :func:`run` calls just before serving) keeps them out of all future
    collections. Call it yourself when you serve :func:`create_app` by other means.
    """
    import gc

    gc.collect()
    gc.freeze()
