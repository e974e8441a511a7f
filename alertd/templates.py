"""Safe `{field}` templates for rule annotations and channel subjects.

Only plain fields with an optional format spec: no positional fields, no
attribute or index access, no conversions, so a template cannot reach into
objects. An unknown field renders as empty text (and is a warning at
`alertd check`); a spec that does not fit the value shows the value as is.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

_FORMATTER = string.Formatter()


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order, each once.

    ValueError when it does not parse or uses anything but plain `{name}` / `{name:spec}`.
    """
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template {template!r}: {exc}") from None
    names: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(
                f"template field {{{name}}} is not allowed: use a plain name "
                "(no positional fields, attribute or index access)"
            )
        if conversion:
            raise ValueError(f"template field {{{name}!{conversion}}}: conversions are not allowed")
        if spec and "{" in spec:
            raise ValueError(f"template field {{{name}}}: nested fields in a format spec")
        if name not in names:
            names.append(name)
    return names


def render_template(template: str, fields: Mapping[str, Any]) -> str:
    """Fill `{name}` fields by whole name only; never raises for a template that parses."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError:
        return template
    out: list[str] = []
    for literal, name, spec, _ in parsed:
        out.append(literal)
        if name is None:
            continue
        value = fields.get(name)
        if value is None:
            continue
        try:
            out.append(format(value, spec or ""))
        except (ValueError, TypeError):
            out.append(str(value))
    return "".join(out)
