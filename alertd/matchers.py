"""Label matchers: `value`, `~regex`, `!value`, `!~regex`.

A missing label matches as the empty string, as in Alertmanager.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    negate: bool = False
    regex: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        hit = self.regex.fullmatch(actual) is not None if self.regex else actual == self.value
        return hit != self.negate

    def __str__(self) -> str:
        op = ("!" if self.negate else "") + ("~" if self.regex else "")
        return f"{self.name}={op}{self.value}"


def parse_matcher(name: str, spec: str) -> Matcher:
    """One matcher from its config form; ValueError on a bad regex."""
    negate = spec.startswith("!")
    body = spec[1:] if negate else spec
    if body.startswith("~"):
        pattern = body[1:]
        try:
            return Matcher(name, pattern, negate, re.compile(pattern))
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r} for {name}: {exc}") from None
    return Matcher(name, body, negate)


def parse_matchers(specs: Mapping[str, str]) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(name, str(spec)) for name, spec in specs.items())


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
