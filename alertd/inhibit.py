"""Inhibition (`[[inhibit]]` in alertd.toml): a firing source alert mutes matching targets (pure).

Semantics follow Alertmanager: a label in `equal` that is missing on both sides
counts as equal (a missing label is the empty string); an alert never inhibits
itself; and when the target also matches the rule's source side, sources that
also match the target side are skipped, so two alerts can never mute each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from alertd.matchers import Matcher, matches_all, parse_matchers
from alertd.model import Alert
from alertd.settings import InhibitSettings


@dataclass(frozen=True)
class InhibitRule:
    """One `[[inhibit]]` entry with its matchers compiled."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def from_settings(cls, s: InhibitSettings) -> InhibitRule:
        return cls(parse_matchers(s.source), parse_matchers(s.target), tuple(s.equal))

    def equal_key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(name, "") for name in self.equal)


def _inhibits(rule: InhibitRule, source: Alert, target: Alert, two_sided: bool) -> bool:
    """Whether `source` (already known firing and matching rule.source) mutes `target`."""
    if source.fingerprint == target.fingerprint:
        return False
    if rule.equal_key(source.labels) != rule.equal_key(target.labels):
        return False
    return not (two_sided and matches_all(rule.target, source.labels))


def inhibited_by(target: Alert, firing: Iterable[Alert], rules: Sequence[InhibitRule]) -> list[str]:
    """Fingerprints (sorted, unique) of the firing alerts that inhibit `target`."""
    sources = [a for a in firing if a.state == "firing"]
    found: set[str] = set()
    for rule in rules:
        if not matches_all(rule.target, target.labels):
            continue
        two_sided = matches_all(rule.source, target.labels)
        for source in sources:
            if matches_all(rule.source, source.labels) and _inhibits(
                rule, source, target, two_sided
            ):
                found.add(source.fingerprint)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class _Source:
    fingerprint: str
    matches_target: bool  # also matches the rule's target side (see the module docstring)


class Inhibitor:
    """Precomputes, for one flush, an index of firing sources per rule.

    Checking N targets against M firing alerts is then not N*M.
    """

    def __init__(self, rules: Sequence[InhibitRule], firing: Iterable[Alert]) -> None:
        self._rules = tuple(rules)
        sources = [a for a in firing if a.state == "firing"]
        # Per rule: the equal-label values -> the firing sources carrying them.
        self._index: list[dict[tuple[str, ...], list[_Source]]] = []
        for rule in self._rules:
            by_key: dict[tuple[str, ...], list[_Source]] = defaultdict(list)
            for alert in sources:
                if matches_all(rule.source, alert.labels):
                    by_key[rule.equal_key(alert.labels)].append(
                        _Source(alert.fingerprint, matches_all(rule.target, alert.labels))
                    )
            self._index.append(dict(by_key))

    def inhibited_by(self, target: Alert) -> list[str]:
        """The same answer as the module's `inhibited_by`, from the index."""
        found: set[str] = set()
        for rule, by_key in zip(self._rules, self._index, strict=True):
            if not by_key or not matches_all(rule.target, target.labels):
                continue
            two_sided = matches_all(rule.source, target.labels)
            for source in by_key.get(rule.equal_key(target.labels), ()):
                if source.fingerprint != target.fingerprint and not (
                    two_sided and source.matches_target
                ):
                    found.add(source.fingerprint)
        return sorted(found)
