"""HS256 signing of token claims with PyJWT, the secret checked once per issuer.

PyJWT's own HS256 checks the secret (PEM, SSH, DER, JWK shapes) on every token. This uses
two documented PyJWT extension points, ``jwt.algorithms.Algorithm`` and
``PyJWS.register_algorithm`` on a ``PyJWS`` of our own, to check it once.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

import jwt
import orjson
from jwt.algorithms import Algorithm

from ..errors import ConfigError, TokenError

__all__ = ["Signer"]

_HS256 = "HS256"


class _CheckedSecretHS256(Algorithm):
    """HS256 whose one secret PyJWT's own HS256 checked once; other keys get its full check."""

    def __init__(self, secret: bytes) -> None:
        self._pyjwt = jwt.PyJWS().get_algorithm_by_name(_HS256)
        self.secret: bytes = self._pyjwt.prepare_key(secret)
        self._length_warning = self._pyjwt.check_key_length(self.secret)

    def prepare_key(self, key: Any) -> Any:
        if key is self.secret:
            return key
        return self._pyjwt.prepare_key(key)

    def check_key_length(self, key: Any) -> str | None:
        if key is self.secret:
            return self._length_warning
        return self._pyjwt.check_key_length(key)

    def sign(self, msg: bytes, key: Any) -> bytes:
        return hmac.digest(key, msg, "sha256")

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        return hmac.compare_digest(sig, self.sign(msg, key))

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> NoReturn:
        raise NotImplementedError("not used: the issuer signs with its API secret")

    from_jwk = to_jwk  # type: ignore[assignment]


class Signer:
    """Signs claims as HS256 JWTs with one API secret (ConfigError: PyJWT rejects it)."""

    __slots__ = ("_encode", "secret")

    def __init__(self, api_secret: str) -> None:
        try:
            algorithm = _CheckedSecretHS256(api_secret.encode("utf-8"))
        except jwt.InvalidKeyError as exc:
            raise ConfigError(f"LiveKit API secret rejected by PyJWT: {exc}") from None
        except UnicodeEncodeError:
            raise ConfigError("LiveKit API secret is not valid UTF-8") from None
        jws = jwt.PyJWS(algorithms=[])
        jws.register_algorithm(_HS256, algorithm)
        self._encode = jws.encode
        self.secret = algorithm.secret  # as PyJWT checked it; also the key for jwt.decode

    def sign(self, claims: dict[str, Any]) -> str:
        """The HS256 JWT of ``claims``; TokenError for a value JSON cannot hold."""
        try:
            payload = orjson.dumps(claims)
        except orjson.JSONEncodeError as exc:
            raise TokenError(f"token claims are not JSON-serializable: {exc}") from None
        return self._encode(payload, self.secret, algorithm=_HS256)
