"""Safe `{field}` templates for rule annotations and channel subjects.

Only plain fields with an optional format spec: no positional fields, no
attribute or index access, no conversions, so a template cannot reach into
objects. An unknown field renders as empty text (and is a warning at
`alertd check`); a spec that does not fit the value shows the value as is.

Sizes are bounded: a format spec's width and precision are at most
MAX_SPEC_NUMBER (refused at `alertd check` and load; `{value:>999999999}` would
make a 1 GB string), and every rendered text at most MAX_RENDERED characters,
cut with an ellipsis, so no template makes notifications or Redis entries huge.

Environment references (`${VAR}`) in rule templates are replaced when the file
is read, into every notification: `env_refs` finds them so the loader can refuse
those not listed in `[env] public` (an `${SMTP_PASSWORD}` would page everyone).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

_FORMATTER = string.Formatter()
MAX_SPEC_NUMBER = 1024
MAX_RENDERED = 4096
ELLIPSIS = "\u2026"
# [[fill]align][sign][z][#][0][width][grouping][.precision][type] (the format mini-language)
_SPEC = re.compile(
    r"^(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[_,]?(?:\.(?P<precision>\d+))?[a-zA-Z%]?$",
    re.DOTALL,
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-.*?)?\}")


def spec_too_big(spec: str) -> str | None:
    """Why a format spec would render too much text (None when it is within bounds)."""
    m = _SPEC.match(spec)
    if m is None:
        digits = [int(d) for d in re.findall(r"\d+", spec)]  # malformed: judge its numbers
        big = max(digits, default=0)
        return f"a number in it is {big}" if big > MAX_SPEC_NUMBER else None
    for part in ("width", "precision"):
        text = m[part]
        if text and int(text) > MAX_SPEC_NUMBER:
            return f"its {part} is {int(text)}"
    return None


def cap(text: str, limit: int = MAX_RENDERED) -> str:
    """`text` cut to `limit` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def env_refs(text: str) -> list[str]:
    """The environment variables `${VAR}` / `${VAR:-default}` in `text`, in order."""
    return [m[1] for m in _ENV_REF.finditer(text)]


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
        too_big = spec_too_big(spec) if spec else None
        if too_big:
            raise ValueError(
                f"template field {{{name}:{(spec or '')[:40]}}}: {too_big}; "
                f"width and precision are at most {MAX_SPEC_NUMBER}"
            )
        if name not in names:
            names.append(name)
    return names


def render_template(template: str, fields: Mapping[str, Any], limit: int = MAX_RENDERED) -> str:
    """Fill `{name}` fields by whole name only; never raises for a template that parses.

    At most `limit` characters come out (cut with an ellipsis), and a spec too big to
    render (one that escaped the check) shows the value as is.
    """
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError:
        return cap(template, limit)
    out: list[str] = []
    size = 0
    for literal, name, spec, _ in parsed:
        out.append(literal)
        size += len(literal)
        if name is not None:
            value = fields.get(name)
            if value is not None:
                text = _format(value, spec or "")
                out.append(text)
                size += len(text)
        if size > limit:
            break
    return cap("".join(out), limit)


def _format(value: Any, spec: str) -> str:
    if spec and spec_too_big(spec):
        return str(value)
    try:
        return format(value, spec)
    except (ValueError, TypeError):
        return str(value)
