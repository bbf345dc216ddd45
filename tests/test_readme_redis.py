"""README blocks marked ``needs-redis`` run as written against the real redis-server fixture."""

from __future__ import annotations

import pytest

from tests.readme_blocks import Block
from tests.test_readme import ALL, clean_env, run_block

pytestmark = pytest.mark.integration

REDIS_BLOCKS = [b for b in ALL if b.marker == "needs-redis"]


def test_there_is_a_redis_block() -> None:
    assert len(REDIS_BLOCKS) >= 1


@pytest.mark.parametrize("block", REDIS_BLOCKS, ids=[b.id for b in REDIS_BLOCKS])
def test_redis_block_runs_as_written(block: Block, redis_url: str) -> None:
    env = clean_env(
        REDIS_URL=redis_url, LIVEKIT_METADATA_SECRET="readme-shared-secret-0123456789abcdef"
    )
    result = run_block(block, env)
    assert result.returncode == 0, f"{block.id}\n--- stderr\n{result.stderr}"
    if "examples/redis_sessions.py" in block.code:  # two processes, one session
        assert "worker sees: {'caller': 'Ada'" in result.stdout
        assert "'agent': 'support'" in result.stdout
        assert "tool token valid: True" in result.stdout
    else:
        assert "'caller': 'John'" in result.stdout
    assert "Warning" not in result.stderr
