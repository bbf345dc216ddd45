"""HMAC tool tokens in SignalWire's wire format, its flaws fixed (``docs/sessions.md``).

A token authorizes one function for one call; it is a bearer credential, replayable
until it expires: keep the lifetime short and tokens out of logs."""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Final

from ..errors import ConfigError
from ..log import logger

__all__ = [
    "DEFAULT_TOKEN_EXPIRY_SECS",
    "ENV_API_SECRET",
    "ENV_SECRET",
    "KDF_LABEL",
    "MAX_TOKEN_LENGTH",
    "MIN_SECRET_BYTES",
    "InsecureSecretWarning",
    "ToolTokens",
    "derive_secret",
]

DEFAULT_TOKEN_EXPIRY_SECS = 900
"""Default token lifetime in seconds (SignalWire's default as well)."""

ENV_SECRET = "LIVEKIT_METADATA_SECRET"  # noqa: S105 (a variable name)
"""Environment variable holding the tool-token secret shared by all workers."""

ENV_API_SECRET = "LIVEKIT_API_SECRET"  # noqa: S105 (a variable name)
"""LiveKit's API secret; the tool-token secret is derived from it when nothing else is set."""

KDF_LABEL = b"livekit-plugins-metadata/tool-token/v1"
"""HKDF ``info`` label binding derived secrets to this purpose and format version."""

MIN_SECRET_BYTES = 32
"""Secrets shorter than this (in bytes) raise :class:`InsecureSecretWarning`."""

MAX_TOKEN_LENGTH = 8192
"""Longer token strings are rejected before decoding."""

SecretInput = str | bytes | Sequence[str | bytes]


class InsecureSecretWarning(UserWarning):
    """Warned when a tool-token secret is shorter than :data:`MIN_SECRET_BYTES` bytes."""


def derive_secret(api_secret: str | bytes, *, label: bytes = KDF_LABEL) -> str:
    """64 hex characters derived from ``api_secret`` with HKDF-SHA256 (``info=label``): the
    same on every worker sharing it, revealing nothing of it. ConfigError if empty."""
    ikm = api_secret.encode() if isinstance(api_secret, str) else bytes(api_secret)
    if not ikm:
        raise ConfigError("cannot derive a tool-token secret from an empty secret")
    prk = hmac.digest(b"\x00" * 32, ikm, "sha256")  # extract (salt = zeros)
    return hmac.digest(prk, label + b"\x01", "sha256").hex()  # expand, one block


_process_secret: str | None = None
_process_secret_lock = threading.Lock()


def _random_process_secret() -> str:
    global _process_secret
    with _process_secret_lock:
        if _process_secret is None:
            _process_secret = secrets.token_hex(32)
            logger.warning(
                "no tool-token secret configured (secret_key=, %s or %s): using a random "
                "per-process secret; tool tokens will not survive a restart and will not "
                "validate on other workers",
                ENV_SECRET,
                ENV_API_SECRET,
            )
        return _process_secret


def _as_key(secret: str | bytes, what: str) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ConfigError(f"{what} is empty; configure a random secret of at least 32 bytes")
    if len(key) < MIN_SECRET_BYTES:
        warnings.warn(
            f"{what} is {len(key)} bytes; use at least {MIN_SECRET_BYTES} random bytes",
            InsecureSecretWarning,
            stacklevel=4,
        )
    return key


def _resolve_secrets(secret_key: object) -> tuple[list[str | bytes], str]:
    if secret_key is not None:
        one = isinstance(secret_key, (str, bytes, bytearray))
        items = [secret_key] if one else secret_key
        if not isinstance(items, Sequence):
            raise TypeError(
                f"secret_key must be a str, bytes or a list of them, not {type(items).__name__}"
            )
        if not items:
            raise ConfigError("secret_key is an empty list; give at least one secret")
        for item in items:
            if not isinstance(item, (str, bytes, bytearray)):
                raise TypeError(f"secret_key items must be str or bytes, not {type(item).__name__}")
        return [s if isinstance(s, str) else bytes(s) for s in items], "secret_key"
    env = os.environ.get(ENV_SECRET)
    if env:
        return [env], ENV_SECRET
    api = os.environ.get(ENV_API_SECRET)
    if api:
        return [derive_secret(api)], f"derived from {ENV_API_SECRET}"
    return [_random_process_secret()], "random per process"


