"""#22.7: config and rules files must be regular files under a size limit; ``verify``
reads any bytes on standard input and answers with a clear error.

Before the fix, ``/dev/zero`` as a config was read until ``MemoryError`` and binary
standard input made ``verify`` print "unexpected failure (UnicodeEncodeError)".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from livekit.plugins.metadata.errors import ConfigError
from livekit.plugins.metadata.loader import MAX_FILE_BYTES, load_file
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.server.app import create_app
from livekit.plugins.metadata.server.config import ServerConfig

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


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
