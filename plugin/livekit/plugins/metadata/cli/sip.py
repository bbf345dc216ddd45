"""``lk-metadata sip export|sync|call``: SIP dispatch rules from the routing rules, a test call."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    ApiKey,
    ApiSecret,
    RulesFile,
    announce_keys,
    bad_parameter,
    dumps,
    exit_on_errors,
    fail,
    no_pyjwt_key_warning,
    opt,
    parse_attributes,
    resolved_keys,
    server_url,
    url_option,
)

__all__ = ["sip_app"]

sip_app = typer.Typer(
    help="LiveKit SIP dispatch rules from the routing rules (numbers in when_attributes).",
    no_args_is_help=True,
)

Trunks = Annotated[
    list[str] | None,
    opt("--trunk", "ID", "Inbound trunk id the rules apply to (repeatable; default: all)."),
]
ServerUrl = Annotated[str | None, url_option("LiveKit server URL.")]
RoomPrefix = Annotated[str, opt("--room-prefix", "PREFIX", "Prefix of the per-call rooms.")]
Scope = Annotated[
    str | None,
    opt(
        "--scope",
        "SCOPE",
        "This sync's scope, recorded in each rule it creates; only rules with this "
        "scope are changed or deleted (default: 'trunks:' and the --trunk ids, else "
        "'rules:' and the rules file's name).",
        show_default=False,
    ),
]


def _sip_rules(
    rules: Path, trunks: list[str] | None, room_prefix: str, scope: str | None
) -> tuple[Any, list[str], str]:
    """The dispatch rules wanted, the routing rules skipped, and the scope."""
    from ..provision.sip import default_scope, desired_dispatch_rules
    from ..routing.router import MetadataRouter

    router = MetadataRouter.from_file(rules)
    scope = scope if scope is not None else default_scope(trunks or (), rules)
    wanted, skipped = desired_dispatch_rules(
        router, trunk_ids=trunks or (), room_prefix=room_prefix, scope=scope
    )
    return wanted, skipped, scope


@sip_app.command("export")
def sip_export_command(
    rules: RulesFile, trunk: Trunks = None, room_prefix: RoomPrefix = "call-", scope: Scope = None
) -> None:
    """Print, as JSON, the SIP dispatch rules the routing rules call for."""
    from ..provision.sip import export_json

    with exit_on_errors():
        wanted, skipped, _ = _sip_rules(rules, trunk, room_prefix, scope)
    for line in skipped:
        typer.echo(f"skipped {line}", err=True)
    typer.echo(export_json(wanted))


@sip_app.command("sync")
def sip_sync_command(
    rules: RulesFile,
    dry_run: Annotated[bool, opt("--dry-run", None, "Print the plan and change nothing.")] = False,
    trunk: Trunks = None,
    room_prefix: RoomPrefix = "call-",
    scope: Scope = None,
    url: ServerUrl = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
) -> None:
    """Create, update and delete this tool's SIP dispatch rules to match the routing rules.

    Only rules this tool created with the same scope are touched (each carries the
    attribute lk-metadata.sip-sync set to the scope); rules without it are never changed or
    deleted, whatever their name. The plan is printed first.
    """
    import asyncio

    url = server_url(url)
    if not api_key or not api_secret:
        fail("set LIVEKIT_API_KEY and LIVEKIT_API_SECRET (or pass --api-key/--api-secret)", 1)
    from ..tokens.keys import ApiKeys

    announce_keys(ApiKeys(api_key, api_secret, dev=False))
    with exit_on_errors(), no_pyjwt_key_warning():
        wanted, skipped, scope = _sip_rules(rules, trunk, room_prefix, scope)
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

    from ..provision.sip import apply_plan, list_dispatch_rules, plan_sync

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
        str, opt("--to", "NUMBER", "The number dialed (sip.trunkPhoneNumber).", show_default=False)
    ],
    caller: Annotated[
        str | None, opt("--from", "NUMBER", "The caller's number (sip.phoneNumber); omit: hidden.")
    ] = None,
    rules: Annotated[
        Path | None,
        opt(
            "--rules",
            "FILE",
            "Routing rules: the dispatch `sip sync` would create for these numbers.",
        ),
    ] = None,
    agent: Annotated[
        str | None, opt("--agent", "AGENT", "Dispatch this agent name instead.")
    ] = None,
    header: Annotated[
        list[str] | None, opt("--header", "NAME=VALUE", "A SIP header, as sip.h.NAME (repeatable).")
    ] = None,
    trunk: Annotated[
        str | None, opt("--trunk", "ID", "The inbound trunk id (attribute sip.trunkID).")
    ] = None,
    expect: Annotated[
        str | None, opt("--expect", "AGENT", "Exit 1 unless this agent answers.")
    ] = None,
    wait: Annotated[
        float, opt("--wait", "SECONDS", "Seconds to wait for the agent.", min=0.1)
    ] = 30.0,
    room_prefix: RoomPrefix = "call-",
    as_json: Annotated[bool, opt("--json", None, "Print the outcome as JSON.")] = False,
    url: ServerUrl = None,
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
        raise bad_parameter("--rules", "pass --rules FILE or --agent NAME")
    url = server_url(url)
    headers = parse_attributes(header, "--header") or {}
    from ..provision.sip_call import place_call, plan_call
    from ..routing.router import MetadataRouter

    keys = resolved_keys(api_key, api_secret)
    # LiveKit's SDK logs each failed connection attempt, the token included: the one
    # error line below says what to do instead.
    logging.getLogger("livekit").setLevel(logging.CRITICAL + 1)
    with exit_on_errors(), no_pyjwt_key_warning():
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
        typer.echo(dumps(out))
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
