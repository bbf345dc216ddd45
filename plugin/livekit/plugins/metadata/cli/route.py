"""``lk-metadata route``: which agent a rules file picks for some metadata and attributes."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import MetadataError
from ._common import RulesFile, bad_parameter, exit_on_errors, opt, read_json_flag

__all__ = ["route_command"]


def route_command(
    rules: RulesFile,
    metadata: Annotated[
        str, opt("--metadata -m", "JSON", "Metadata to route: a JSON object or @file.")
    ],
    explain: Annotated[
        bool, opt("--explain", None, "Show every rule and why it matched or not.")
    ] = False,
    attributes: Annotated[
        str | None,
        opt(
            "--attributes",
            "JSON",
            "Participant attributes for when_attributes: a JSON object of strings or @file.",
        ),
    ] = None,
) -> None:
    """Show which agent the rules pick for some metadata (and participant attributes)."""
    from ..codec import validate_attributes
    from ..routing.formatting import format_explain, format_route
    from ..routing.router import MetadataRouter

    md = read_json_flag(metadata, "--metadata") or {}
    attrs = read_json_flag(attributes, "--attributes")
    if attrs is not None:
        try:
            attrs = validate_attributes(attrs, allow_reserved=True)
        except MetadataError as exc:
            raise bad_parameter("--attributes", exc.message) from None
    with exit_on_errors():
        router = MetadataRouter.from_file(rules)
        if explain:  # the trace first: most useful exactly when nothing matches
            typer.echo(format_explain(router.explain(md, attributes=attrs)))
        typer.echo(format_route(router.route(md, attributes=attrs)))
