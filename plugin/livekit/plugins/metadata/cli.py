"""``lk-metadata``: mint and inspect metadata-carrying LiveKit tokens, route, serve.

Commands (``lk-metadata COMMAND --help`` for each):

* ``token``  — mint a join token with metadata, attributes and an agent dispatch
  (modelled on ``lk token create``; unlike it, metadata must be a JSON object
  and invalid JSON exits 2 naming the flag);
* ``verify`` — check a token's signature, issuer and expiry and print its claims;
* ``route``  — show which agent a rules file picks for some metadata (``--explain``);
* ``serve``  — run the token endpoint (``livekit.plugins.metadata.server.run``).

Keys come from ``--api-key`` / ``--api-secret`` or ``LIVEKIT_API_KEY`` /
``LIVEKIT_API_SECRET``. Exit codes: 0 success, 1 failure (invalid token,
missing configuration, routing error), 2 bad usage (unknown flag, invalid JSON
or duration). Errors are one ``error: ...`` line on stderr — never a traceback,
a secret or a token.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from .codec import DEFAULT_MAX_METADATA_BYTES, parse_metadata
from .errors import ConfigError, MetadataError, MetadataPluginError

__all__ = ["app", "main", "parse_duration"]

app = typer.Typer(
    name="lk-metadata",
    help="Metadata-carrying LiveKit tokens, routing and the token server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="LIVEKIT_API_KEY",
        show_default=False,
        help="LiveKit API key.",
    ),
]
ApiSecret = Annotated[
    str | None,
    typer.Option(
        "--api-secret",
        envvar="LIVEKIT_API_SECRET",
        show_default=False,
        help="LiveKit API secret (prefer the environment variable).",
    ),
]

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
    """Parse a Go-style duration (``90s``, ``10m``, ``1h30m``, ``1.5h``).

    Raises:
        ValueError: Not a duration with units.
    """
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


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn our errors into one ``error:`` line and an exit code (no traceback)."""
    try:
        yield
    except (MetadataError, ValueError, TypeError) as exc:
        _fail(_message(exc), 2)
    except MetadataPluginError as exc:
        _fail(exc.message, 1)
    except OSError as exc:
        _fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "), 1)


def _message(exc: Exception) -> str:
    if isinstance(exc, MetadataPluginError):
        return exc.message
    text = str(exc).splitlines()
    return text[0] if text else type(exc).__name__


def _read_json_flag(value: str | None, flag: str) -> dict[str, Any] | None:
    """``JSON`` or ``@file`` -> dict, or exit 2 naming ``flag``."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(
                f"cannot read {path}: {type(exc).__name__}", param_hint=f"'{flag}'"
            ) from None
    try:
        return parse_metadata(text, max_bytes=DEFAULT_MAX_METADATA_BYTES)
    except MetadataError as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{flag}'") from None


def _parse_attributes(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter("expected key=value", param_hint="'--attribute'")
        out[key] = value
    return out


def _issuer(api_key: str | None, api_secret: str | None, **kwargs: Any) -> Any:
    from .tokens.issuer import TokenIssuer

    if not api_key:
        _fail("LiveKit API key is not set: set LIVEKIT_API_KEY or pass --api-key", 1)
    if not api_secret:
        _fail("LiveKit API secret is not set: set LIVEKIT_API_SECRET or pass --api-secret", 1)
    try:
        return TokenIssuer(api_key, api_secret, **kwargs)
    except ConfigError as exc:
        _fail(exc.message, 1)


def _dumps(value: Any, *, pretty: bool = True) -> str:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, option=option).decode()


def _remaining(seconds: float) -> str:
    sign = "in " if seconds >= 0 else ""
    suffix = "" if seconds >= 0 else " ago"
    s = int(abs(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    parts = [f"{h}h"] if h else []
    if m or h:
        parts.append(f"{m}m")
    parts.append(f"{sec}s")
    return sign + "".join(parts) + suffix


@app.command("token")
def token_command(
    identity: Annotated[str, typer.Option("--identity", "-i", help="Participant identity.")],
    room: Annotated[str, typer.Option("--room", "-r", help="Room to join (the only one granted).")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Display name.")] = None,
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", "-m", help="Participant metadata: a JSON object or @file."),
    ] = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option("--attribute", "-a", help="Participant attribute key=value (repeatable)."),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Dispatch this agent when the room is created.")
    ] = None,
    deployment: Annotated[
        str | None, typer.Option("--deployment", "-d", help="Agent deployment (with --agent).")
    ] = None,
    job_metadata: Annotated[
        str | None,
        typer.Option("--job-metadata", help="Job metadata for the agent: JSON object or @file."),
    ] = None,
    valid_for: Annotated[
        str, typer.Option("--valid-for", help="Token lifetime, Go-style: 90s, 10m, 1h30m.")
    ] = "10m",
    allow_update_metadata: Annotated[
        bool,
        typer.Option(
            "--allow-update-metadata", help="Let the participant update its own metadata."
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON object instead of the bare token.")
    ] = False,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Mint a join token carrying metadata, attributes and an agent dispatch.

    Least privilege: room join for ROOM only; no admin grants; the participant
    cannot change its own metadata unless --allow-update-metadata is given.
    """
    md = _read_json_flag(metadata, "--metadata")
    job = _read_json_flag(job_metadata, "--job-metadata")
    attrs = _parse_attributes(attribute)
    try:
        ttl = parse_duration(valid_for)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--valid-for'") from None
    if ttl.total_seconds() < 1:
        raise typer.BadParameter("must be at least 1s", param_hint="'--valid-for'")
    if (deployment is not None or job is not None) and not agent:
        raise typer.BadParameter("needs --agent", param_hint="'--deployment/--job-metadata'")

    from .tokens.issuer import Dispatch

    issuer = _issuer(api_key, api_secret)
    with _errors():
        token = issuer.mint(
            identity,
            room,
            name=name,
            metadata=md,
            attributes=attrs,
            dispatch=[Dispatch(agent, metadata=job, deployment=deployment)] if agent else [],
            can_update_own_metadata=allow_update_metadata,
            ttl=ttl,
        )
    if not as_json:
        typer.echo(token)
        return
    from .tokens.claims import grant_claim

    verified = issuer.verify(token)
    out: dict[str, Any] = {
        "access_token": token,
        "identity": identity,
        "name": name or "",
        "room": room,
        "grants": grant_claim(verified.grants),
        "expires_at": verified.expires_at.isoformat(),
    }
    if agent:
        out["agent"] = agent
    typer.echo(_dumps(out))


