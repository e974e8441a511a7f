"""Safe `{field}` templates for rule annotations and channel subjects.

Only plain fields with an optional format spec: no attribute or index access,
so a template cannot reach into objects. An unknown field renders as empty
text (and is a warning at `alertd check`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

_FORMATTER = string.Formatter()


def template_fields(template: str) -> list[str]:
    """The field names a template uses; ValueError on bad syntax or attribute/index access."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template {template!r}: {exc}") from None
    names = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise ValueError(
                f"invalid field {{{name}}} in template: "
                "only plain names like {service} are allowed"
            )
        if spec and "{" in spec:
            raise ValueError(f"nested fields are not allowed in template field {{{name}}}")
        names.append(name)
    return names


def render_template(template: str, fields: Mapping[str, Any]) -> str:
    """Render; unknown fields are empty, a spec that does not fit the value shows the value."""
    out = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError:
        return template
    for literal, name, spec, conversion in parsed:
        out.append(literal)
        if name is None:
            continue
        value = fields.get(name, "")
        if value is None:
            value = ""
        if conversion == "r":
            value = repr(value)
        elif conversion in ("s", "a"):
            value = str(value)
        try:
            out.append(format(value, spec or ""))
        except (ValueError, TypeError):
            out.append(str(value))
    return "".join(out)
