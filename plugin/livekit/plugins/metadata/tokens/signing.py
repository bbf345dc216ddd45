"""HS256 signing of token claims with PyJWT, the secret checked once per issuer.

PyJWT documents the extension points this module uses and nothing else:
``jwt.algorithms.Algorithm`` ("the interface for an algorithm used to sign and
verify tokens", in PyJWT's API reference), ``PyJWS.register_algorithm`` on a
``PyJWS`` of our own (never PyJWT's global registry) and ``encode``'s ``json_encoder``
(the one header, encoded once). PyJWT's own HS256 checks the secret (PEM, SSH,
DER and JWK shapes) on every token; here it runs once.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, NoReturn

import jwt
import orjson
from jwt.algorithms import Algorithm

from ..errors import ConfigError, TokenError

__all__ = ["Signer"]

_HS256 = "HS256"
_HEADER = {"typ": "JWT", "alg": _HS256}
_HEADER_JSON = json.dumps(_HEADER, separators=(",", ":"), sort_keys=True)  # PyJWT's own text


class _HeaderJSON(json.JSONEncoder):  # PyJWS.encode's documented json_encoder: its header once
    def encode(self, o: Any) -> str:
        return _HEADER_JSON if o == _HEADER else super().encode(o)


class _CheckedSecretHS256(Algorithm):
    """HS256 (RFC 7518 §3.2) whose one secret PyJWT's own HS256 checked once.

    ``prepare_key`` passes that secret through; any other key goes through
    PyJWT's full check. The key-length warning is PyJWT's
    (``InsecureKeyLengthWarning``), emitted as PyJWT's HS256 emits it.
    """

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

    @staticmethod
    def from_jwk(jwk: Any) -> NoReturn:
        raise NotImplementedError("not used: the issuer signs with its API secret")


class Signer:
    """Signs claims dicts as HS256 JWTs with one API secret.

    Raises:
        ConfigError: PyJWT rejects the secret (e.g. a PEM key), or it is not UTF-8.
    """

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
        self.secret = algorithm.secret
        """The secret as PyJWT checked it (bytes); also the key for ``jwt.decode``."""

    def sign(self, claims: dict[str, Any]) -> str:
        """The JWT of ``claims`` (serialized with orjson), signed HS256.

        Raises:
            TokenError: A claim value JSON cannot hold (only odd grant values).
        """
        try:
            payload = orjson.dumps(claims)
        except orjson.JSONEncodeError as exc:
            raise TokenError(f"token claims are not JSON-serializable: {exc}") from None
        return self._encode(payload, self.secret, algorithm=_HS256, json_encoder=_HeaderJSON)
