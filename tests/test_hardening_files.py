"""#22.7: config and rules files must be regular files under a size limit; ``verify``
reads any bytes on standard input and answers with a clear error.

Before the fix, ``/dev/zero`` as a config was read until ``MemoryError`` and binary
standard input made ``verify`` print "unexpected failure (UnicodeEncodeError)".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from livekit.plugins.metadata.errors import ConfigError
from livekit.plugins.metadata.loader import MAX_FILE_BYTES, load_file
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.server.app import create_app
from livekit.plugins.metadata.server.config import ServerConfig

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugin"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "livekit.plugins.metadata.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_behind_a_config_name_is_refused_at_once(tmp_path: Path, device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    link = tmp_path / "server.yaml"
    link.symlink_to(device)
    with pytest.raises(ConfigError, match=r"server\.yaml'?: not a regular file") as info:
        ServerConfig.from_file(link)
    assert str(link) in str(info.value)
    with pytest.raises(ConfigError, match="not a regular file"):
        MetadataRouter.from_file(link)


def test_a_directory_and_a_fifo_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "rules.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_file(folder)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening it blocking would wait for a writer forever
    with pytest.raises(ConfigError, match="not a regular file"):
        load_file(fifo)


def test_a_file_over_the_limit_is_refused_naming_the_file_and_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b"{" + b" " * MAX_FILE_BYTES + b"}")
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_file(big)
    assert "big.json" in str(info.value)
    assert f"over the limit of {MAX_FILE_BYTES}" in str(info.value)
    assert load_file(big, max_bytes=MAX_FILE_BYTES + 2) == {}


def test_the_rules_limit_is_configurable(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_bytes(b'{"default": "reception"' + b" " * (MAX_FILE_BYTES + 10) + b"}")
    with pytest.raises(ConfigError, match="over the limit"):
        create_app(ServerConfig(rules=str(rules)), warn_dev_keys=False)
    app = create_app(
        ServerConfig(rules=str(rules), max_rules_bytes=2 * MAX_FILE_BYTES), warn_dev_keys=False
    )
    assert app is not None
    with pytest.raises(ConfigError, match="max_rules_bytes"):
        ServerConfig.from_mapping({"max_rules_bytes": 10})


def test_serve_on_a_device_config_exits_with_one_clear_line(tmp_path: Path) -> None:
    link = tmp_path / "server.yaml"
    link.symlink_to("/dev/zero")
    result = _cli("serve", "-c", str(link))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "not a regular file" in err
    assert "unexpected failure" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "stdin",
    [b"\xff\xfe\x00\x01binary", bytes(range(256)), b"\xe9t\xe9", b"", b"a" * 70_000],
    ids=["binary", "all-bytes", "latin-1", "empty", "huge"],
)
def test_verify_reads_any_bytes_on_stdin_and_answers_clearly(stdin: bytes) -> None:
    result = _cli("verify", "-", "--api-key", "k", "--api-secret", "s" * 32, stdin=stdin)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("error: token is invalid: standard input")
    assert "unexpected failure" not in err
    assert "Traceback" not in err
