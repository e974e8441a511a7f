"""The flush stages on their own: who is told what, and when nothing is sent."""

from __future__ import annotations

from alertd.model import NotifyReason
from alertd.notify.stages import NflogEntry, Selection, build_notification, firing_key, select
from tests.test_channel_slack import T0, make_alert

A = make_alert(0)
B = make_alert(1)
A_RESOLVED = make_alert(0, state="resolved")
PENDING = make_alert(2, state="pending")


def told(*alerts: object) -> NflogEntry:
    return NflogEntry(frozenset(firing_key(a) for a in alerts), frozenset(), T0)  # type: ignore[arg-type]


class TestSelect:
    """Silenced or inhibited alerts are not told, unless receivers already heard of them."""

    def test_unmuted_firing_and_resolved_are_selected_pending_never(self) -> None:
        chosen = select([A, B, PENDING], set(), None, keep_told=True)
        assert ([A, B], [], frozenset()) == (chosen.firing, chosen.resolved, chosen.carried)

    def test_muted_and_never_told_is_dropped(self) -> None:
        chosen = select([A, B], {A.fingerprint}, told(B), keep_told=True)
        assert ([B], frozenset()) == (chosen.firing, chosen.carried)

    def test_muted_after_being_told_is_carried_not_news(self) -> None:
        chosen = select([A, B], {A.fingerprint}, told(A, B), keep_told=True)
        assert [B] == chosen.firing
        assert frozenset({firing_key(A)}) == chosen.carried

    def test_a_told_alert_resolving_while_muted_is_still_resolved(self) -> None:
        chosen = select([A_RESOLVED], {A.fingerprint}, told(A), keep_told=True)
        assert [A_RESOLVED] == chosen.resolved

    def test_without_resolve_silenced_muted_means_silent(self) -> None:
        chosen = select([A, A_RESOLVED], {A.fingerprint}, told(A), keep_told=False)
        assert Selection() == chosen

    def test_log_entry_remembers_what_was_told(self) -> None:
        chosen = select([B, A_RESOLVED], set(), told(A), keep_told=True)
        entry = chosen.log_entry(T0 + 5)
        assert frozenset({firing_key(B)}) == entry.firing
        assert frozenset({A.fingerprint}) == entry.resolved
        assert T0 + 5 == entry.ts


class TestBuildNotification:
    """The queued notification carries the group as it stands, firing first."""

    def test_firing_before_resolved(self) -> None:
        chosen = Selection([B], [A_RESOLVED])
        n = build_notification(
            "hook", {"alertname": "X"}, "k", chosen, NotifyReason.CHANGED, True, T0
        )
        assert n is not None
        assert (["firing", "resolved"], "firing") == ([a.state for a in n.alerts], n.status)
        assert ("hook", "k", NotifyReason.CHANGED) == (n.receiver, n.group_key, n.reason)

    def test_only_resolved_is_a_resolved_notification(self) -> None:
        n = build_notification(
            "hook", {}, "k", Selection([], [A_RESOLVED]), NotifyReason.RESOLVED, True, T0
        )
        assert n is not None and "resolved" == n.status

    def test_nothing_to_say_when_resolved_are_not_sent(self) -> None:
        chosen = Selection([], [A_RESOLVED])
        assert None is build_notification("hook", {}, "k", chosen, NotifyReason.RESOLVED, False, T0)
