"""LiveKit SIP dispatch rules (which agents an inbound call to a number gets) compiled from
the routing rules and kept in sync: only the rules a sync created in its scope (marked by
:data:`OWNER_ATTRIBUTE`) are ever changed (README: "Routing phone calls")."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from google.protobuf.json_format import MessageToDict
from livekit import api
from livekit.api.sip_service import SipService

from ..codec import PLUGIN_ATTRIBUTE_PREFIX
from ..errors import DispatchError
from ..routing.conditions import Cond
from ..routing.router import MetadataRouter
from ..routing.rules import Rule
from .dispatch import server_call

__all__ = [
    "CALLED",
    "CALLER",
    "MAX_SCOPE_LEN",
    "NO_SIP_HINT",
    "OWNER_ATTRIBUTE",
    "SIP_RULE_PREFIX",
    "SipClient",
    "SyncPlan",
    "apply_plan",
    "default_scope",
    "desired_dispatch_rules",
    "export_json",
    "list_dispatch_rules",
    "plan_sync",
]

T = TypeVar("T")

SIP_RULE_PREFIX = "lk-metadata/"  # of the names ``sip sync`` gives (ownership: OWNER_ATTRIBUTE)

OWNER_ATTRIBUTE = PLUGIN_ATTRIBUTE_PREFIX + "sip-sync"  # on the rules a sync owns: its scope

MAX_SCOPE_LEN = 128

CALLED = "sip.trunkPhoneNumber"  # the SIP participant attribute: the dialed (trunk) number
CALLER = "sip.phoneNumber"  # the SIP participant attribute: the caller's number (inbound)

_COMPARED = (
    "trunk_ids",
    "numbers",
    "inbound_numbers",
    "rule",
    "room_config",
    "metadata",
    "attributes",
    "hide_phone_number",
)


class SipClient(Protocol):
    """Anything with a ``sip`` service, e.g. ``livekit.api.LiveKitAPI``."""

    @property
    def sip(self) -> SipService: ...


def _numbers(conds: Iterable[Cond], attribute: str) -> frozenset[str]:
    """The exact numbers (``phone``) a rule's conditions want ``attribute`` to be."""
    indexed = [c.indexed for c in conds if c.source == "attributes" and c.path == attribute]
    return frozenset(n for index in indexed if index and index[0] == "phone" for n in index[1])


def _static_metadata(rule: Rule) -> str | None:
    """The job metadata (JSON) that satisfies the rule's ``when``, or None if it takes more
    than ``==``."""
    md: dict[str, Any] = {}
    for c in rule.conds:
        if c.source != "metadata":
            continue
        if c.op != "==":
            return None
        node = md
        for seg in c.parts[:-1]:
            node = node.setdefault(seg, {})
        node[c.parts[-1]] = json.loads(c.expected)
    return json.dumps(md, sort_keys=True, separators=(",", ":"))


def default_scope(trunk_ids: Sequence[str] = (), rules: str | Path | None = None) -> str:
    """A sync's default scope: ``trunks:ST_A,ST_B`` (sorted), else ``rules:<file name>``,
    else ``default``."""
    if trunk_ids:
        return _checked_scope("trunks:" + ",".join(sorted(set(trunk_ids))))
    if rules is not None:
        return _checked_scope("rules:" + Path(rules).name)
    return "default"


def _checked_scope(scope: str) -> str:
    if (
        not isinstance(scope, str)
        or not 0 < len(scope) <= MAX_SCOPE_LEN
        or not scope.isprintable()
        or scope.strip() != scope
    ):
        raise ValueError(
            f"a sync scope must be 1..{MAX_SCOPE_LEN} printable characters without "
            "leading or trailing spaces"
        )
    return scope


