"""Private helpers shared by every wing: what a message or log line may show, range checks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "Refused",
    "child_path",
    "key_label",
    "keys_for_log",
    "non_finite_path",
    "positive_int",
    "positive_number",
    "raw_size",
    "redact_url",
]

KEY_LABEL_MAX = 64  # longest key shown in a message; longer ones end in "..."

_MAX_LOGGED_KEYS = 20


def key_label(key: object, *, quote: bool = True) -> str:
    """A key for a message, cut; ``quote``: its ``repr``, so a hostile key cannot forge a log line."""
    text = str(key)
    if len(text) > KEY_LABEL_MAX:
        text = text[: KEY_LABEL_MAX - 3] + "..."
    return repr(text) if quote else text


def child_path(path: str, key: object) -> str:
    """The field path of ``key`` (a list index or a mapping key) under ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    label = key_label(key, quote=False)
    return f"{path}.{label}" if path else label


class Refused(Exception):
    """What a file reader will not hand out; ``loader.load_text`` makes it a ConfigError."""

    def __init__(self, line: int | None, path: str, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.path = path
        self.reason = reason


def keys_for_log(keys: Iterable[object]) -> str:
    """A bounded, quoted list of keys for a log line: at most 20, then a count."""
    keys = list(keys)
    shown = ", ".join(key_label(k) for k in keys[:_MAX_LOGGED_KEYS])
    if len(keys) > _MAX_LOGGED_KEYS:
        shown += f", ... ({len(keys)} keys)"
    return f"[{shown}]"


def non_finite_path(value: Any) -> str | None:
    """Path of the first NaN/Infinity float in ``value`` (``"<root>"``), or None.

    orjson writes them as ``null``, silently, so every writer refuses them first.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                return path or "<root>"
        elif isinstance(node, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
    return None


def positive_number(value: object, name: str, unit: str = "number") -> float:
    """``value`` if it is a positive, finite number (not a bool), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive, finite {unit}")
    return value


def positive_int(value: object, name: str, *, low: int = 1) -> int:
    """``value`` if it is an int (not a bool) >= ``low``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"{name} must be a positive int" if low == 1 else f"{name} must be an int >= {low}"
        )
    return value


def raw_size(raw: object) -> int:
    """Bytes of a raw metadata document, for logs (0 when it is not str or bytes)."""
    if isinstance(raw, str):
        return len(raw.encode("utf-8", "surrogatepass"))
    return len(raw) if isinstance(raw, (bytes, bytearray)) else 0


def redact_url(url: str) -> str:
    """``url`` with any password (userinfo or a ``password=`` query field) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user, sep, _password = userinfo.partition(":")
            # A lone userinfo (redis://secret@host) may be a password too.
            netloc = f"{user}:***@{host}" if sep else f"***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable url>"
