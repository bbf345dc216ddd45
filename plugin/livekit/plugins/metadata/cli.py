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
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from .codec import DEFAULT_MAX_METADATA_BYTES, parse_metadata
from .errors import ConfigError, MetadataError, MetadataPluginError
from .version import __version__

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
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    pass


ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="LIVEKIT_API_KEY",
        metavar="KEY",
        show_default=False,
        help="LiveKit API key.",
    ),
]
ApiSecret = Annotated[
    str | None,
    typer.Option(
        "--api-secret",
        envvar="LIVEKIT_API_SECRET",
        metavar="SECRET",
        show_default=False,
        help="LiveKit API secret (prefer the environment variable).",
    ),
]

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
                f"cannot read {path}: {_file_problem(exc)}", param_hint=f"'{flag}'"
            ) from None
    try:
        return parse_metadata(text, max_bytes=DEFAULT_MAX_METADATA_BYTES)
    except MetadataError as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{flag}'") from None


def _file_problem(exc: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, as the OS says it (``No such file or directory``)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or type(exc).__name__


def _parse_attributes(items: list[str] | None, flag: str = "--attribute") -> dict[str, str] | None:
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter("expected key=value", param_hint=f"'{flag}'")
        out[key] = value
    return out


def _checked_url(url: str | None) -> str | None:
    """``url`` if it is a LiveKit URL (ws/wss/http/https with a host), else exit 1 saying so."""
    if not url:
        return url
    from .tokens.keys import check_livekit_url

    try:
        return check_livekit_url(url, setting="--url / LIVEKIT_URL")
    except ConfigError as exc:
        _fail(exc.message, 1)


def _issuer(api_key: str | None, api_secret: str | None, leeway: timedelta | None = None) -> Any:
    """A TokenIssuer for these keys, or the dev-server keys (with ``serve``'s warning).

    PyJWT's ``InsecureKeyLengthWarning`` (printed with a file path, on every
    token) is replaced by one clean line; with the dev keys the dev warning says it all.
    """
    from .tokens.issuer import TokenIssuer
    from .tokens.keys import resolve_keys

    try:
        keys = resolve_keys(api_key, api_secret)
    except ConfigError as exc:
        _fail(exc.message, 1)
    _announce_keys(keys)
    try:
        if leeway is not None:
            return TokenIssuer(keys.key, keys.secret, leeway=leeway)
        return TokenIssuer(keys.key, keys.secret)
    except ConfigError as exc:
        _fail(exc.message, 1)


def _announce_keys(keys: Any) -> None:
    """Say once, cleanly, what is weak about these keys (the dev pair set on purpose: nothing)."""
    from .tokens.keys import DEV_API_KEY, DEV_API_SECRET, DEV_KEYS_WARNING, short_secret_warning

    if keys.dev:
        typer.echo(DEV_KEYS_WARNING, err=True)
    elif (keys.key, keys.secret) == (DEV_API_KEY, DEV_API_SECRET):
        pass  # the documented dev-server pair, set on purpose: its shortness is known
    elif (note := short_secret_warning(keys.secret)) is not None:
        typer.echo(note, err=True)


@contextmanager
def _no_pyjwt_key_warning() -> Iterator[None]:
    """Silence PyJWT's per-token InsecureKeyLengthWarning (``_issuer`` said it once, cleanly)."""
    from jwt.warnings import InsecureKeyLengthWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        yield


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


Identity = Annotated[
    str, typer.Option("--identity", "-i", metavar="IDENTITY", help="Participant identity.")
]
Room = Annotated[
    str, typer.Option("--room", "-r", metavar="ROOM", help="Room to join (the only one granted).")
]
Name = Annotated[str | None, typer.Option("--name", "-n", metavar="NAME", help="Display name.")]
Metadata = Annotated[
    str | None,
    typer.Option(
        "--metadata", "-m", metavar="JSON", help="Participant metadata: a JSON object or @file."
    ),
]
Attribute = Annotated[
    list[str] | None,
    typer.Option(
        "--attribute",
        "-a",
        metavar="KEY=VALUE",
        help="Participant attribute (repeatable).",
    ),
]
Agent = Annotated[
    str | None,
    typer.Option("--agent", metavar="AGENT", help="Dispatch this agent when the room is created."),
]
Deployment = Annotated[
    str | None,
    typer.Option(
        "--deployment", "-d", metavar="DEPLOYMENT", help="Agent deployment (with --agent)."
    ),
]
JobMetadata = Annotated[
    str | None,
    typer.Option(
        "--job-metadata", metavar="JSON", help="Job metadata for the agent: JSON object or @file."
    ),
]
ValidFor = Annotated[
    str,
    typer.Option(
        "--valid-for", metavar="DURATION", help="Token lifetime, Go-style: 90s, 10m, 1h30m."
    ),
]
AllowUpdate = Annotated[
    bool,
    typer.Option("--allow-update-metadata", help="Let the participant update its own metadata."),
]
Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="LIVEKIT_URL",
        metavar="URL",
        show_default=False,
        help=f"LiveKit URL for --json's server_url (default: {DEV_SERVER_URL}).",
    ),
]