def desired_dispatch_rules(
    router: MetadataRouter,
    *,
    trunk_ids: Sequence[str] = (),
    room_prefix: str = "call-",
    scope: str | None = None,
) -> tuple[list[api.SIPDispatchRuleInfo], list[str]]:
    """The dispatch rules the routing rules call for (without ids, sorted by name) and one
    line per routing rule left out, saying why; ValueError for a bad scope.

    Each rule on an exact called or calling number joins the dispatch rule of its target
    (agent, job metadata from its ``when`` equalities, callers), ``lk-metadata/<agent>``
    (``#2``... for more targets of one agent): one room per call, on ``trunk_ids`` (empty:
    all), marked with ``scope`` (default: :func:`default_scope`).
    """
    marker = {
        OWNER_ATTRIBUTE: _checked_scope(scope) if scope is not None else default_scope(trunk_ids)
    }
    groups: dict[tuple[Any, ...], set[str]] = {}  # a target -> its called numbers
    skipped: list[str] = []
    for rule in router.rule_set.rules:
        f = rule.target.fields
        called = _numbers(rule.conds, CALLED)
        callers = _numbers(rule.conds, CALLER)
        metadata = _static_metadata(rule)
        if f["rejected"]:
            reason = "a reject rule dispatches nothing"
        elif not called and not callers:
            reason = (
                f"no exact number ('phone') on {CALLED} or {CALLER}; it routes in the entrypoint"
            )
        elif metadata is None:
            reason = "its 'when' takes more than plain equalities, which job metadata cannot carry"
        else:
            attributes = tuple(sorted(f["attributes"].items()))
            key = (f["agent"], f["agent_name"], f["deployment"], attributes, metadata, callers)
            groups.setdefault(key, set()).update(called)
            continue
        skipped.append(f"{rule.name or f'rules[{rule.pos}]'}: {reason}")
    seen: Counter[str] = Counter()
    out: list[api.SIPDispatchRuleInfo] = []
    for (agent, agent_name, deployment, attributes, metadata, callers), numbers in groups.items():
        seen[agent] += 1
        dispatch = api.RoomAgentDispatch(
            agent_name=agent_name,
            metadata="" if metadata == "{}" else metadata,
            deployment=deployment or "",
            attributes=dict(attributes),
        )
        out.append(
            api.SIPDispatchRuleInfo(
                name=f"{SIP_RULE_PREFIX}{agent}{'' if seen[agent] == 1 else f'#{seen[agent]}'}",
                trunk_ids=sorted(trunk_ids),
                numbers=sorted(numbers),
                inbound_numbers=sorted(callers),
                rule=api.SIPDispatchRule(
                    dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=room_prefix)
                ),
                room_config=api.RoomConfiguration(agents=[dispatch]),
                attributes=marker,
            )
        )
    return sorted(out, key=lambda r: r.name), skipped


def _view(rule: api.SIPDispatchRuleInfo) -> dict[str, Any]:
    """The fields sync manages, as plain data (lists sorted, ids and timestamps left out)."""
    data = MessageToDict(rule, preserving_proto_field_name=True)
    view = {k: data[k] for k in _COMPARED if k in data}
    lists = ("trunk_ids", "numbers", "inbound_numbers")
    return view | {k: sorted(view[k]) for k in lists if k in view}


def export_json(rules: Sequence[api.SIPDispatchRuleInfo]) -> str:
    """The dispatch rules as a JSON list (protobuf field names), for ``sip export``."""
    return json.dumps([_view(r) | {"name": r.name} for r in rules], indent=2, sort_keys=True)


@dataclass(frozen=True)
class SyncPlan:
    """What :func:`apply_plan` will do: ``create``, ``update`` (``(existing, wanted)``
    pairs), ``delete`` (also duplicates) and leave ``unchanged`` of our rules; the
    server's ``foreign`` rules and the ``skipped`` routing rules, each with why."""

    create: list[api.SIPDispatchRuleInfo]
    update: list[tuple[api.SIPDispatchRuleInfo, api.SIPDispatchRuleInfo]]
    delete: list[api.SIPDispatchRuleInfo]
    unchanged: list[api.SIPDispatchRuleInfo]
    foreign: list[str]
    skipped: list[str]
    scope: str = ""

    @property
    def changes(self) -> int:
        """How many server calls the plan makes (0: the server is in sync)."""
        return len(self.create) + len(self.update) + len(self.delete)

    def format(self) -> str:
        """The plan as a diff, one line per dispatch rule (numbers and agent names only)."""
        lines = [f"scope {self.scope}: only rules marked {OWNER_ATTRIBUTE}={self.scope} are ours"]
        lines += [f"+ create {r.name}: {_summary(_view(r))}" for r in self.create]
        for old, new in self.update:
            before, after = _view(old), _view(new)
            changed = sorted(k for k in _COMPARED if before.get(k) != after.get(k))
            lines.append(f"~ update {new.name} ({old.sip_dispatch_rule_id}): {', '.join(changed)}")
            lines.append(f"    - {_summary(before)}")
            lines.append(f"    + {_summary(after)}")
        lines += [f"- delete {r.name} ({r.sip_dispatch_rule_id})" for r in self.delete]
        lines += [f"= unchanged {r.name} ({r.sip_dispatch_rule_id})" for r in self.unchanged]
        lines += [f"  (not ours, left alone: {line})" for line in self.foreign]
        lines += [f"  (skipped {line})" for line in self.skipped]
        lines.append(
            f"{len(self.create)} to create, {len(self.update)} to update, "
            f"{len(self.delete)} to delete, {len(self.unchanged)} unchanged"
        )
        return "\n".join(lines)


