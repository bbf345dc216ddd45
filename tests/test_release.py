"""Release metadata: one version, the license, ``lk-metadata --version`` (issue 30).

The built artifacts themselves are checked by ``.ci/check-dist`` (build, contents, a fresh
install and a smoke test), which CI runs; these tests keep the sources those checks rely on
consistent on every test run.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from livekit.plugins.metadata import __version__
from livekit.plugins.metadata.cli import app

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_lives_in_version_py_only() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    project = PYPROJECT["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == (
        "plugin/livekit/plugins/metadata/version.py"
    )
    assert importlib.metadata.version("livekit-plugins-metadata") == __version__


def test_version_option_prints_the_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"lk-metadata {__version__}\n"
    # Eager: it answers before any command or its required options are looked at.
    result = CliRunner().invoke(app, ["--version", "route"])
    assert (result.exit_code, result.stdout) == (0, f"lk-metadata {__version__}\n")


def test_license_is_apache_2_and_shipped_in_both_artifacts() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "/LICENSE" in PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]


def test_classifiers_name_every_tested_python() -> None:
    classifiers = set(PYPROJECT["project"]["classifiers"])
    assert "Typing :: Typed" in classifiers
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert PYPROJECT["project"]["requires-python"] == ">=3.10.0"