@app.command("token")
def token_command(
    identity: Identity,
    room: Room,
    name: Name = None,
    metadata: Metadata = None,
    attribute: Attribute = None,
    agent: Agent = None,
    deployment: Deployment = None,
    job_metadata: JobMetadata = None,
    valid_for: ValidFor = "10m",
    allow_update_metadata: AllowUpdate = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print {server_url, participant_token}, as the endpoint does."),
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Mint a join token carrying metadata, attributes and an agent dispatch.

    Least privilege: room join for ROOM only; no admin grants; the participant
    cannot change its own metadata unless --allow-update-metadata is given.
    Without LIVEKIT_API_KEY/LIVEKIT_API_SECRET the livekit-server --dev keys are used.
    """
    md = _read_json_flag(metadata, "--metadata")
    job = _read_json_flag(job_metadata, "--job-metadata")
    attrs = _parse_attributes(attribute)
    ttl = _parse_valid_for(valid_for)
    url = _checked_url(url)
    if (deployment is not None or job is not None) and not agent:
        raise typer.BadParameter("needs --agent", param_hint="'--deployment/--job-metadata'")

    from .tokens.issuer import Dispatch

    issuer = _issuer(api_key, api_secret)
    with _errors(), _no_pyjwt_key_warning():
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
    if not url:
        typer.echo(f"warning: LIVEKIT_URL is not set; server_url is {DEV_SERVER_URL}", err=True)
    typer.echo(_dumps({"server_url": url or DEV_SERVER_URL, "participant_token": token}))


def _parse_valid_for(valid_for: str) -> timedelta:
    try:
        ttl = parse_duration(valid_for)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--valid-for'") from None
    if ttl.total_seconds() < 1:
        raise typer.BadParameter("must be at least 1s", param_hint="'--valid-for'")
    return ttl


_MAX_STDIN_TOKEN = 64 * 1024


def _stdin_token() -> str:
    """The token on standard input: any bytes are read; only printable ASCII is a token."""
    raw = sys.stdin.buffer.read(_MAX_STDIN_TOKEN + 1)
    if len(raw) > _MAX_STDIN_TOKEN:
        _fail(f"token is invalid: standard input is over {_MAX_STDIN_TOKEN} bytes", 1)
    text = raw.strip()
    if not text or not all(0x21 <= b <= 0x7E for b in text):
        _fail("token is invalid: standard input does not hold a token (printable ASCII)", 1)
    return text.decode("ascii")


@app.command("verify")
def verify_command(
    token: Annotated[
        str,
        typer.Argument(metavar="TOKEN", hidden=True, show_default=False),  # in the docstring
    ] = "-",  # noqa: S107 - "-" means stdin, not a password
    as_json: Annotated[bool, typer.Option("--json", help="Print the claims as JSON.")] = False,
    leeway: Annotated[
        str,
        typer.Option(
            "--leeway",
            metavar="DURATION",
            help="Clock skew allowed on expiry and not-before, Go-style (0s: none).",
        ),
    ] = "60s",
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Verify a token (signature, issuer, expiry, claims, joinable) and print its claims.

    TOKEN is the token; without it (or with -) it is read from stdin. A token that expired (or starts) less than --leeway ago is valid only within the
    leeway, and the output says so.
    """
    if token == "-":  # noqa: S105 - "-" means stdin, not a password
        token = _stdin_token()
    try:
        skew = parse_duration(leeway)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--leeway'") from None
    issuer = _issuer(api_key, api_secret, skew)
    try:
        with _no_pyjwt_key_warning():
            verified = issuer.verify(token)
    except MetadataPluginError as exc:
        _fail(f"token is invalid: {exc.message}", 1)
    dispatches = [_dispatch_view(d) for d in verified.dispatches]
    grace = _leeway_note(verified, skew)
    if as_json:
        out = {
            "valid": True,
            "within_leeway_only": grace is not None,
            "identity": verified.identity,
            "name": verified.name,
            "room": verified.room,
            "kind": verified.kind,
            "issuer": verified.issuer,
            "not_before": verified.not_before.isoformat() if verified.not_before else None,
            "expires_at": verified.expires_at.isoformat(),
            "grants": verified.grant_claims,
            "attributes": verified.attributes,
            "metadata": verified.metadata,
            "dispatches": dispatches,
        }
        typer.echo(_dumps(out))
        return
    lines = _verified_lines(verified, dispatches)
    if grace is not None:
        lines[0] = f"valid:      yes, only within the leeway: {grace}"
    typer.echo("\n".join(lines))


def _leeway_note(verified: Any, leeway: timedelta) -> str | None:
    """Why the token is valid only thanks to the leeway, or None when it is valid outright."""
    now = time.time()
    allowed = f"(--leeway {int(leeway.total_seconds())}s; --leeway 0s refuses it)"
    expired = now - verified.expires_at.timestamp()
    if expired >= 0:
        return f"it expired {_remaining(-expired).removesuffix(' ago')} ago {allowed}"
    if verified.not_before is not None and verified.not_before.timestamp() > now:
        early = verified.not_before.timestamp() - now
        return f"it is not valid for another {_remaining(early).removeprefix('in ')} {allowed}"
    return None


def _dispatch_view(dispatch: Any) -> dict[str, Any]:
    job: Any = dispatch.metadata
    if isinstance(job, str):
        with contextlib.suppress(MetadataError):  # else shown as the raw string
            job = parse_metadata(job)
    entry: dict[str, Any] = {"agent_name": dispatch.agent_name}
    if dispatch.deployment:
        entry["deployment"] = dispatch.deployment
    if job is not None:
        entry["metadata"] = job
    if dispatch.attributes:
        entry["attributes"] = dict(dispatch.attributes)
    return entry


def _verified_lines(verified: Any, dispatches: list[dict[str, Any]]) -> list[str]:
    left = verified.expires_at.timestamp() - time.time()
    lines = [
        "valid:      yes (signature, issuer, expiry and claims checked)",
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
    lines.append(f"grants:     {_dumps(verified.grant_claims, pretty=False)}")
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
    return lines


@app.command("route")
def route_command(
    rules: Annotated[
        Path,
        typer.Option(
            "--rules", metavar="FILE", help="Rules file (YAML, TOML or JSON).", show_default=False
        ),
    ],
    metadata: Annotated[
        str,
        typer.Option(
            "--metadata", "-m", metavar="JSON", help="Metadata to route: a JSON object or @file."
        ),
    ],
    explain: Annotated[
        bool, typer.Option("--explain", help="Show every rule and why it matched or not.")
    ] = False,
    attributes: Annotated[
        str | None,
        typer.Option(
            "--attributes",
            metavar="JSON",
            help="Participant attributes for when_attributes: a JSON object of strings or @file.",
        ),
    ] = None,
) -> None:
    """Show which agent the rules pick for some metadata (and participant attributes)."""
    md = _read_json_flag(metadata, "--metadata")
    attrs = _read_json_flag(attributes, "--attributes")
    if attrs is not None:
        try:
            from .codec import validate_attributes

            attrs = validate_attributes(attrs, allow_reserved=True)
        except MetadataError as exc:
            raise typer.BadParameter(exc.message, param_hint="'--attributes'") from None
    from .routing.formatting import format_explain, format_route
    from .routing.router import MetadataRouter

    with _errors():
        router = MetadataRouter.from_file(rules)
        if explain:
            # The trace first: it is most useful exactly when nothing matches.
            typer.echo(format_explain(router.explain(md or {}, attributes=attrs)))
        route = router.route(md or {}, attributes=attrs)
        typer.echo(format_route(route))


@app.command("serve")
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


# --------------------------------------------------------------------------- sip

sip_app = typer.Typer(
    help="LiveKit SIP dispatch rules from the routing rules (numbers in when_attributes).",
    no_args_is_help=True,
)
app.add_typer(sip_app, name="sip")

RulesFile = Annotated[
    Path,
    typer.Option(
        "--rules", metavar="FILE", help="Rules file (YAML, TOML or JSON).", show_default=False
    ),
]
Trunks = Annotated[
    list[str] | None,
    typer.Option(
        "--trunk",
        metavar="ID",
        help="Inbound trunk id the rules apply to (repeatable; default: all).",
    ),
]
RoomPrefix = Annotated[
    str, typer.Option("--room-prefix", metavar="PREFIX", help="Prefix of the per-call rooms.")
]
Scope = Annotated[
    str | None,
    typer.Option(
        "--scope",
        metavar="SCOPE",
        show_default=False,
        help="This sync's scope, recorded in each rule it creates; only rules with this "
        "scope are changed or deleted (default: 'trunks:' and the --trunk ids, else "
        "'rules:' and the rules file's name).",
    ),
]


def _sip_scope(rules: Path, trunks: list[str] | None, scope: str | None) -> str:
    from .provision.sip import default_scope

    return scope if scope is not None else default_scope(trunks or (), rules)


def _sip_rules(
    rules: Path, trunks: list[str] | None, room_prefix: str, scope: str | None = None
) -> tuple[Any, list[str]]:
    from .provision.sip import desired_dispatch_rules
    from .routing.router import MetadataRouter

    router = MetadataRouter.from_file(rules)
    return desired_dispatch_rules(
        router,
        trunk_ids=trunks or (),
        room_prefix=room_prefix,
        scope=_sip_scope(rules, trunks, scope),
    )


@sip_app.command("export")
def sip_export_command(
    rules: RulesFile, trunk: Trunks = None, room_prefix: RoomPrefix = "call-", scope: Scope = None
) -> None:
    """Print, as JSON, the SIP dispatch rules the routing rules call for."""
    from .provision.sip import export_json

    with _errors():
        wanted, skipped = _sip_rules(rules, trunk, room_prefix, scope)
    for line in skipped:
        typer.echo(f"skipped {line}", err=True)
    typer.echo(export_json(wanted))


@sip_app.command("sync")
def sip_sync_command(
    rules: RulesFile,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and change nothing.")
    ] = False,
    trunk: Trunks = None,
    room_prefix: RoomPrefix = "call-",
    scope: Scope = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="LIVEKIT_URL",
            metavar="URL",
            show_default=False,
            help="LiveKit server URL.",
        ),
    ] = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Create, update and delete this tool's SIP dispatch rules to match the routing rules.

    Only rules this tool created with the same scope are touched (each carries the
    attribute lk-metadata.sip-sync set to the scope); rules without it are never changed or
    deleted, whatever their name. The plan is printed first.
    """
    import asyncio

    if not url:
        _fail("LiveKit server URL is not set: set LIVEKIT_URL or pass --url", 1)
    url = _checked_url(url) or url
    if not api_key or not api_secret:
        _fail("set LIVEKIT_API_KEY and LIVEKIT_API_SECRET (or pass --api-key/--api-secret)", 1)
    from .tokens.keys import ApiKeys

    _announce_keys(ApiKeys(api_key, api_secret, dev=False))
    with _errors(), _no_pyjwt_key_warning():
        wanted, skipped = _sip_rules(rules, trunk, room_prefix, scope)
        scope = _sip_scope(rules, trunk, scope)
        asyncio.run(_sip_sync(url, api_key, api_secret, wanted, skipped, dry_run, scope))


async def _sip_sync(
    url: str,
    key: str,
    secret: str,
    wanted: Any,
    skipped: list[str],
    dry_run: bool,
    scope: str,
) -> None:
    from livekit import api

    from .provision.sip import apply_plan, list_dispatch_rules, plan_sync

    async with api.LiveKitAPI(url, key, secret) as lkapi:
        existing = await list_dispatch_rules(lkapi)
        plan = plan_sync(wanted, existing, skipped=skipped, scope=scope)
        typer.echo(plan.format())
        if dry_run or not plan.changes:
            typer.echo("dry run: nothing changed" if dry_run else "in sync: nothing to do")
            return
        await apply_plan(lkapi, plan)
        typer.echo(f"applied {plan.changes} change(s)")


@sip_app.command("call")
def sip_call_command(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="NUMBER",
            help="The number dialed (sip.trunkPhoneNumber).",
            show_default=False,
        ),
    ],
    caller: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="NUMBER",
            help="The caller's number (sip.phoneNumber); omit it for a hidden number.",
        ),
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            metavar="FILE",
            help="Routing rules: the dispatch `sip sync` would create for these numbers.",
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", metavar="AGENT", help="Dispatch this agent name instead."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            metavar="NAME=VALUE",
            help="A SIP header, as attribute sip.h.NAME (repeatable).",
        ),
    ] = None,
    trunk: Annotated[
        str | None,
        typer.Option("--trunk", metavar="ID", help="The inbound trunk id (attribute sip.trunkID)."),
    ] = None,
    expect: Annotated[
        str | None,
        typer.Option("--expect", metavar="AGENT", help="Exit 1 unless this agent answers."),
    ] = None,
    wait: Annotated[
        float,
        typer.Option("--wait", metavar="SECONDS", min=0.1, help="Seconds to wait for the agent."),
    ] = 30.0,
    room_prefix: Annotated[
        str, typer.Option("--room-prefix", metavar="PREFIX", help="Prefix of the per-call rooms.")
    ] = "call-",
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="LIVEKIT_URL",
            metavar="URL",
            show_default=False,
            help="LiveKit server URL.",
        ),
    ] = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Place a simulated inbound call and print which agent answered and its route.

    Joins a new room as LiveKit's SIP service joins a caller: participant kind sip,
    attributes sip.trunkPhoneNumber (--to), sip.phoneNumber (--from), sip.callID,
    sip.h.* (--header), and the agent dispatch that the dispatch rule `sip sync`
    creates from --rules picks for these numbers (else the rules' own route, or
    --agent). It waits for the agent, prints its route attributes and hangs up.

    Not simulated: SIP signalling and media (LiveKit's SIP service does not run: no
    INVITE, no audio), the trunk (no authentication or number checks) and the
    server's own dispatch-rule lookup (so no Redis is needed). Exit codes: 0 an
    agent answered with a route (the --expect one, if given), 1 none did, or
    another one did, or LiveKit was unreachable; 2 bad usage.
    """
    import asyncio

    if rules is None and not agent:
        raise typer.BadParameter("pass --rules FILE or --agent NAME", param_hint="'--rules'")
    if not url:
        _fail(
            "LiveKit server URL is not set: set LIVEKIT_URL (e.g. ws://127.0.0.1:7880) or pass --url",
            1,
        )
    url = _checked_url(url) or url
    headers = _parse_attributes(header, "--header") or {}
    from .provision.sip_call import place_call, plan_call
    from .routing.router import MetadataRouter
    from .tokens.keys import resolve_keys

    try:
        keys = resolve_keys(api_key, api_secret)
    except ConfigError as exc:
        _fail(exc.message, 1)
    _announce_keys(keys)
    # LiveKit's SDK logs each failed connection attempt, the token included: the one
    # error line below says what to do instead.
    logging.getLogger("livekit").setLevel(logging.CRITICAL + 1)
    with _errors(), _no_pyjwt_key_warning():
        router = MetadataRouter.from_file(rules) if rules is not None else None
        plan = plan_call(
            router,
            to=to,
            caller=caller,
            headers=headers,
            trunk_id=trunk,
            agent=agent,
            room_prefix=room_prefix,
        )

        def say(line: str) -> None:
            if not as_json:
                typer.echo(line)

        say(f"calling {to} from {caller or 'a hidden number'} (simulated: no SIP media, no trunk)")
        say(f"dispatch: {plan.dispatch.agent_name} ({plan.source})")
        result = asyncio.run(place_call(url, keys.key, keys.secret, plan, wait=wait, on_step=say))
    ok = result.route is not None and (expect is None or result.route == expect)
    if as_json:
        out = {
            "answered": ok,
            "room": result.room,
            "dispatch": plan.dispatch.agent_name,
            "agent": result.agent,
            "route": result.route,
            "route.rule": result.rule,
        }
        typer.echo(_dumps(out))
    elif result.agent is None:
        typer.echo(
            f"no agent joined within {wait:g}s: is a worker registered as "
            f"{plan.dispatch.agent_name!r} with this server?"
        )
    elif result.route is None:
        typer.echo("the agent published no route attribute")
    else:
        typer.echo(f"route: {result.route} (rule: {result.rule or '?'})")
        if expect is not None and result.route != expect:
            typer.echo(f"expected {expect}, but {result.route} answered")
    if not ok:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``lk-metadata`` command."""
    try:
        app(prog_name="lk-metadata")
    except SystemExit as exc:
        if "livekit.rtc" in sys.modules:  # `sip call` joined a room
            # LiveKit's native rtc runtime can abort the interpreter's own shutdown (a Rust
            # panic, SIGABRT): leave with the status the command decided.
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise
    except Exception as exc:  # last resort: never a traceback on the terminal
        typer.echo(f"error: unexpected failure ({type(exc).__name__})", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
