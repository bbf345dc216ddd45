"""HS256 signing of token claims: PyJWT's header and secret check, the HMAC done once per token.

PyJWT checks the secret once (its HS256 ``prepare_key``: PEM, SSH, DER and JWK
shapes refused; its key-length warning) and makes the JWT header once (a token
encoded by ``PyJWS.encode`` at start-up gives the header segment). Each token is
then the RFC 7515 compact serialization of HS256 (RFC 7518 §3.2):
``header "." base64url(payload)`` signed with ``hmac`` SHA-256, byte for byte
what ``PyJWS.encode`` makes (a test holds it to that). PyJWT stays the verifier.
"""

from __future__ import annotations

import binascii
import hmac
import warnings
from typing import Any

import jwt
import orjson
from jwt.warnings import InsecureKeyLengthWarning

from ..errors import ConfigError, TokenError

__all__ = ["Signer"]

_HS256 = "HS256"
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url(data: bytes) -> bytes:
    """base64url without padding (RFC 7515 §2), as PyJWT's ``base64url_encode``."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


class Signer:
    """Signs claims dicts as HS256 JWTs with one API secret.

    Raises:
        ConfigError: PyJWT rejects the secret (e.g. a PEM key), or it is not UTF-8.
    """

    __slots__ = ("_head", "_length_warning", "secret")

    def __init__(self, api_secret: str) -> None:
        hs256 = jwt.PyJWS().get_algorithm_by_name(_HS256)
        try:
            secret = hs256.prepare_key(api_secret.encode("utf-8"))
        except jwt.InvalidKeyError as exc:
            raise ConfigError(f"LiveKit API secret rejected by PyJWT: {exc}") from None
        except UnicodeEncodeError:
            raise ConfigError("LiveKit API secret is not valid UTF-8") from None
        self.secret: bytes = secret
        """The secret as PyJWT checked it (bytes); also the key for ``jwt.decode``."""
        self._length_warning = hs256.check_key_length(secret)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            sample = jwt.PyJWS().encode(b"{}", secret, algorithm=_HS256)
        self._head = sample.partition(".")[0].encode("ascii") + b"."

    def sign(self, claims: dict[str, Any]) -> str:
        """The JWT of ``claims`` (serialized with orjson), signed HS256.

        Raises:
            TokenError: A claim value JSON cannot hold (only odd grant values).
        """
        try:
            payload = orjson.dumps(claims)
        except orjson.JSONEncodeError as exc:
            raise TokenError(f"token claims are not JSON-serializable: {exc}") from None
        if self._length_warning:  # as PyJWT warns, on every token
            warnings.warn(self._length_warning, InsecureKeyLengthWarning, stacklevel=2)
        signing_input = self._head + _b64url(payload)
        signature = _b64url(hmac.digest(self.secret, signing_input, "sha256"))
        return (signing_input + b"." + signature).decode("ascii")
