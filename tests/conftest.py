"""Shared test configuration.

Every test module declares exactly one category marker (``unit``, ``integration``
or ``e2e``) through ``pytestmark``; collection fails otherwise, so no test can
slip out of its tier. Tiers that need a real server skip locally with a message
when the server is missing and fail when ``CI=true``.

Fixtures shared by every module live in ``tests/fixtures/`` (``fakes``: the one ``clock``,
``store`` and ``sessions``; ``lk_serve``: the one ``lk-metadata serve`` launcher; the servers).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# -- hypothesis profiles --------------------------------------------------------------------
# Every property test runs in every profile; the profiles change how many examples it draws
# (``tests.strategies.examples`` scales explicit counts by ``max_examples / 100``).
# ``unit``: the unit tier (``-m unit``): a fifth of the examples, so the tier stays fast.
# ``dev`` (any other local run): hypothesis' 100 examples, no timing limits (busy machine).
# ``deep`` (any other run under CI=true, e.g. the full suite): twice the examples, fresh random
#   examples each run, every failure prints its ``@reproduce_failure`` blob, no database.
# ``thorough``: ten times the examples, no database, so ``--hypothesis-seed=N`` alone decides
#   what is drawn. For hunting failures:
#   HYPOTHESIS_PROFILE=thorough uv run pytest -m unit --hypothesis-seed=7
# HYPOTHESIS_PROFILE (or pytest's --hypothesis-profile) picks a profile explicitly.
_UNTIMED = [HealthCheck.too_slow]
_CI = os.environ.get("CI") == "true"
settings.register_profile("dev", deadline=None, suppress_health_check=_UNTIMED)
settings.register_profile(
    "ci", deadline=None, suppress_health_check=_UNTIMED, print_blob=True, database=None
)
settings.register_profile("deep", settings.get_profile("ci"), max_examples=200)
settings.register_profile("unit", settings.get_profile("ci" if _CI else "dev"), max_examples=20)
settings.register_profile("thorough", settings.get_profile("ci"), max_examples=1000)


def pytest_configure(config: pytest.Config) -> None:
    """Load the profile before any test module builds its ``@settings`` (at import)."""
    unit_tier = (config.option.markexpr or "").strip() == "unit"
    default = "unit" if unit_tier else "deep" if _CI else "dev"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or default)


pytest_plugins = [
    "tests.fixtures.fakes",
    "tests.fixtures.servers",
    "tests.fixtures.redis_server",
    "tests.fixtures.redis_cluster",
    "tests.fixtures.redis_sentinel",
    "tests.fixtures.livekit_server",
    "tests.fixtures.browser",
]

_CATEGORIES = ("unit", "integration", "e2e")
_MODULE_TIER = re.compile(r"^pytestmark\s*=\s*\[?\s*pytest\.mark\.(\w+)", re.MULTILINE)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m <tier>`` does not import the modules whose ``pytestmark`` names another tier.

    Every test of such a module would be deselected anyway; importing it (playwright,
    schemathesis, livekit.rtc, ...) only slows the run down.
    """
    tier = (config.option.markexpr or "").strip()
    if tier not in _CATEGORIES or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    found = _MODULE_TIER.search(collection_path.read_text(encoding="utf-8"))
    if found is not None and found.group(1) in _CATEGORIES and found.group(1) != tier:
        return True
    return None


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
    import gc
    import sys

    # The run is over: the interpreter's shutdown need not walk the whole heap for cycles
    # (about 2 s after a unit-tier run). Objects are still freed; atexit handlers still run.
    gc.freeze()
    ffi = sys.modules.get("livekit.rtc._ffi_client")
    if ffi is None or getattr(ffi.FfiClient, "_instance", None) is None or not _exit_status:
        return
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[-1])
