"""What every ``lk-metadata`` command shares: key and URL options, JSON flags, one-line errors."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from ..codec import DEFAULT_MAX_METADATA_BYTES, parse_metadata
from ..errors import ConfigError, MetadataError, MetadataPluginError

__all__ = [
    "DEV_SERVER_URL",
    "ApiKey",
    "ApiSecret",
    "RulesFile",
    "announce_keys",
    "bad_parameter",
    "checked_url",
    "dumps",
    "duration_flag",
    "exit_on_errors",
    "fail",
    "issuer_for",
    "no_pyjwt_key_warning",
    "opt",
    "parse_attributes",
    "parse_duration",
    "read_json_flag",
    "resolved_keys",
    "server_url",
    "url_option",
]


def opt(flags: str, metavar: str | None, help: str, **extra: Any) -> Any:
    """A ``typer.Option``; ``flags`` is ``"--long"`` or ``"--long -s"``."""
    return typer.Option(*flags.split(), metavar=metavar, help=help, **extra)


ApiKey = Annotated[
    str | None,
    opt("--api-key", "KEY", "LiveKit API key.", envvar="LIVEKIT_API_KEY", show_default=False),
]
ApiSecret = Annotated[
    str | None,
    opt(
        "--api-secret",
        "SECRET",
        "LiveKit API secret (prefer the environment variable).",
        envvar="LIVEKIT_API_SECRET",
        show_default=False,
    ),
]
RulesFile = Annotated[
    Path, opt("--rules", "FILE", "Rules file (YAML, TOML or JSON).", show_default=False)
]


def url_option(help: str) -> Any:
    return opt("--url", "URL", help, envvar="LIVEKIT_URL", show_default=False)


DEV_SERVER_URL = "ws://localhost:7880"
"""The URL of ``livekit-server --dev``: ``token --json``'s server_url when none is set."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration (``90s``, ``10m``, ``1h30m``, ``1.5h``); else ValueError."""
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 10m or 1h30m")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return timedelta(seconds=total)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def bad_parameter(flag: str, message: str) -> typer.BadParameter:
    """Usage error (exit 2) naming ``flag``: ``raise bad_parameter(...) from None``."""
    return typer.BadParameter(message, param_hint=f"'{flag}'")


@contextmanager
def exit_on_errors() -> Iterator[None]:
    """Turn our errors into one ``error:`` line and an exit code (no traceback)."""
    try:
        yield
    except MetadataError as exc:
        fail(exc.message, 2)
    except (ValueError, TypeError) as exc:
        fail((str(exc).splitlines() or [type(exc).__name__])[0], 2)
    except MetadataPluginError as exc:
        fail(exc.message, 1)
    except OSError as exc:
        fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "), 1)


def read_json_flag(value: str | None, flag: str) -> dict[str, Any] | None:
    """``JSON`` or ``@file`` -> dict, or exit 2 naming ``flag``."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise bad_parameter(flag, f"cannot read {path}: not UTF-8 text") from None
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
            raise bad_parameter(flag, f"cannot read {path}: {problem}") from None
    try:
        return parse_metadata(text, max_bytes=DEFAULT_MAX_METADATA_BYTES)
    except MetadataError as exc:
        raise bad_parameter(flag, exc.message) from None


def parse_attributes(items: list[str] | None, flag: str = "--attribute") -> dict[str, str] | None:
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise bad_parameter(flag, "expected key=value")
        out[key] = value
    return out


def duration_flag(text: str, flag: str) -> timedelta:
    """``parse_duration(text)``, or exit 2 naming ``flag``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise bad_parameter(flag, str(exc)) from None


def server_url(url: str | None) -> str:
    """The ``--url`` a command needs (checked as :func:`checked_url`), else exit 1 saying so."""
    if not url:
        fail(
            "LiveKit server URL is not set: set LIVEKIT_URL (e.g. ws://127.0.0.1:7880) or pass --url"
        )
    return checked_url(url) or url


def checked_url(url: str | None) -> str | None:
    """``url`` if it is a LiveKit URL (ws/wss/http/https with a host), else exit 1 saying so."""
    if not url:
        return url
    from ..tokens.keys import check_livekit_url

    try:
        return check_livekit_url(url, setting="--url / LIVEKIT_URL")
    except ConfigError as exc:
        fail(exc.message, 1)


def issuer_for(api_key: str | None, api_secret: str | None, **options: Any) -> Any:
    """A TokenIssuer (``options`` as its keywords) for these keys, else the dev-server keys."""
    from ..tokens.issuer import TokenIssuer

    keys = resolved_keys(api_key, api_secret)
    try:
        return TokenIssuer(keys.key, keys.secret, **options)
    except ConfigError as exc:
        fail(exc.message, 1)


def resolved_keys(api_key: str | None, api_secret: str | None) -> Any:
    """The keys to use (else the dev-server keys), announced; exit 1 when they are unusable."""
    from ..tokens.keys import resolve_keys

    try:
        keys = resolve_keys(api_key, api_secret)
    except ConfigError as exc:
        fail(exc.message, 1)
    announce_keys(keys)
    return keys


def announce_keys(keys: Any) -> None:
    """Say once, cleanly, what is weak about these keys (PyJWT warns on every token)."""
    from ..tokens.keys import key_warning

    if (note := key_warning(keys)) is not None:
        typer.echo(note, err=True)


@contextmanager
def no_pyjwt_key_warning() -> Iterator[None]:
    """Silence PyJWT's per-token InsecureKeyLengthWarning (:func:`announce_keys` said it)."""
    from jwt.warnings import InsecureKeyLengthWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        yield


def dumps(value: Any, *, pretty: bool = True) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0).decode()
