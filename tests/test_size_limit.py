"""The size limit, one property on every layer that enforces it.

Metadata of exactly ``limit`` bytes (compact JSON, UTF-8) is accepted; one byte more is
refused with ``MetadataTooLarge(size=limit + 1, limit=limit)``, a message without the
value, and nothing changed. Layers: the codec (client text), ``SessionManager`` (agent
writes) and ``TokenIssuer`` (token metadata). The stores themselves (memory and every
Redis topology) keep the same contract in the store conformance suite
(``test_size_limit_is_exact``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import pytest

from livekit.plugins.metadata.codec import parse_metadata
from livekit.plugins.metadata.errors import MetadataTooLarge
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.tokens.issuer import TokenIssuer

pytestmark = pytest.mark.unit

SECRET = "size-limit-secret-0123456789abcdef0123"
MARK = "planted-value-"
"""In every payload's value: a refusal's message must not contain it."""


def _codec(data: dict[str, Any], limit: int) -> dict[str, Any]:
    return parse_metadata(orjson.dumps(data).decode(), max_bytes=limit)


def _manager(data: dict[str, Any], limit: int) -> dict[str, Any]:
    async def write() -> dict[str, Any]:
        async with SessionManager(secret_key=SECRET, max_session_bytes=limit) as sm:
            try:
                await sm.set_session_metadata("s", data)
            except MetadataTooLarge:
                assert await sm.get_session_metadata("s") == {}  # nothing was written
                raise
            return await sm.get_session_metadata("s")

    return asyncio.run(write())


def _issuer(data: dict[str, Any], limit: int) -> dict[str, Any]:
    token = TokenIssuer("APIsize", SECRET, max_metadata_bytes=limit).mint("u", "r", metadata=data)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
    metadata: dict[str, Any] = orjson.loads(claims["metadata"])
    return metadata


LAYERS: dict[str, Callable[[dict[str, Any], int], dict[str, Any]]] = {
    "codec": _codec,
    "session-manager": _manager,
    "token-issuer": _issuer,
}

PAYLOADS = {
    "ascii": {"k": MARK + "x" * 10},
    "multibyte-and-escapes": {"é\n": MARK + "€\u2028\x01", "q": '"\\', "n": [1, 2.5, None]},
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_exactly_the_limit_is_accepted_one_byte_more_is_refused(layer: str, payload: str) -> None:
    accept = LAYERS[layer]
    data = PAYLOADS[payload]
    size = len(orjson.dumps(data))
    assert accept(data, size) == data
    with pytest.raises(MetadataTooLarge) as info:
        accept(data, size - 1)
    assert (info.value.size, info.value.limit) == (size, size - 1)
    assert MARK not in str(info.value)
