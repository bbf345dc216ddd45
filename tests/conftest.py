"""Shared test configuration.

Every test module declares exactly one category marker (``unit``, ``integration``
or ``e2e``) through ``pytestmark``; collection fails otherwise, so no test can
slip out of its tier. Tiers that need a real server skip locally with a message
when the server is missing and fail when ``CI=true``.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.redis_server",
    "tests.fixtures.redis_cluster",
    "tests.fixtures.redis_sentinel",
    "tests.fixtures.livekit_server",
]

_CATEGORIES = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = []
    for item in items:
        found = [m for m in _CATEGORIES if item.get_closest_marker(m) is not None]
        if len(found) != 1:
            missing.append(f"{item.nodeid}: {found or 'no category marker'}")
    if missing:
        raise pytest.UsageError(
            "every test needs exactly one of pytest.mark.unit/integration/e2e:\n  "
            + "\n  ".join(missing[:20])
        )