def _summary(view: Mapping[str, Any]) -> str:
    agents = view.get("room_config", {}).get("agents", [])
    names = ", ".join(a.get("agent_name", "?") for a in agents) or "(no agent)"
    parts = [f"agent {names}", f"numbers {view.get('numbers', []) or 'any'}"]
    if view.get("inbound_numbers"):
        parts.append(f"callers {view['inbound_numbers']}")
    parts.append(f"trunks {view.get('trunk_ids', []) or 'any'}")
    return "; ".join(parts)


def plan_sync(
    wanted: Sequence[api.SIPDispatchRuleInfo],
    existing: Sequence[api.SIPDispatchRuleInfo],
    *,
    skipped: Sequence[str] = (),
    scope: str | None = None,
) -> SyncPlan:
    """Compare the wanted rules with the server's; a server rule is ours only if its
    :data:`OWNER_ATTRIBUTE` is ``scope`` (default: the one the wanted rules carry, else
    ValueError), every other is listed in :attr:`SyncPlan.foreign` and never touched."""
    if scope is not None:
        scope = _checked_scope(scope)
    else:
        scopes = {r.attributes.get(OWNER_ATTRIBUTE) for r in wanted}
        if len(scopes) != 1 or None in scopes:
            raise ValueError("give the sync's scope: the wanted rules do not carry exactly one")
        scope = str(scopes.pop())
    ours: dict[str, api.SIPDispatchRuleInfo] = {}
    delete: list[api.SIPDispatchRuleInfo] = []
    foreign: list[str] = []
    for rule in sorted(existing, key=lambda r: (r.name, r.sip_dispatch_rule_id)):
        owner = rule.attributes.get(OWNER_ATTRIBUTE)
        label = f"{rule.name or '(no name)'} ({rule.sip_dispatch_rule_id})"
        if owner is None:
            foreign.append(f"{label}: no {OWNER_ATTRIBUTE} ownership marker")
        elif owner != scope:
            foreign.append(f"{label}: owned by another sync, scope {owner!r}")
        elif rule.name in ours:
            delete.append(rule)  # a duplicate, e.g. from an interrupted run
        else:
            ours[rule.name] = rule
    create, update, unchanged = [], [], []
    for rule in wanted:
        old = ours.pop(rule.name, None)
        if old is None:
            create.append(rule)
        elif _view(old) == _view(rule):
            unchanged.append(old)
        else:
            new = api.SIPDispatchRuleInfo()
            new.CopyFrom(rule)
            new.sip_dispatch_rule_id = old.sip_dispatch_rule_id
            update.append((old, new))
    delete.extend(ours.values())
    return SyncPlan(create, update, delete, unchanged, foreign, list(skipped), scope)


NO_SIP_HINT = (  # when the server answers a SIP call 'sip not connected (redis required)'
    "this livekit-server has no SIP API (SIP needs Redis): start `redis-server` and run "
    "`livekit-server --dev --redis-host 127.0.0.1:6379` (or add `redis:` to its config)"
)


async def _sip_call(
    action: str, call: Awaitable[T], *, hints: Mapping[str, str] | None = None
) -> T:
    """:func:`server_call` saying so when the server has no SIP (no Redis: HTTP 500
    ``sip not connected (redis required)``), its message never echoed."""

    async def checked() -> T:
        try:
            return await call
        except api.TwirpError as exc:
            if exc.code == "internal" and "redis required" in exc.message:
                raise DispatchError(f"could not {action}: {NO_SIP_HINT}") from None
            raise

    return await server_call(action, checked(), hints=hints)


async def list_dispatch_rules(lkapi: SipClient) -> list[api.SIPDispatchRuleInfo]:
    """Every dispatch rule on the server (DispatchError: refused or unreachable)."""
    response = await _sip_call(
        "list the SIP dispatch rules",
        lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest()),
    )
    return list(response.items)


_CLAIMED = {
    "invalid_argument": "another dispatch rule on the same trunk already claims one of its "
    "numbers (same trunk, called number, caller and PIN); remove that rule or change the "
    "routing rules",
}


async def apply_plan(lkapi: SipClient, plan: SyncPlan) -> None:
    """Carry out a plan: deletions, updates, then creations (so numbers can move).
    DispatchError when the server refuses a change (running sync again finishes the job)."""
    sip = lkapi.sip
    for rule in plan.delete:
        request = api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
        await _sip_call(
            f"delete the SIP dispatch rule {rule.name!r}", sip.delete_dispatch_rule(request)
        )
    for _, new in plan.update:
        await _sip_call(
            f"update the SIP dispatch rule {new.name!r}",
            sip.update_dispatch_rule(new.sip_dispatch_rule_id, new),
            hints=_CLAIMED,
        )
    for rule in plan.create:
        await _sip_call(
            f"create the SIP dispatch rule {rule.name!r}",
            sip.create_dispatch_rule(api.CreateSIPDispatchRuleRequest(dispatch_rule=rule)),
            hints=_CLAIMED,
        )
