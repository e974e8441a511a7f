"""Label matchers: `value`, `~regex`, `!value`, `!~regex`.

A missing label matches as the empty string, as in Alertmanager. Regular
expressions are compiled with RE2, as Alertmanager's Go regexp is: matching
takes time linear in the label value, so no pattern an operator or an API
client writes (`(a+)+$`) can stall the event loop. RE2 has no backreferences
or lookaround; such a pattern is refused with an error naming its matcher.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import re2

# RE2 would print its parse errors to stderr itself; they reach the operator as ValueErrors.
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
# Memory for one compiled program: RE2's default (8 MiB) is ample for label patterns, and
# a bound keeps a pattern like `(x{1000}){1000}` from taking more.
_OPTIONS.max_mem = 8 << 20


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    negate: bool = False
    regex: Any = None  # a compiled RE2 pattern (google-re2 ships no type hints)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        hit = self.regex.fullmatch(actual) is not None if self.regex else actual == self.value
        return hit != self.negate

    def __str__(self) -> str:
        op = ("!" if self.negate else "") + ("~" if self.regex else "")
        return f"{self.name}={op}{self.value}"


def compile_regex(pattern: str) -> Any:
    """`pattern` compiled with RE2; ValueError with RE2's reason when it cannot be."""
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"{reason} (alertd uses RE2 syntax, as Alertmanager does: "
            "no backreferences or lookaround)"
        ) from None


def parse_matcher(name: str, spec: str) -> Matcher:
    """One matcher from its config form; ValueError naming the matcher on a bad regex."""
    negate = spec.startswith("!")
    body = spec[1:] if negate else spec
    if body.startswith("~"):
        pattern = body[1:]
        try:
            return Matcher(name, pattern, negate, compile_regex(pattern))
        except ValueError as exc:
            raise ValueError(f"invalid regular expression {pattern!r} for {name}: {exc}") from None
    return Matcher(name, body, negate)


def parse_matchers(specs: Mapping[str, str]) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(name, str(spec)) for name, spec in specs.items())


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
