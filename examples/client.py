"""A caller, as a user's app would be: ask the token endpoint for a token, join, watch the agent.

    python examples/client.py --metadata '{"department": "support", "language": "es"}'
    python examples/client.py --metadata '{"department": "support"}' --update '{"department": "sales"}'

It uses LiveKit's Python SDK (``livekit.rtc``) and prints one line per step:

1. the room it joined and its identity. The endpoint chooses both (a fresh,
   unguessable pair per token): ``--room`` / ``--identity`` are only honoured for
   a bearer key whose config opts in (``client_room`` within its ``room_prefix``,
   ``client_identity``), and the client says when they were ignored;
2. which agent joined the room;
3. the agent's ``route`` and ``route.rule`` attributes (the routing decision);
4. with ``--update``: what happened to the metadata update. Either the server
   applied it (then the agent re-routes if the rules say so), or the server
   refused it with ``NOT_ALLOWED`` because the token does not grant
   ``canUpdateOwnMetadata``. The SDK's ``set_metadata`` returns normally either
   way, so this client checks whether the server echoed the change back.

Options: ``--endpoint`` (default ``http://127.0.0.1:8080/token``), ``--key`` (a
bearer key, default ``$LK_METADATA_KEY``), ``--room``, ``--identity``, ``--wait``
(seconds per step, default 30). Exit codes: 0 when an
agent answered with a route, 1 when none did in time (is the worker running, and
does the server offer it jobs? see the README's local flow), or when the endpoint
or LiveKit cannot be reached or refuses (one ``error:`` line saying what to start or set).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from livekit import rtc

AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
POLL = 0.05


class Failure(Exception):
    """A step failed in a way the user can fix: one line saying how (exit 1)."""


async def fetch_token(
    endpoint: str, request: dict[str, Any], key: str | None = None
) -> dict[str, Any]:
    """POST the standard token request; the answer (``server_url``, ``participant_token``,
    and the ``room_name`` / ``participant_identity`` the endpoint put in the token)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.post(endpoint, json=request, headers=headers) as resp,
        ):
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        raise Failure(
            f"cannot reach the token endpoint at {endpoint}: start it with "
            "`uv run lk-metadata serve`, or pass --endpoint URL"
        ) from None
    if resp.status != 201 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        detail = f": {error.get('message')}" if isinstance(error, dict) else ""
        raise Failure(f"the token endpoint answered HTTP {resp.status}{detail}")
    return dict(body)


async def join(room: rtc.Room, url: str, token: str) -> None:
    """Connect, or say in one line why not (the SDK's own errors carry the token)."""
    logging.getLogger("livekit").setLevel(logging.CRITICAL + 1)  # no retry noise
    try:
        await room.connect(url, token)
    except rtc.ConnectError as exc:
        if "401" in str(exc):
            raise Failure(
                "LiveKit refused the token (HTTP 401): the token endpoint's "
                "LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not this server's keys"
            ) from None
        raise Failure(
            f"cannot connect to LiveKit at {url} (the endpoint's server_url): start "
            "`livekit-server --dev`, or set LIVEKIT_URL where the endpoint runs"
        ) from None


async def wait_for(check: Callable[[], Any], seconds: float) -> Any:
    """Poll ``check()`` until it returns something truthy, or None after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(POLL)


def the_agent(room: rtc.Room) -> rtc.RemoteParticipant | None:
    return next((p for p in room.remote_participants.values() if p.kind == AGENT), None)


def say(line: str) -> None:
    print(line, flush=True)


async def update_metadata(
    room: rtc.Room, agent: rtc.RemoteParticipant, text: str, wait: float
) -> None:
    """Send a metadata update and say what the server and the agent did with it."""
    local = room.local_participant
    before = agent.attributes.get("route", "")
    await local.set_metadata(text)  # returns normally even when the server refuses it
    if not await wait_for(lambda: local.metadata == text, min(wait, 5.0)):
        say(
            "update: NOT_ALLOWED: the server refused the metadata update because this token "
            "does not grant canUpdateOwnMetadata (the token endpoint's default: least "
            "privilege). Set allow_update_own_metadata: true in its config to allow it."
        )
        return
    say("update: applied by the server")
    route = await wait_for(lambda: agent.attributes.get("route", "") != before, wait)
    if route:
        rule = agent.attributes.get("route.rule", "")
        say(f"update: agent re-routed to {agent.attributes['route']} (rule: {rule})")
    else:
        say(f"update: route unchanged: {before}")


async def run(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"participant_metadata": args.metadata}
    if args.room:
        request["room_name"] = args.room
    if args.identity:
        request["participant_identity"] = args.identity
    answer = await fetch_token(args.endpoint, request, args.key)
    for asked, field in ((args.room, "room_name"), (args.identity, "participant_identity")):
        if asked and answer.get(field) != asked:
            say(f"note: the endpoint chose the {field} (this key may not choose it)")
    room = rtc.Room()
    await join(room, str(answer["server_url"]), str(answer["participant_token"]))
    try:
        say(f"joined room {room.name} as {room.local_participant.identity}")
        agent = await wait_for(lambda: the_agent(room), args.wait)
        if agent is None:
            say("no agent joined: is the worker running and registered with this server?")
            return 1
        say(f"agent joined: {agent.identity}")
        if not await wait_for(lambda: agent.attributes.get("route"), args.wait):
            say("the agent published no route")
            return 1
        rule = agent.attributes.get("route.rule", "")
        say(f"route: {agent.attributes['route']} (rule: {rule})")
        if args.update is not None:
            await update_metadata(room, agent, args.update, args.wait)
        return 0
    finally:
        await room.disconnect()


def _json_object(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a JSON object") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:8080/token")
    parser.add_argument("--metadata", type=_json_object, default="{}")
    parser.add_argument("--update", type=_json_object, default=None)
    parser.add_argument("--key", default=os.environ.get("LK_METADATA_KEY") or None)
    parser.add_argument("--room", default=None)
    parser.add_argument("--identity", default=None)
    parser.add_argument("--wait", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    status = main()
    # LiveKit's native rtc runtime can abort the interpreter's own shutdown (a Rust panic,
    # SIGABRT) after a connection failed: leave with the status decided here instead.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
