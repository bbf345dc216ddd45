"""One loader for every YAML, TOML and JSON file the package reads, into plain JSON data.

Each refusal is a :class:`~.errors.ConfigError` naming the file, the line (when the format
can tell) and the field, never a value (a config may hold secrets). YAML follows the 1.2
core schema (:mod:`._yaml`): ``language: no`` is the string ``"no"``.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ._util import Refused, child_path, key_label
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_VALUES",
    "ConfigFormat",
    "format_of",
    "load_file",
    "load_text",
    "read_bounded",
]

ConfigFormat = Literal["yaml", "toml", "json"]

MAX_VALUES = 1_000_000
"""Most values a YAML document may expand to once its aliases are followed."""

MAX_FILE_BYTES = 1024 * 1024
"""Largest file :func:`load_file` reads by default."""

_SUFFIXES: dict[str, ConfigFormat] = {
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".json": "json",
}


def _error(source: str, line: int | None, path: str, reason: str) -> ConfigError:
    where = [source]
    if line is not None:
        where.append(f"line {line}")
    if path:
        where.append(f"field {path!r}")
    return ConfigError(f"{', '.join(where)}: {reason}")


def _load_yaml(text: str) -> Any:
    from ._yaml import load_yaml

    return load_yaml(text, max_values=MAX_VALUES)


def _toml_line(text: str, path: str) -> int | None:
    """Best-effort line of a TOML key (tomllib reports no positions for values)."""
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    if not last:
        return None
    pattern = re.compile(rf"^\s*(?:[\"']?{re.escape(last)}[\"']?)\s*=", re.MULTILINE)
    found = [text.count("\n", 0, m.start()) + 1 for m in pattern.finditer(text)]
    return found[0] if len(found) == 1 else None


def _check_json(value: Any, path: str) -> None:
    """Refuse what JSON cannot hold (TOML dates and times, NaN, infinities)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_json(v, child_path(path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, child_path(path, i))
    elif isinstance(value, float) and not math.isfinite(value):
        raise Refused(None, path, "NaN and infinities are not JSON numbers")
    elif not isinstance(value, (str, int, float, bool)) and value is not None:
        raise Refused(
            None,
            path,
            f"a {type(value).__name__} is not a JSON value; quote it to mean the text",
        )


def _load_toml(text: str) -> Any:
    data = tomllib.loads(text)
    try:
        _check_json(data, "")
    except Refused as exc:
        exc.line = _toml_line(text, exc.path)
        raise
    return data


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Refused(None, key_label(key, quote=False), "duplicate key")
        out[key] = value
    return out


def _json_constant(name: str) -> Any:
    raise Refused(None, "", f"{name} is not a JSON number")


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_json_constant)
    except Refused as exc:
        if exc.reason == "duplicate key":
            # The hook sees no positions: the duplicate is the key's second spelling.
            spelled = json.dumps(exc.path)
            starts = [m.start() for m in re.finditer(re.escape(spelled) + r"\s*:", text)]
            if len(starts) >= 2:
                exc.line = text.count("\n", 0, starts[1]) + 1
        raise


_PARSERS: dict[ConfigFormat, Callable[[str], Any]] = {
    "yaml": _load_yaml,
    "toml": _load_toml,
    "json": _load_json,
}


def format_of(path: str | Path) -> ConfigFormat:
    """The format a file's extension names; else ConfigError."""
    suffix = Path(path).suffix.lower()
    fmt = _SUFFIXES.get(suffix)
    if fmt is None:
        raise ConfigError(
            f"{str(path)!r}: unknown file type {suffix or '(none)'!r}; "
            "use .yaml, .yml, .toml or .json"
        )
    return fmt


def load_text(text: str | bytes, fmt: ConfigFormat, source: str = "<text>") -> Any:
    """Parse ``text`` as ``fmt`` into JSON data; an empty YAML document is ``None``.

    ConfigError (naming ``source``, the line and the field) for syntax errors, duplicate
    keys, values JSON cannot hold (dates, binary, sets, NaN, tags, non-string keys), YAML
    merge keys and aliases expanding beyond :data:`MAX_VALUES`. In YAML, ``0777`` is 777,
    ``1_000`` and ``1:30`` are strings; an unquoted date is refused.
    """
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise ValueError(f"fmt must be one of {sorted(_PARSERS)}, not {fmt!r}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(source, None, "", f"not UTF-8 (byte {exc.start})") from None
    try:
        return parser(text)
    except Refused as exc:
        raise _error(source, exc.line, exc.path, exc.reason) from None
    except tomllib.TOMLDecodeError as exc:
        raise _error(source, None, "", f"invalid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _error(
            source, exc.lineno, "", f"invalid JSON at column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise _error(source, None, "", "the document is nested too deeply") from None


def load_file(
    path: str | Path, fmt: ConfigFormat | None = None, *, max_bytes: int = MAX_FILE_BYTES
) -> Any:
    """Read and parse a YAML, TOML or JSON file (format from the extension by default)."""
    p = Path(path)
    fmt = fmt or format_of(p)
    return load_text(read_bounded(p, max_bytes), fmt, source=repr(str(p)))


def read_bounded(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; else ConfigError naming it."""
    where = repr(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _unreadable(where, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where}: not a regular file; give the path of a file")
        if info.st_size > max_bytes:
            raise ConfigError(
                f"{where}: the file is {info.st_size} bytes, over the limit of {max_bytes}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise _unreadable(where, exc) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ConfigError(f"{where}: the file is over the limit of {max_bytes} bytes")
    return data


def _unreadable(where: str, exc: OSError) -> ConfigError:
    return ConfigError(f"{where}: cannot read the file: {exc.strerror or type(exc).__name__}")
