"""The reference token endpoint: a minimal aiohttp handler over ``livekit.api.AccessToken``.

This is what LiveKit's own examples do for the standard token endpoint: read
the JSON request, pass its fields straight to the stock ``AccessToken`` builder
(``room_config`` through protobuf's ``ParseDict``), and answer
``201 {"server_url", "participant_token"}``. It checks nothing: no
authentication, no metadata validation, no size or rate limits, no session
store, no routing (a fixed agent dispatch stands in for the routed one), no
logging. ``bench/bench_server.py`` measures ``lk-metadata serve`` against it in
the same run.

Run alone: ``uv run python -m bench.reference_endpoint --port 8090``.
"""

from __future__ import annotations

import argparse
import json
import secrets

from aiohttp import web
from google.protobuf import json_format
from livekit import api

__all__ = ["create_reference_app"]


def create_reference_app(
    api_key: str, api_secret: str, *, server_url: str, agent_name: str = "support"
) -> web.Application:
    """A minimal standard token endpoint at ``POST /token`` (and ``GET /healthz``)."""

    async def token(request: web.Request) -> web.Response:
        body = await request.json()
        identity = body.get("participant_identity") or "user-" + secrets.token_urlsafe(16)
        room = body.get("room_name") or "room-" + secrets.token_urlsafe(16)
        metadata = body.get("participant_metadata") or ""
        at = (
            api.AccessToken(api_key, api_secret)
            .with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room))
        )
        if body.get("participant_name"):
            at = at.with_name(body["participant_name"])
        if metadata:
            at = at.with_metadata(metadata)
        if body.get("participant_attributes"):
            at = at.with_attributes(body["participant_attributes"])
        if body.get("room_config"):
            room_config = json_format.ParseDict(body["room_config"], api.RoomConfiguration())
        else:
            room_config = api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=agent_name, metadata=metadata)]
            )
        at = at.with_room_config(room_config)
        return web.json_response(
            {"server_url": server_url, "participant_token": at.to_jwt()},
            status=201,
            dumps=json.dumps,
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default="APIbenchkey")
    parser.add_argument("--api-secret", default="bench-secret-" + "x" * 40)
    args = parser.parse_args(argv)
    app = create_reference_app(args.api_key, args.api_secret, server_url="ws://127.0.0.1:7880")
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
