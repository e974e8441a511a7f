"""Recurring time windows (`[[time_intervals]]` in alertd.toml) for a route's `mute_during` (pure).

An interval holds when the local weekday (in its timezone) is one of `weekdays`
and the local minute of the day falls in one of `times`; an empty list means
any day, or all day.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from alertd.settings import WEEKDAYS, TimeIntervalSettings

_TIME_RANGE = re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*$")
_MINUTES_PER_DAY = 24 * 60


def _weekday(name: str) -> int:
    try:
        return WEEKDAYS.index(name.strip().lower())
    except ValueError:
        raise ValueError(f"unknown weekday {name!r}") from None


def parse_weekdays(items: Iterable[str]) -> frozenset[int]:
    """Names and inclusive ranges ("monday:friday") to weekday numbers, Monday = 0.

    A range may wrap around the week: "saturday:monday" is Saturday, Sunday, Monday.
    """
    days: set[int] = set()
    for item in items:
        first, sep, last = item.partition(":")
        start = _weekday(first)
        end = _weekday(last) if sep else start
        span = (end - start) % 7
        days.update((start + i) % 7 for i in range(span + 1))
    return frozenset(days)


def parse_time_range(item: str) -> tuple[int, int]:
    """Parse "HH:MM-HH:MM" to (start, end) minutes of the day; end exclusive, up to 24:00."""
    m = _TIME_RANGE.match(item)
    if not m or int(m[2]) >= 60 or int(m[4]) >= 60:
        raise ValueError(f"invalid time range {item!r} (use 'HH:MM-HH:MM')")
    start = int(m[1]) * 60 + int(m[2])
    end = int(m[3]) * 60 + int(m[4])
    if not 0 <= start < end <= _MINUTES_PER_DAY:
        raise ValueError(f"invalid time range {item!r} (start must be before end, end <= 24:00)")
    return start, end


class TimeInterval:
    """One named recurring window, in its own timezone."""

    def __init__(self, s: TimeIntervalSettings) -> None:
        self.name: str = s.name
        self.zone = ZoneInfo(s.timezone)
        self.weekdays = parse_weekdays(s.weekdays)
        self.times = tuple(parse_time_range(t) for t in s.times)

    def contains(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, tz=self.zone)
        if self.weekdays and local.weekday() not in self.weekdays:
            return False
        if not self.times:
            return True
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.times)

    def __repr__(self) -> str:
        return f"TimeInterval({self.name!r})"


def muted(names: Iterable[str], intervals: Mapping[str, TimeInterval], now: float) -> bool:
    """Whether any of the named intervals holds at `now`; unknown names are ignored."""
    return any(name in intervals and intervals[name].contains(now) for name in names)
