"""``.ci/install-livekit-server`` run by bash with a stand-in ``go`` (issue 25, first contact).

Integration tier: each test starts the script as a process (moved from
``test_first_contact.py`` to keep the unit tier in-process).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / ".ci" / "install-livekit-server"
FAKE_GO = """#!/bin/sh
case "$1 $2" in
  "env GOBIN") echo "" ;;
  "env GOPATH") echo "$FAKE_GOPATH" ;;
  *) mkdir -p "$FAKE_GOPATH/bin"
     printf '#!/bin/sh\\necho "livekit-server version 1.13.5"\\n' > "$FAKE_GOPATH/bin/server"
     chmod +x "$FAKE_GOPATH/bin/server" ;;
esac
"""


def _install(tmp_path: Path, *, go: bool = True, on_path: bool = False) -> Any:
    home, tools = tmp_path / "home", tmp_path / "tools"
    home.mkdir(exist_ok=True)
    tools.mkdir(exist_ok=True)
    if go:
        (tools / "go").write_text(FAKE_GO, encoding="utf-8")
        (tools / "go").chmod(0o755)
    path = f"{tools}:/usr/bin:/bin" + (f":{home}/.local/bin" if on_path else "")
    env = {"HOME": str(home), "PATH": path, "FAKE_GOPATH": str(tmp_path / "gopath")}
    return subprocess.run(
        ["/bin/bash", str(INSTALL)], env=env, capture_output=True, text=True, check=False
    )


def test_install_puts_livekit_server_where_the_next_command_finds_it(tmp_path: Path) -> None:
    first = _install(tmp_path)
    assert first.returncode == 0, first.stderr
    link = tmp_path / "home" / ".local" / "bin" / "livekit-server"
    assert "installing livekit-server v1.13.5" in first.stdout
    assert f"linked {link} -> " in first.stdout
    assert 'export PATH="$HOME/.local/bin:$PATH"' in first.stdout  # not on PATH: say how
    assert link.exists()

    again = _install(tmp_path)  # already there: it says so, and how to call it
    assert again.returncode == 0
    assert f"already installed at {link}; nothing to do" in again.stdout
    assert 'export PATH="$HOME/.local/bin:$PATH"' in again.stdout

    on_path = _install(tmp_path, on_path=True)
    assert "run it as: livekit-server --dev" in on_path.stdout
    assert "export PATH" not in on_path.stdout


def test_install_without_go_fails_saying_what_to_install(tmp_path: Path) -> None:
    result = _install(tmp_path, go=False)
    assert result.returncode == 1
    assert "go not found: install Go" in result.stderr