@app.command("verify")
def verify_command(
    token: Annotated[str, typer.Argument(help="The token, or - to read it from stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the claims as JSON.")] = False,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Verify a token (signature, issuer, expiry) and print its decoded claims."""
    if token == "-":  # noqa: S105 - "-" means stdin, not a password
        token = sys.stdin.read().strip()
    issuer = _issuer(api_key, api_secret)
    try:
        verified = issuer.verify(token)
    except MetadataPluginError as exc:
        _fail(f"token is invalid: {exc.message}", 1)
    left = verified.expires_at.timestamp() - time.time()
    dispatches = []
    for d in verified.dispatches:
        job: Any = d.metadata
        if isinstance(job, str):
            with contextlib.suppress(MetadataError):  # else shown as the raw string
                job = parse_metadata(job)
        entry: dict[str, Any] = {"agent_name": d.agent_name}
        if d.deployment:
            entry["deployment"] = d.deployment
        if job is not None:
            entry["metadata"] = job
        if d.attributes:
            entry["attributes"] = dict(d.attributes)
        dispatches.append(entry)
    grants = verified.grant_claims
    if as_json:
        out = {
            "valid": True,
            "identity": verified.identity,
            "name": verified.name,
            "room": verified.room,
            "kind": verified.kind,
            "issuer": verified.issuer,
            "not_before": verified.not_before.isoformat() if verified.not_before else None,
            "expires_at": verified.expires_at.isoformat(),
            "grants": grants,
            "attributes": verified.attributes,
            "metadata": verified.metadata,
            "dispatches": dispatches,
        }
        typer.echo(_dumps(out))
        return
    lines = [
        "valid:      yes (signature, issuer and expiry checked)",
        f"identity:   {verified.identity}",
    ]
    if verified.name:
        lines.append(f"name:       {verified.name}")
    lines.append(f"room:       {verified.room}")
    if verified.kind:
        lines.append(f"kind:       {verified.kind}")
    lines.append(f"issuer:     {verified.issuer}")
    if verified.not_before:
        lines.append(f"not before: {verified.not_before.isoformat()}")
    lines.append(f"expires:    {verified.expires_at.isoformat()} ({_remaining(left)})")
    lines.append(f"grants:     {_dumps(grants, pretty=False)}")
    if verified.attributes:
        lines.append(f"attributes: {_dumps(verified.attributes, pretty=False)}")
    lines.append("metadata:")
    lines.extend("  " + line for line in _dumps(verified.metadata).splitlines())
    for entry in dispatches:
        head = f"dispatch:   {entry['agent_name']}"
        if "deployment" in entry:
            head += f" (deployment {entry['deployment']})"
        lines.append(head)
        if "metadata" in entry:
            lines.append("  job metadata:")
            lines.extend("    " + line for line in _dumps(entry["metadata"]).splitlines())
        if "attributes" in entry:
            lines.append(f"  job attributes: {_dumps(entry['attributes'], pretty=False)}")
    typer.echo("\n".join(lines))


@app.command("route")
def route_command(
    rules: Annotated[
        Path, typer.Option("--rules", help="Rules file (YAML, TOML or JSON).", show_default=False)
    ],
    metadata: Annotated[
        str, typer.Option("--metadata", "-m", help="Metadata to route: a JSON object or @file.")
    ],
    explain: Annotated[
        bool, typer.Option("--explain", help="Show every rule and why it matched or not.")
    ] = False,
) -> None:
    """Show which agent the rules pick for some metadata."""
    md = _read_json_flag(metadata, "--metadata")
    from .routing.router import MetadataRouter, format_explain, format_route

    with _errors():
        router = MetadataRouter.from_file(rules)
        if explain:
            # The trace first: it is most useful exactly when nothing matches.
            typer.echo(format_explain(router.explain(md or {})))
        route = router.route(md or {})
        typer.echo(format_route(route))


@app.command("serve")
def serve_command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Server config file (YAML/TOML/JSON).")
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Override the configured host.")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Override the configured port.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
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
            _fail(f"the token server needs the missing package {exc.name!r}", 1)
        _fail("the token server is not available in this installation", 1)
    with _errors():
        try:
            server.run(
                config_path=str(config) if config is not None else None,
                host=host,
                port=port,
                workers=workers,
            )
        except KeyboardInterrupt:
            return


def main() -> None:
    """Entry point of the ``lk-metadata`` command."""
    try:
        app(prog_name="lk-metadata")
    except Exception as exc:  # last resort: never a traceback on the terminal
        typer.echo(f"error: unexpected failure ({type(exc).__name__})", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
