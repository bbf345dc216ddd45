"""A fresh interpreter loads ``phonenumbers`` and ``yaml`` only when a rule set needs them.

Issue 33 (pay once per worker, only for what a rule set uses). Integration tier: one
subprocess, because ``sys.modules`` must start clean (moved from ``test_prewarm.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

_PROBE = """
import json, sys
from livekit.plugins.metadata.routing.router import MetadataRouter

seen = {}
def loaded(step):
    seen[step] = {name: name in sys.modules for name in ("phonenumbers", "yaml")}

loaded("import")
router = MetadataRouter.from_dict(
    {"rules": [{"name": "s", "when": {"department": "support"}, "agent": "support"}],
     "default": "general"})
assert router.route({"department": "support"}).agent == "support"
assert router.route({}).agent == "general"
loaded("dict rules routed")
from livekit.plugins.metadata.loader import load_text
MetadataRouter.from_dict(load_text('{"rules": [], "default": "general"}', "json"))
loaded("json rules")
MetadataRouter.from_dict(load_text("rules: []\\ndefault: general\\n", "yaml"))
loaded("yaml rules")
phone = MetadataRouter.from_dict(
    {"rules": [{"name": "line", "when_attributes": {"sip.trunkPhoneNumber": {"phone": "+34 910 000 000"}},
                "agent": "sales"}], "default": "general"})
assert phone.route({}, attributes={"sip.trunkPhoneNumber": "0034910000000"}).agent == "sales"
loaded("phone rules")
print(json.dumps(seen))
"""


def test_router_loads_phonenumbers_and_yaml_only_when_a_rule_set_needs_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    none = {"phonenumbers": False, "yaml": False}
    assert seen["import"] == none
    assert seen["dict rules routed"] == none
    assert seen["json rules"] == none
    assert seen["yaml rules"] == {"phonenumbers": False, "yaml": True}
    assert seen["phone rules"] == {"phonenumbers": True, "yaml": True}
