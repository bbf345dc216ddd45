"""Views of routes and ``explain()`` traces for the CLI and logs: agent names, rule labels,
attributes and metadata *keys*, never a metadata value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .route import Route, RuleTrace

__all__ = ["format_explain", "format_route", "route_summary"]


def route_summary(route: Route) -> dict[str, Any]:
    """A JSON-able summary of a route for CLIs and logs: metadata *keys* only."""
    return {
        "agent": route.agent or None,
        "agent_name": route.agent_name or None,
        "rule": route.label,
        "rule_index": route.rule_index,
        "rejected": route.rejected,
        "default": route.is_default,
        "deployment": route.deployment,
        "attributes": dict(route.attributes),
        "job_metadata_keys": sorted(route.metadata),
    }


def format_route(route: Route) -> str:
    """Human-readable route for ``lk-metadata route`` (job metadata keys, never values)."""
    if route.rejected:
        return f"reject       (by {route.label})"
    lines = [f"agent:       {route.agent}"]
    if route.agent_name != route.agent:
        lines.append(f"agent_name:  {route.agent_name}")
    lines.append(f"rule:        {route.label}")
    if route.deployment:
        lines.append(f"deployment:  {route.deployment}")
    if route.attributes:
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(route.attributes.items()))
        lines.append(f"attributes:  {attrs}")
    keys = ", ".join(sorted(route.metadata)) or "(none)"
    lines.append(f"job keys:    {keys}")
    return "\n".join(lines)


def format_explain(trace: Sequence[RuleTrace]) -> str:
    """Human-readable :meth:`MetadataRouter.explain` trace, one line per rule."""
    if not trace:
        return "(no rules)"
    width = max(len(t.label) for t in trace)
    twidth = max(len(t.target) for t in trace)
    lines = []
    for t in trace:
        if t.selected:
            verdict = "SELECTED" if t.index is not None else "SELECTED (no rule matched)"
        elif t.index is None:
            verdict = "not used"
        elif t.matched:
            verdict = "matches (shadowed by an earlier rule)"
        else:
            verdict = f"no: {t.failed}"
        lines.append(f"{t.label.ljust(width)}  -> {t.target.ljust(twidth)}  {verdict}")
    if not any(t.selected for t in trace):
        lines.append("no rule matched and there is no default: NoRouteMatched")
    return "\n".join(lines)
