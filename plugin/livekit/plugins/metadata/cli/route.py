"""``lk-metadata route``: which agent a rules file picks for some metadata and attributes."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import MetadataError
from ._common import RulesFile, exit_on_errors, read_json_flag

__all__ = ["route_command"]


def route_command(
    rules: RulesFile,
    metadata: Annotated[
        str,
        typer.Option(
            "--metadata", "-m", metavar="JSON", help="Metadata to route: a JSON object or @file."
        ),
    ],
    explain: Annotated[
        bool, typer.Option("--explain", help="Show every rule and why it matched or not.")
    ] = False,
    attributes: Annotated[
        str | None,
        typer.Option(
            "--attributes",
            metavar="JSON",
            help="Participant attributes for when_attributes: a JSON object of strings or @file.",
        ),
    ] = None,
) -> None:
    """Show which agent the rules pick for some metadata (and participant attributes)."""
    md = read_json_flag(metadata, "--metadata")
    attrs = read_json_flag(attributes, "--attributes")
    if attrs is not None:
        try:
            from ..codec import validate_attributes

            attrs = validate_attributes(attrs, allow_reserved=True)
        except MetadataError as exc:
            raise typer.BadParameter(exc.message, param_hint="'--attributes'") from None
    from ..routing.formatting import format_explain, format_route
    from ..routing.router import MetadataRouter

    with exit_on_errors():
        router = MetadataRouter.from_file(rules)
        if explain:
            # The trace first: it is most useful exactly when nothing matches.
            typer.echo(format_explain(router.explain(md or {}, attributes=attrs)))
        route = router.route(md or {}, attributes=attrs)
        typer.echo(format_route(route))
