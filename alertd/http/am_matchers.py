"""Alertmanager's matchers, in and out of alertd's own form (`value`, `~re`, `!v`, `!~re`).

Two shapes cross the API v2: matcher objects `{name, value, isRegex, isEqual}`
(silences) and matcher text `name=~"value"` (the `filter` query parameter,
as amtool sends it). Both become alertd matchers, so one matching code
(`alertd.matchers`) decides everywhere.
"""

from __future__ import annotations

import re

from alertd.matchers import Matcher, parse_matcher
from alertd.settings import LABEL_RE

# name, operator, value (quoted or bare), as Alertmanager's parser reads them
_TEXT = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(.*?))\s*$'
)
_UNESCAPE = re.compile(r"\\(.)")


def spec_of(value: str, is_regex: bool, is_equal: bool) -> str:
    """A matcher object's value in alertd's form (which reads a leading `!` or `~`)."""
    neg = "" if is_equal else "!"
    if is_regex:
        return f"{neg}~{value}"
    if value.startswith(("!", "~")):
        return f"{neg}~{re.escape(value)}"  # a literal that would read as an operator
    return f"{neg}{value}"


def object_of(name: str, spec: str) -> dict[str, str | bool]:
    """alertd's (label, spec) as Alertmanager's matcher object."""
    m = parse_matcher(name, spec)
    return {"name": name, "value": m.value, "isRegex": m.regex is not None, "isEqual": not m.negate}


def parse_text(text: str) -> Matcher:
    """`name="value"`, `name!=value`, `name=~"re"`, `name!~re`; ValueError when it is not one."""
    inner = text.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    m = _TEXT.match(inner)
    if m is None or not LABEL_RE.match(m.group(1)):
        raise ValueError(f'{text[:100]!r} is not a matcher like name="value" or name=~"regex"')
    name, op = m.group(1), m.group(2)
    value = _UNESCAPE.sub(r"\1", m.group(3)) if m.group(3) is not None else m.group(4)
    return parse_matcher(name, spec_of(value, "~" in op, not op.startswith("!")))
