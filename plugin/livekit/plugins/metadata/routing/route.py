"""What a routing decision returns: the :class:`Route` (whose ``repr`` shows metadata keys,
never values) and the trace of ``MetadataRouter.explain``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..codec import DEFAULT_MAX_METADATA_BYTES, serialize_metadata

__all__ = ["ConditionFailure", "Route", "RuleTrace"]


@dataclass(frozen=True, repr=False)
class Route:
    """The outcome of routing one metadata mapping."""

    agent: str  # the agent chosen (the key for Agent factories); "" when rejected
    agent_name: str  # the LiveKit agent_name to dispatch to: the worker, else agent; "" rejected
    rule: str | None = None  # the matching rule's name
    rule_index: int | None = None  # its position (None: the default or a caller's fallback)
    deployment: str | None = None  # the LiveKit deployment to target (None: production)
    attributes: Mapping[str, str] = field(default_factory=dict)  # dispatch attributes
    metadata: dict[str, Any] = field(default_factory=dict)  # reduced to job_metadata keys
    rejected: bool = False  # the rules say this metadata must not get an agent
    is_default: bool = False  # the rule set's default was used
    is_fallback: bool = False  # a caller's fallback was used

    @property
    def label(self) -> str:
        """Where the decision came from: the rule name, ``rules[i]``, ``default`` or ``fallback``."""
        if self.is_fallback:
            return "fallback"
        if self.rule is not None:
            return self.rule
        return "default" if self.rule_index is None else f"rules[{self.rule_index}]"

    def metadata_json(self, *, max_bytes: int = DEFAULT_MAX_METADATA_BYTES) -> str:
        """The job metadata serialized compactly for a LiveKit dispatch (``""`` if empty)."""
        return serialize_metadata(self.metadata, max_bytes=max_bytes) if self.metadata else ""

    def __repr__(self) -> str:
        target = "reject" if self.rejected else f"agent={self.agent!r}"
        if self.agent_name != self.agent:
            target += f", agent_name={self.agent_name!r}"
        return (
            f"Route({target}, rule={self.label!r}, deployment={self.deployment!r}, "
            f"attributes={dict(self.attributes)!r}, metadata_keys={sorted(self.metadata)!r})"
        )


@dataclass(frozen=True)
class ConditionFailure:
    """The first condition of a rule that did not hold (see ``MetadataRouter.explain``)."""

    path: str  # dotted, or an attribute name
    op: str
    expected: str  # the rule's value as JSON
    found: str  # "missing" or a JSON type, never the value
    source: str = "metadata"  # or "attributes"

    def __str__(self) -> str:
        field = f"attribute {self.path}" if self.source == "attributes" else self.path
        return f"{field} {self.op} {self.expected} (found: {self.found})"


@dataclass(frozen=True)
class RuleTrace:
    """One line of ``MetadataRouter.explain``: a rule (or the default) and its verdict."""

    index: int | None  # None: the default
    name: str | None
    target: str  # an agent or "reject"
    matched: bool
    selected: bool  # this entry decided
    failed: ConditionFailure | None = None  # the first condition that did not hold

    @property
    def label(self) -> str:
        """``rules[i] name``, ``rules[i]`` or ``default``."""
        if self.index is None:
            return "default"
        return f"rules[{self.index}] {self.name}" if self.name else f"rules[{self.index}]"
