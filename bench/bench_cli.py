"""Cold start of the ``lk-metadata`` command against importing the agents framework.

Each case starts a fresh interpreter (a cold process; the OS file cache is warm,
as on any second run), so the figure is what a user waits for at the prompt:

* ``python -c "import livekit.agents"`` (baseline): what every command paid
  when the package registered its LiveKit ``Plugin`` at import;
* ``lk-metadata --help``: target ≤ 0.15× the baseline;
* ``lk-metadata token ...``: mint one token with metadata and a dispatch;
  target ≤ 0.3× the baseline;
* ``python -c "import livekit.plugins.metadata"``: the bare package, for
  reference (a web backend that only mints tokens starts here).

Run: ``uv run python -m bench.bench_cli [--quick]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ._harness import Case, Table, format_table, measure

__all__ = ["commands", "run"]

_DEV_KEY = "devkey"
_DEV_SECRET = "secret-for-the-cli-benchmark-only-0123456789"


def _lk_metadata() -> list[str]:
    """The installed console script next to this interpreter, else the module entry point."""
    script = Path(sys.executable).with_name("lk-metadata")
    if script.exists():
        return [str(script)]
    found = shutil.which("lk-metadata")
    if found is not None:
        return [found]
    return [sys.executable, "-c", "from livekit.plugins.metadata.cli import main; main()"]


def commands() -> dict[str, tuple[list[str], bool]]:
    """Case name -> (argv, is the baseline)."""
    lk = _lk_metadata()
    token = [
        *lk,
        "token",
        "--api-key",
        _DEV_KEY,
        "--api-secret",
        _DEV_SECRET,
        "--identity",
        "caller-1",
        "--room",
        "support-1",
        "--metadata",
        '{"department": "support", "language": "es"}',
        "--agent",
        "support-es",
    ]
    return {
        'python -c "import livekit.agents"': (
            [sys.executable, "-c", "import livekit.agents"],
            True,
        ),
        "lk-metadata --help": ([*lk, "--help"], False),
        "lk-metadata token ... (metadata + dispatch)": (token, False),
        'python -c "import livekit.plugins.metadata"': (
            [sys.executable, "-c", "import livekit.plugins.metadata"],
            False,
        ),
    }


def _case(name: str, argv: list[str], baseline: bool) -> Case:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}

    def fn(loops: int) -> None:
        for _ in range(loops):
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True, timeout=120)

    return Case(name, fn, baseline=baseline)


def run(quick: bool = False) -> list[Table]:
    """One table: each command once per repetition (a process start is already long)."""
    cases = [_case(name, argv, base) for name, (argv, base) in commands().items()]
    note = (
        "Fresh process per run (cold interpreter, warm file cache). "
        "Targets: `--help` ≤ 0.15×, `token` ≤ 0.3× the baseline."
    )
    return [measure("CLI cold start", cases, repeats=5 if quick else 9, target=1e-9, note=note)]


if __name__ == "__main__":
    for table in run(quick="--quick" in sys.argv[1:]):
        print(format_table(table))
