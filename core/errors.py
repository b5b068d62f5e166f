"""One way to say what is wrong with validated input."""

from __future__ import annotations

from pydantic import ValidationError


def error_location(loc: tuple[int | str, ...], option: bool = False) -> str:
    """`a.b.0` for a document field, `--max-batch-size` for a CLI option; `<root>` when empty."""
    if not loc:
        return "<root>"
    if option:
        return "--" + str(loc[0]).replace("_", "-")
    return ".".join(str(part) for part in loc)


def format_validation_error(exc: ValidationError, option: bool = False, first_only: bool = False) -> str:
    """`field: message` per problem, joined with `; ` (only the first with `first_only`)."""
    errors = exc.errors()[:1] if first_only else exc.errors()
    return "; ".join(f"{error_location(tuple(err['loc']), option)}: {err['msg']}" for err in errors)
