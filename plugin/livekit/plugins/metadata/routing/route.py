"""What a routing decision returns: the :class:`Route`, and the trace of :meth:`explain`.

Plain values built by :mod:`.router`; a ``Route``'s ``repr`` shows metadata keys, never values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..codec import DEFAULT_MAX_METADATA_BYTES, serialize_metadata

__all__ = ["ConditionFailure", "Route", "RuleTrace"]


@dataclass(frozen=True, repr=False)
class Route:
    """The outcome of routing one metadata mapping.

    Attributes:
        agent: The agent chosen (the key for Agent factories); ``""`` when ``rejected``.
        agent_name: The LiveKit ``agent_name`` to dispatch to: the ``worker`` if set,
            else ``agent``; ``""`` when ``rejected``.
        rule: The matching rule's name; rule_index: its position (``None``: default/fallback).
        deployment: The LiveKit deployment to target (``None``: production).
        attributes: Dispatch attributes (read-only for routes built by a router).
        metadata: The job metadata: the routed mapping, reduced to ``job_metadata`` keys.
        rejected: The rules say this metadata must not get an agent.
        is_default: The rule set's ``default`` was used; is_fallback: a caller's fallback.
    """

    agent: str
    agent_name: str
    rule: str | None = None
    rule_index: int | None = None
    deployment: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    rejected: bool = False
    is_default: bool = False
    is_fallback: bool = False

    @property
    def label(self) -> str:
        """Where the decision came from: the rule name, ``rules[i]``, ``default`` or ``fallback``."""
        if self.is_fallback:
            return "fallback"
        if self.rule is not None:
            return self.rule
        if self.rule_index is not None:
            return f"rules[{self.rule_index}]"
        return "default"

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
    """The first condition of a rule that did not hold (see :meth:`MetadataRouter.explain`).

    ``path`` (dotted, or an attribute name), ``op``, ``expected`` (the rule's value as
    JSON), ``found`` (``"missing"`` or a JSON type, never the value) and ``source``
    (``"metadata"`` or ``"attributes"``).
    """

    path: str
    op: str
    expected: str
    found: str
    source: str = "metadata"

    def __str__(self) -> str:
        field = f"attribute {self.path}" if self.source == "attributes" else self.path
        return f"{field} {self.op} {self.expected} (found: {self.found})"


@dataclass(frozen=True)
class RuleTrace:
    """One line of :meth:`MetadataRouter.explain`: a rule (or the default) and its verdict.

    ``index`` (``None``: the default), ``name``, ``target`` (an agent or ``"reject"``),
    ``matched``, ``selected`` (this entry decided) and the first ``failed`` condition.
    """

    index: int | None
    name: str | None
    target: str
    matched: bool
    selected: bool
    failed: ConditionFailure | None = None

    @property
    def label(self) -> str:
        """``rules[i] name``, ``rules[i]`` or ``default``."""
        if self.index is None:
            return "default"
        return f"rules[{self.index}] {self.name}" if self.name else f"rules[{self.index}]"
