"""Every code block of README.md and examples/README.md runs as written.

Python blocks run as scripts in a fresh interpreter from the repository root;
``sh`` blocks run line by line (continuations joined) with ``uv run`` replaced by
this interpreter's environment. Integration tier: each block is a fresh process.
Blocks that need Redis are in ``tests/test_readme_redis.py``; the few marked not
runnable are counted.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.readme_blocks import REPO, Block, blocks

pytestmark = pytest.mark.integration

FILES = ("README.md", "examples/README.md")
ALL = blocks(*FILES)
RUNNABLE = [b for b in ALL if b.marker == "run"]
NOT_RUNNABLE_LIMIT = 4
PENDING: dict[str, str] = {}
"""Blocks that fail today for a reason another change fixes: strict xfail, so a fix is noticed."""


def _params() -> list[Any]:
    params = []
    for block in RUNNABLE:
        reason = next((r for k, r in PENDING.items() if k in block.code), None)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The user's environment without LiveKit settings, this venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_block(block: Block, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if block.lang == "python":
        argv = [sys.executable, "-W", "error::Warning", "-c", block.code]
        return subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    script = block.code.replace("uv run ", "")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_blocks_are_found_and_few_are_not_runnable() -> None:
    """The harness sees the blocks, and only a handful are exempt (each says why)."""
    assert len(ALL) >= 8
    exempt = [b for b in ALL if b.marker == "not-runnable"]
    assert len(exempt) <= NOT_RUNNABLE_LIMIT, [b.id for b in exempt]
    assert {b.marker for b in ALL} <= {"run", "not-runnable", "needs-redis", "needs-livekit"}
    assert all(b.lang in ("python", "sh") for b in ALL), [b.id for b in ALL]


@pytest.mark.parametrize("block", _params())
def test_block_runs_as_written(block: Block) -> None:
    result = run_block(block, clean_env())
    assert result.returncode == 0, f"{block.id}\n{block.code}\n--- stderr\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr  # e.g. InsecureKeyLengthWarning
    assert shlex.quote(block.path)  # blocks are addressed by file:line in failures
