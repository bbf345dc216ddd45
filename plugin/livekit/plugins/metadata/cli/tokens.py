"""``lk-metadata token`` and ``verify``: mint a join token, check one and print its claims."""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import timedelta
from typing import Annotated, Any

import typer

from ..codec import parse_metadata
from ..errors import MetadataError, MetadataPluginError
from ._common import (
    DEV_SERVER_URL,
    ApiKey,
    ApiSecret,
    bad_parameter,
    checked_url,
    dumps,
    duration_flag,
    exit_on_errors,
    fail,
    issuer_for,
    no_pyjwt_key_warning,
    opt,
    parse_attributes,
    read_json_flag,
    url_option,
)

__all__ = ["token_command", "verify_command"]

_MAX_STDIN_TOKEN = 64 * 1024


def _remaining(seconds: float) -> str:
    h, rem = divmod(int(abs(seconds)), 3600)
    m, sec = divmod(rem, 60)
    parts = [f"{h}h"] if h else []
    if m or h:
        parts.append(f"{m}m")
    parts.append(f"{sec}s")
    return ("in " if seconds >= 0 else "") + "".join(parts) + ("" if seconds >= 0 else " ago")


def token_command(
    identity: Annotated[str, opt("--identity -i", "IDENTITY", "Participant identity.")],
    room: Annotated[str, opt("--room -r", "ROOM", "Room to join (the only one granted).")],
    name: Annotated[str | None, opt("--name -n", "NAME", "Display name.")] = None,
    metadata: Annotated[
        str | None, opt("--metadata -m", "JSON", "Participant metadata: a JSON object or @file.")
    ] = None,
    attribute: Annotated[
        list[str] | None,
        opt("--attribute -a", "KEY=VALUE", "Participant attribute (repeatable)."),
    ] = None,
    agent: Annotated[
        str | None, opt("--agent", "AGENT", "Dispatch this agent when the room is created.")
    ] = None,
    deployment: Annotated[
        str | None, opt("--deployment -d", "DEPLOYMENT", "Agent deployment (with --agent).")
    ] = None,
    job_metadata: Annotated[
        str | None,
        opt("--job-metadata", "JSON", "Job metadata for the agent: JSON object or @file."),
    ] = None,
    valid_for: Annotated[
        str, opt("--valid-for", "DURATION", "Token lifetime, Go-style: 90s, 10m, 1h30m.")
    ] = "10m",
    allow_update_metadata: Annotated[
        bool,
        opt("--allow-update-metadata", None, "Let the participant update its own metadata."),
    ] = False,
    as_json: Annotated[
        bool,
        opt("--json", None, "Print {server_url, participant_token}, as the endpoint does."),
    ] = False,
    url: Annotated[
        str | None, url_option(f"LiveKit URL for --json's server_url (default: {DEV_SERVER_URL}).")
    ] = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Mint a join token carrying metadata, attributes and an agent dispatch.

    Least privilege: room join for ROOM only; no admin grants; the participant
    cannot change its own metadata unless --allow-update-metadata is given.
    Without LIVEKIT_API_KEY/LIVEKIT_API_SECRET the livekit-server --dev keys are used.
    """
    md = read_json_flag(metadata, "--metadata")
    job = read_json_flag(job_metadata, "--job-metadata")
    attrs = parse_attributes(attribute)
    ttl = duration_flag(valid_for, "--valid-for")
    if ttl.total_seconds() < 1:
        raise bad_parameter("--valid-for", "must be at least 1s")
    url = checked_url(url)
    if (deployment is not None or job is not None) and not agent:
        raise bad_parameter("--deployment/--job-metadata", "needs --agent")

    from ..tokens.issuer import Dispatch

    issuer = issuer_for(api_key, api_secret)
    with exit_on_errors(), no_pyjwt_key_warning():
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
    typer.echo(dumps({"server_url": url or DEV_SERVER_URL, "participant_token": token}))


def _stdin_token() -> str:
    """The token on standard input: any bytes are read; only printable ASCII is a token."""
    raw = sys.stdin.buffer.read(_MAX_STDIN_TOKEN + 1)
    if len(raw) > _MAX_STDIN_TOKEN:
        fail(f"token is invalid: standard input is over {_MAX_STDIN_TOKEN} bytes", 1)
    text = raw.strip()
    if not text or not all(0x21 <= b <= 0x7E for b in text):
        fail("token is invalid: standard input does not hold a token (printable ASCII)", 1)
    return text.decode("ascii")


def verify_command(
    token: Annotated[
        str,
        typer.Argument(metavar="TOKEN", hidden=True, show_default=False),  # in the docstring
    ] = "-",  # noqa: S107 - "-" means stdin, not a password
    as_json: Annotated[bool, opt("--json", None, "Print the claims as JSON.")] = False,
    leeway: Annotated[
        str,
        opt(
            "--leeway",
            "DURATION",
            "Clock skew allowed on expiry and not-before, Go-style (0s: none).",
        ),
    ] = "60s",
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Verify a token (signature, issuer, expiry, claims, joinable) and print its claims.

    TOKEN is the token; without it (or with -) it is read from stdin. A token that
    expired (or starts) less than --leeway ago is valid only within the leeway, and
    the output says so.
    """
    if token == "-":  # noqa: S105 - "-" means stdin, not a password
        token = _stdin_token()
    skew = duration_flag(leeway, "--leeway")
    issuer = issuer_for(api_key, api_secret, leeway=skew)
    try:
        with no_pyjwt_key_warning():
            verified = issuer.verify(token)
    except MetadataPluginError as exc:
        fail(f"token is invalid: {exc.message}", 1)
    dispatches = [_dispatch_view(d) for d in verified.dispatches]
    grace = _leeway_note(verified, skew)
    nbf = verified.not_before.isoformat() if verified.not_before else None
    if as_json:
        out = {
            "valid": True,
            "within_leeway_only": grace is not None,
            "identity": verified.identity,
            "name": verified.name,
            "room": verified.room,
            "kind": verified.kind,
            "issuer": verified.issuer,
            "not_before": nbf,
            "expires_at": verified.expires_at.isoformat(),
            "grants": verified.grant_claims,
            "attributes": verified.attributes,
            "metadata": verified.metadata,
            "dispatches": dispatches,
        }
        typer.echo(dumps(out))
        return
    valid = "yes (signature, issuer, expiry and claims checked)"
    left = _remaining(verified.expires_at.timestamp() - time.time())
    rows = [  # (label, value, shown when empty)
        ("valid", valid if grace is None else f"yes, only within the leeway: {grace}", True),
        ("identity", verified.identity, True),
        ("name", verified.name, False),
        ("room", verified.room, True),
        ("kind", verified.kind, False),
        ("issuer", verified.issuer, True),
        ("not before", nbf, False),
        ("expires", f"{verified.expires_at.isoformat()} ({left})", True),
        ("grants", dumps(verified.grant_claims, pretty=False), True),
        ("attributes", verified.attributes and dumps(verified.attributes, pretty=False), False),
    ]
    lines = [f"{label + ':':<12}{value}" for label, value, always in rows if value or always]
    lines.append("metadata:")
    lines.extend("  " + line for line in dumps(verified.metadata).splitlines())
    for entry in dispatches:
        deployment = f" (deployment {entry['deployment']})" if "deployment" in entry else ""
        lines.append(f"dispatch:   {entry['agent_name']}{deployment}")
        if "metadata" in entry:
            lines.append("  job metadata:")
            lines.extend("    " + line for line in dumps(entry["metadata"]).splitlines())
        if "attributes" in entry:
            lines.append(f"  job attributes: {dumps(entry['attributes'], pretty=False)}")
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