def _check_expiry_secs(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("token_expiry_secs must be an int of seconds, not a bool")
    if isinstance(value, float):
        raise ValueError("token_expiry_secs must be an int of seconds")
    if not isinstance(value, int):
        raise TypeError(f"token_expiry_secs must be an int, not {type(value).__name__}")
    return value  # 0 or less: tokens born expired, as in SignalWire's SDKs (e.g. for tests)


# base64url to the stdlib's alphabet; '+' and '/' become '!', which no encoding contains.
_URL_TO_STD = bytes.maketrans(b"-_+/", b"+/!!")
_STD_TO_URL = bytes.maketrans(b"+/", b"-_")


def _decoded(token: object) -> str:
    """A token's text; TypeError or ValueError (never holding the token) unless it is strict
    base64url, which decoded bytes encoded again must give back (the stdlib is lenient)."""
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    try:
        std = token.encode("ascii").translate(_URL_TO_STD)
        data = binascii.a2b_base64(std + b"==")
        encoded = binascii.b2a_base64(data, newline=False)
        if std != encoded and std != encoded.rstrip(b"="):
            raise ValueError
    except ValueError:  # non-ASCII text, binascii.Error, or not the canonical encoding
        raise ValueError("token is not canonical base64url") from None
    return data.decode("utf-8")


def _is_expiry(field: str) -> bool:
    return 0 < len(field) <= 20 and field.isascii() and field.isdigit()


class ToolTokens:
    """Mint and check HMAC tool tokens (SignalWire wire format, flaws fixed).

    Example::

        tokens = ToolTokens(secret_key=os.environ["LIVEKIT_METADATA_SECRET"])
        token = tokens.generate_token("get_weather", call_id)
        assert tokens.validate_token(call_id, "get_weather", token)

    ``secret_key``: str or bytes, or a list for rotation (sign with the first, accept
    any); ``None``: ``LIVEKIT_METADATA_SECRET``, else derived from ``LIVEKIT_API_SECRET``,
    else random per process (logged). ``token_expiry_secs`` of 0 or less mints expired
    tokens, as SignalWire's SDKs do. Warns ``InsecureSecretWarning`` under 32 bytes.
    """

    __slots__ = (
        "_clock",
        "_debug_mode",
        "_expiry_secs",
        "_keys",
        "_macs",
        "secret_key",
        "secret_source",
    )

    def __init__(
        self,
        *,
        secret_key: SecretInput | None = None,
        token_expiry_secs: int = DEFAULT_TOKEN_EXPIRY_SECS,
        clock: Callable[[], float] | None = None,
        debug_mode: bool = False,
    ) -> None:
        self._expiry_secs = _check_expiry_secs(token_expiry_secs)
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning Unix seconds")
        found, source = _resolve_secrets(secret_key)
        self._keys: tuple[bytes, ...] = tuple(_as_key(s, source) for s in found)
        # Keyed once; each token copies the prepared HMAC instead of keying a new one.
        self._macs = tuple(hmac.new(k, digestmod=hashlib.sha256) for k in self._keys)
        self.secret_key: Final[str | bytes] = found[0]
        """The signing secret as configured. **Sensitive**: never log or display it."""
        self.secret_source: Final = source
        """Where the secret came from: ``secret_key``, an env var, derived or random."""
        self._clock: Callable[[], float] | None = clock  # None: time.time (tests may patch it)
        self._debug_mode = bool(debug_mode)

    def __repr__(self) -> str:
        return (
            f"ToolTokens(secret_key=<{len(self._keys)} secret(s), {self.secret_source}>, "
            f"token_expiry_secs={self._expiry_secs}, debug_mode={self._debug_mode})"
        )

    @property
    def token_expiry_secs(self) -> int:
        """Lifetime of newly minted tokens, in seconds."""
        return self._expiry_secs

    @token_expiry_secs.setter
    def token_expiry_secs(self, value: int) -> None:
        self._expiry_secs = _check_expiry_secs(value)

    @property
    def debug_mode(self) -> bool:
        """Whether :meth:`debug_token` is enabled."""
        return self._debug_mode

    @debug_mode.setter
    def debug_mode(self, value: bool) -> None:
        self._debug_mode = bool(value)

    def generate_token(self, function_name: str, call_id: str) -> str:
        """A padded base64url token for ``function_name`` (no ``:`` or ``.``) within
        ``call_id`` (no ``:``); TypeError or ValueError otherwise."""
        if not isinstance(function_name, str):
            raise TypeError(f"function_name must be a str, not {type(function_name).__name__}")
        if not isinstance(call_id, str):
            raise TypeError(f"call_id must be a str, not {type(call_id).__name__}")
        function_name, call_id = str(function_name), str(call_id)
        if not function_name or ":" in function_name or "." in function_name:
            raise ValueError("function_name must be non-empty and contain neither ':' nor '.'")
        if not call_id or ":" in call_id:
            raise ValueError("call_id must be non-empty and must not contain ':'")
        # Never below 0: the field stays plain digits, and 0 is expired for every clock.
        expiry = max(int(self._now()) + self._expiry_secs, 0)
        nonce = os.urandom(8).hex()  # 16 hex characters, as SignalWire's
        mac = self._macs[0].copy()
        mac.update(f"{call_id}:{function_name}:{expiry}:{nonce}".encode())
        plain = f"{call_id}.{function_name}.{expiry}.{nonce}.{mac.hexdigest()}".encode()
        return binascii.b2a_base64(plain, newline=False).translate(_STD_TO_URL).decode("ascii")

    def create_tool_token(self, tool_name: str, call_id: str) -> str:
        """Alias of :meth:`generate_token` (SignalWire name)."""
        return self.generate_token(tool_name, call_id)

    def validate_token(self, call_id: str, function_name: str, token: str) -> bool:
        """True if ``token`` is authentic, unexpired and for this call and function; never
        raises. A wrong call id costs the same work as a valid token (it is checked last)."""
        try:
            if not call_id or type(token) is not str:
                return False
            text = _decoded(token)
            if ":" in text:  # no field of a token we mint holds ':' (the MAC input's separator)
                return False
            t_call, t_func, t_expiry, t_nonce, t_sig = text.rsplit(".", 4)  # or raise
            if t_func != function_name or not _is_expiry(t_expiry) or int(t_expiry) <= self._now():
                return False
            head = f"{t_call}:{t_func}:{t_expiry}:{t_nonce}".encode()
            for prepared in self._macs:
                mac = prepared.copy()
                mac.update(head)
                # str compare_digest: a non-ASCII signature raises TypeError -> False.
                if hmac.compare_digest(t_sig, mac.hexdigest()):
                    return t_call == call_id and isinstance(call_id, str)
            return False
        except Exception:
            return False

    def _now(self) -> float:
        return time.time() if self._clock is None else self._clock()

    def validate_tool_token(self, function_name: str, token: str, call_id: str) -> bool:
        """Alias of :meth:`validate_token` with SignalWire's argument order for it."""
        return self.validate_token(call_id, function_name, token)

    def debug_token(self, token: str) -> dict[str, Any]:
        """A token's fields in SignalWire's shape, **without** checking its signature; only
        in :attr:`debug_mode`. Keep its output out of untrusted channels."""
        if not self._debug_mode:
            return {"valid_format": False, "error": "debug mode not enabled"}
        length = len(token) if isinstance(token, str) else 0
        try:
            parts = _decoded(token).rsplit(".", 4)
        except UnicodeDecodeError as exc:
            error = f"token does not decode to UTF-8 text (byte {exc.start})"
            return {"valid_format": False, "error": error, "token_length": length}
        except Exception as exc:  # our own messages never hold the token
            return {"valid_format": False, "error": str(exc), "token_length": length}
        if len(parts) != 5:
            return {"valid_format": False, "parts_count": len(parts), "token_length": length}
        t_call, t_func, t_expiry, t_nonce, t_sig = parts
        now = int(self._now())
        expiry = int(t_expiry) if _is_expiry(t_expiry) else None
        expiry_date = None
        if expiry is not None:
            with contextlib.suppress(OverflowError, OSError, ValueError):
                expiry_date = datetime.fromtimestamp(expiry, tz=timezone.utc).isoformat()
        return {
            "valid_format": True,
            "components": {
                "call_id": t_call[:8] + "..." if len(t_call) > 8 else t_call,
                "function": t_func,
                "expiry": t_expiry,
                "expiry_date": expiry_date and expiry_date.replace("+00:00", "Z"),
                "nonce": t_nonce,
                "signature": t_sig[:8] + "...",
            },
            "status": {
                "current_time": now,
                "is_expired": None if expiry is None else expiry <= now,
                "expires_in_seconds": None if expiry is None else max(expiry - now, 0),
            },
        }
