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


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without tearing down LiveKit's native rtc runtime, keeping pytest's exit status.

    The e2e tier joins rooms in-process with ``livekit.rtc``. Its native (Rust/tokio)
    runtime can abort the interpreter's shutdown with "panic in a function that cannot
    unwind" after every test has passed and the summary is printed, which would turn a
    green run into exit 134. Once the runtime was started, the run ends here with the
    exit status pytest itself decided, after flushing the output.
    """
    import sys

    ffi = sys.modules.get("livekit.rtc._ffi_client")
    if ffi is None or getattr(ffi.FfiClient, "_instance", None) is None or not _exit_status:
        return
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[-1])
