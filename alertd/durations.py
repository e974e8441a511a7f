"""Duration strings ("500ms", "30s", "5m", "1h30m", "1d") to timedelta and back."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
# timedelta's own bound (999999999 days), with a margin: a longer duration means nothing.
MAX_DURATION_S = 999_999_999 * 86400.0


def parse_duration(text: str) -> timedelta:
    """Parse a duration; raise ValueError with the accepted forms when it is not one."""
    raw = text.strip()
    if raw in ("0", ""):
        if raw == "":
            raise ValueError("empty duration")
        return timedelta(0)
    pos = 0
    total_s = 0.0
    for m in _PART.finditer(raw):
        if m.start() != pos:
            break
        total_s += float(m.group(1)) * _UNITS_S[m.group(2)]
        pos = m.end()
    if pos != len(raw) or pos == 0:
        raise ValueError(f"invalid duration {text!r} (use e.g. '500ms', '30s', '5m', '4h', '1d')")
    if not total_s <= MAX_DURATION_S:  # also catches inf from a float() of 400 digits
        raise ValueError(f"duration {text[:40]!r} is too long (at most 999999999d)")
    return timedelta(seconds=total_s)


def format_duration(delta: timedelta) -> str:
    """The shortest exact string parse_duration reads back."""
    ms = round(delta.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        n, ms = divmod(ms, size)
        if n:
            parts.append(f"{n}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)


def _to_timedelta(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"duration must be a string with a unit, like '{value}s'")
    return value


# A pydantic field type: config files write durations as strings with a unit.
Duration = Annotated[timedelta, BeforeValidator(_to_timedelta)]
