"""Every example of docs/rules.md runs: each rule block routes its table as the table says.

A ``yaml`` block is loaded as a rules file (through the loader, as ``from_file`` reads
one); the table right after it lists metadata, attributes and the route expected
(an agent, ``rejected`` or ``NoRouteMatched``). A block marked ``config-error`` must
fail to load. Python blocks run as written from the repository root.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from livekit.plugins.metadata.errors import ConfigError, NoRouteMatched
from livekit.plugins.metadata.loader import load_text
from livekit.plugins.metadata.routing.router import MetadataRouter
from tests.readme_blocks import REPO, Block, blocks

pytestmark = pytest.mark.unit

DOC = "docs/rules.md"
LINES = (REPO / DOC).read_text(encoding="utf-8").splitlines()
RULE_BLOCKS = [b for b in blocks(DOC) if b.lang == "yaml"]
PYTHON_BLOCKS = [b for b in blocks(DOC) if b.lang == "python"]


def _table_after(block: Block) -> list[tuple[str, str, str]]:
    """The rows of the table that follows ``block`` (blank lines between are allowed)."""
    i = block.line + block.code.count("\n") + 1  # the closing fence, 0-based next line
    while i < len(LINES) and not LINES[i].strip():
        i += 1
    rows = []
    while i < len(LINES) and LINES[i].startswith("|"):
        cells = [c.strip() for c in LINES[i].strip().strip("|").split("|")]
        i += 1
        if cells[0] in ("metadata", "---"):
            continue
        assert len(cells) == 3, f"{DOC}:{i}: a row is | metadata | attributes | route |"
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def _json_cell(cell: str) -> Any:
    return json.loads(cell.strip("`")) if cell else None


def _router(block: Block) -> MetadataRouter:
    source = f"{DOC}:{block.line}"
    return MetadataRouter.from_dict(load_text(block.code, "yaml", source), source=source)


def test_the_document_has_examples() -> None:
    assert len(RULE_BLOCKS) >= 8
    assert sum(len(_table_after(b)) for b in RULE_BLOCKS) >= 30


@pytest.mark.parametrize("block", RULE_BLOCKS, ids=lambda b: b.id)
def test_each_rule_block_routes_its_table(block: Block) -> None:
    if block.marker == "config-error":
        with pytest.raises(ConfigError, match=r"rule '\w[\w-]*' \(rules\[0\]\)"):
            _router(block)
        return
    rows = _table_after(block)
    assert rows, f"{block.id}: a rule block needs a table of inputs and routes after it"
    router = _router(block)
    for metadata, attributes, expected in rows:
        md, attrs = _json_cell(metadata) or {}, _json_cell(attributes)
        where = f"{block.id}: {metadata} {attributes}"
        if expected == "NoRouteMatched":
            with pytest.raises(NoRouteMatched):
                router.route(md, attributes=attrs)
            continue
        route = router.route(md, attributes=attrs)
        if expected == "rejected":
            assert route.rejected, where
        else:
            assert not route.rejected, where
            assert route.agent == expected.strip("`"), where


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_blocks_run(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    namespace: dict[str, Any] = {}
    exec(compile(block.code, block.id, "exec"), namespace)  # noqa: S102 - the doc's own code
    assert "router" in namespace
