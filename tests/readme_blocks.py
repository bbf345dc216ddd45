"""Extract the fenced code blocks of the project's Markdown files, with their test markers.

A block runs exactly as written. The HTML comment on the line right before a
fence says how, when it is not the default (Python blocks run as a script,
``sh`` blocks line by line):

* ``<!-- test: needs-redis -->``: runs in the integration tier with ``REDIS_URL``
  set to the fixture's real redis-server;
* ``<!-- test: not-runnable (reason) -->``: never run (a long-running server, the
  test suite itself); the count of these is pinned by the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO", "Block", "blocks"]

REPO = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*test:\s*([\w-]+)(?:\s*\((.*)\))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: str
    line: int
    lang: str
    code: str
    marker: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def blocks(*paths: str) -> list[Block]:
    """Every fenced block of ``paths`` (relative to the repository), in order."""
    found: list[Block] = []
    for rel in paths:
        lines = (REPO / rel).read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            match = _FENCE.match(lines[i])
            if match is None:
                i += 1
                continue
            marker = _MARKER.match(lines[i - 1]) if i > 0 else None
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append(
                Block(
                    rel,
                    i + 1,
                    match.group(1) or "text",
                    "\n".join(lines[i + 1 : end]) + "\n",
                    marker.group(1) if marker else "run",
                )
            )
            i = end + 1
    return found
