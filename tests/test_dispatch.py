"""Grouping, dedup, silences, inhibition and mute windows, on a clock the test moves.

The Dispatcher runs against the real Redis; the test files alert changes the
way the rule engine does (AlertStore's compare-and-set) and calls flush_due()
itself, then reads what landed in the outbox.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from alertd.alerts import AlertStore
from alertd.model import Alert, Notification, NotifyReason, fingerprint
from alertd.notify.dispatcher import Dispatcher, NflogEntry, Runtime, decide, firing_key
from alertd.notify.outbox import Outbox
from alertd.notify.pagehold import PageHold
from alertd.settings import Config, load_config
from alertd.silences import Silence, SilenceStore
from alertd.storage.partitions import Partitions

PREFIX = "t:"
T0 = 1_795_608_000.0  # Wednesday 2026-11-25T12:00:00Z
SATURDAY = 1_795_867_200.0  # 2026-11-28T12:00:00Z
MONDAY = 1_796_029_200.0  # 2026-11-30T09:00:00Z
HOUR_S = 3600.0

CONFIG = """
[redis]
key_prefix = "{prefix}"
[notify]
group_wait = "5s"
group_interval = "10s"
repeat_interval = "1h"
{notify}
[channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
[channels.pager]
type = "webhook"
url = "http://127.0.0.1:9/pager"
{extra}
"""

ROUTE_HOOK = '[[routes]]\nchannels = ["hook"]\n'


def write_config(directory: Path, extra: str = ROUTE_HOOK, notify: str = "") -> Config:
    """A config with channels `hook` and `pager` (never delivered to: we read the outbox)."""
    path = directory / "alertd.toml"
    path.write_text(CONFIG.format(prefix=PREFIX, notify=notify, extra=extra))
    return load_config(path, env={})


class Harness:
    """Dispatchers on the real Redis, alert changes filed as the rule engine files them."""

    def __init__(self, redis: aioredis.Redis, config: Config) -> None:
        self.redis = redis
        self.now = T0
        self.rt = Runtime.build(config)
        self.store = AlertStore(Partitions.single(redis, PREFIX))
        self.outbox = Outbox(Partitions.single(redis, PREFIX))
        self.silences = SilenceStore(redis, PREFIX)
        self.dispatcher = self.replica()
        self._last_id: dict[str, str] = {}

    def replica(self, **kwargs: Any) -> Dispatcher:
        """Another daemon's dispatcher: same Redis, same clock."""
        return Dispatcher(
            self.store, self.outbox, self.silences, lambda: self.rt, lambda: self.now, **kwargs
        )

    async def get(self, fp: str) -> tuple[Alert | None, bytes]:
        raw = (await self.store.get_raw([fp]))[0]
        return (Alert.from_dict(orjson.loads(raw)) if raw else None), raw or b""

    async def write(
        self, fp: str, new: Alert | None, notify: bool, immediate: bool = False
    ) -> None:
        _, expected = await self.get(fp)
        targets = self.rt.router.groups(new) if notify and new is not None else []
        args = self.store.apply_args(fp, expected, new, targets, immediate, self.now)
        assert [True] == await self.store.apply_many([args])

    async def fire(self, severity: str = "warning", **labels: str) -> Alert:
        """The alert with these labels fires now (or changes to `severity`)."""
        full = {"alertname": "DiskFull", **labels, "severity": severity}
        fp = fingerprint(full)
        prev, _ = await self.get(fp)
        if prev is not None and prev.state == "firing":
            alert = replace(prev, labels=full, severity=severity, updated_at=self.now)
            await self.write(fp, alert, notify=True, immediate=True)
            return alert
        alert = Alert(
            fp,
            full["alertname"],
            full,
            {"summary": f"{labels} is full"},
            "firing",
            severity,
            1.0,
            starts_at=self.now,
            updated_at=self.now,
        )
        await self.write(fp, alert, notify=True)
        return alert

    async def resolve(self, alert: Alert) -> Alert:
        current, _ = await self.get(alert.fingerprint)
        assert current is not None
        resolved = replace(current, state="resolved", ends_at=self.now, updated_at=self.now)
        await self.write(alert.fingerprint, resolved, notify=True)
        return resolved

    async def go_pending(self, alert: Alert) -> Alert:
        """The condition holds again, with `for` running (not filed into groups)."""
        pending = replace(alert, state="pending", starts_at=self.now, ends_at=None)
        await self.write(alert.fingerprint, pending, notify=False)
        return pending

    async def silence(self, matchers: dict[str, str], start: float, end: float) -> str:
        return await self.silences.create(
            Silence(f"S{start}", matchers, start, end, "alice", "maintenance", start)
        )

    async def flush(self, at: float, dispatcher: Dispatcher | None = None) -> list[Notification]:
        """Move the clock to `at`, flush what is due, return what was queued."""
        self.now = at
        await (dispatcher or self.dispatcher).flush_due()
        return await self.queued()

    async def queued(self) -> list[Notification]:
        """Notifications added to any outbox (either lane) since the last call."""
        out = []
        for channel, urgent in itertools.product(sorted(self.rt.config.channels), (True, False)):
            stream = self.outbox.stream(channel, urgent)
            last = self._last_id.get(stream)
            rows = await self.redis.xrange(stream, min=f"({last}" if last else "-")
            for eid, fields in rows:
                self._last_id[stream] = eid.decode()
                out.append(Notification.from_dict(orjson.loads(fields[b"n"])))
        return out


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path)


@pytest.fixture
async def h(redis: aioredis.Redis, config: Config) -> Harness:
    return Harness(redis, config)


def services(n: Notification) -> list[tuple[str, str]]:
    """(service, status) per alert, in the notification's order."""
    return [(a.labels.get("service", ""), a.state) for a in n.alerts]


def summary(ns: list[Notification]) -> list[tuple[str, str, str, int]]:
    return [(n.receiver, n.reason.value, n.status, len(n.alerts)) for n in ns]


class TestGroupWait:
    """A group's first alerts arrive as one notification, group_wait after the first."""

    async def test_alerts_within_group_wait_are_batched(self, h: Harness) -> None:
        await h.fire(service="a")
        h.now = T0 + 1
        await h.fire(service="b")
        h.now = T0 + 2
        await h.fire(service="c")
        assert [] == await h.flush(T0 + 4.9)
        sent = await h.flush(T0 + 5)
        assert [("hook", "first", "firing", 3)] == summary(sent)
        assert ["a", "b", "c"] == sorted(s for s, _ in services(sent[0]))
        assert {"alertname": "DiskFull"} == sent[0].group_labels
        assert '{}:{alertname="DiskFull"}' == sent[0].group_key

    async def test_next_wake_is_when_the_group_is_due(self, h: Harness) -> None:
        await h.fire(service="a")
        h.now = T0 + 4.5
        assert 0.5 == pytest.approx(await h.dispatcher.flush_due())

    async def test_groups_are_flushed_separately(self, h: Harness) -> None:
        await h.fire(service="a")
        await h.fire(service="b", alertname="CpuHigh")
        sent = await h.flush(T0 + 5)
        assert ["CpuHigh", "DiskFull"] == sorted(n.group_labels["alertname"] for n in sent)


class TestUrgentFlush:
    """A critical alert's groups are flushed on their own, beside a storm's rounds."""

    async def test_it_takes_only_the_groups_a_page_fired_in(
        self, redis: aioredis.Redis, tmp_path: Path
    ) -> None:
        by_service = ROUTE_HOOK + 'group_by = ["service"]\n'
        h = Harness(redis, write_config(tmp_path, by_service))
        for i in range(5):
            await h.fire(service=f"web{i}")
        await h.fire("critical", service="db")
        h.now = T0 + 5
        assert 1 == await h.dispatcher.flush_urgent()
        sent = await h.queued()
        assert [["db"]] == [[a.labels["service"] for a in n.alerts] for n in sent]
        assert sent[0].urgent
        assert 5 == len(await h.flush(T0 + 5))  # the rest are the next round's
        assert 0 == await h.dispatcher.flush_urgent()

    async def test_a_round_waits_while_a_page_is_on_its_way(self, h: Harness) -> None:
        await h.fire(service="a")
        hold = h.dispatcher.page_hold = PageHold(hold_s=30.0)
        hold.coming()
        h.now = T0 + 5
        flushing = asyncio.create_task(h.dispatcher.flush_due())
        await asyncio.wait({flushing}, timeout=0.2)
        assert [] == await h.queued()
        hold.delivered()
        await asyncio.wait_for(flushing, timeout=5)
        assert 1 == len(await h.queued())


class TestGroupInterval:
    """After a group was notified, its changes wait for group_interval."""

    async def test_new_alert_waits_for_group_interval(self, h: Harness) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        h.now = T0 + 6
        await h.fire(service="b")
        assert [] == await h.flush(T0 + 14.9)
        sent = await h.flush(T0 + 15)
        assert [("hook", "changed", "firing", 2)] == summary(sent)

    async def test_unchanged_group_is_not_resent(self, h: Harness) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        for i in range(1, 6):
            assert [] == await h.flush(T0 + 5 + 10 * i)


class TestRepeatInterval:
    """An unchanged firing group is sent again every repeat_interval."""

    async def test_repeat_after_repeat_interval(self, h: Harness) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        assert [] == await h.flush(T0 + 5 + HOUR_S - 10)
        sent = await h.flush(T0 + 5 + HOUR_S)
        assert [("hook", "repeat", "firing", 1)] == summary(sent)
        assert [] == await h.flush(T0 + 15 + HOUR_S)


class TestResolved:
    """A resolved alert is notified once, then forgotten."""

    async def test_resolution_is_notified_then_forgotten(self, h: Harness) -> None:
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        h.now = T0 + 7
        await h.resolve(a)
        sent = await h.flush(T0 + 15)
        assert [("hook", "resolved", "resolved", 1)] == summary(sent)
        assert [("a", "resolved")] == services(sent[0])
        assert T0 + 7 == sent[0].alerts[0].ends_at
        assert [] == await h.store.all()
        assert [] == await h.redis.keys(f"{PREFIX}g*")  # no group, no schedule
        assert [] == await h.redis.keys(f"{PREFIX}ag:*")

    async def test_group_carries_firing_and_newly_resolved(self, h: Harness) -> None:
        a = await h.fire(service="a")
        await h.fire(service="b")
        await h.flush(T0 + 5)
        await h.resolve(a)
        sent = await h.flush(T0 + 15)
        assert [("hook", "resolved", "firing", 2)] == summary(sent)
        assert [("b", "firing"), ("a", "resolved")] == services(sent[0])
        assert [] == await h.flush(T0 + 25)

    async def test_resolved_before_first_notification_is_not_sent(self, h: Harness) -> None:
        a = await h.fire(service="a")
        h.now = T0 + 1
        await h.resolve(a)
        assert [] == await h.flush(T0 + 5)
        assert [] == await h.store.all()

    async def test_refire_after_resolution_is_first_again(self, h: Harness) -> None:
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.resolve(a)
        await h.flush(T0 + 15)
        h.now = T0 + 100
        await h.fire(service="a")
        sent = await h.flush(T0 + 105)
        assert [("hook", "first", "firing", 1)] == summary(sent)

    async def test_send_resolved_false_forgets_quietly(self, tmp_path: Path, redis: Any) -> None:
        route = '[[routes]]\nchannels = ["hook"]\nsend_resolved = false\n'
        h = Harness(redis, write_config(tmp_path, route))
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.resolve(a)
        assert [] == await h.flush(T0 + 15)
        assert [] == await h.store.all()
        h.now = T0 + 20
        await h.fire(service="a")
        assert [("hook", "first", "firing", 1)] == summary(await h.flush(T0 + 25))


class TestSeverityChange:
    """A change of severity inside a group is notified at once, with the whole group."""

    async def test_severity_change_skips_group_interval(self, h: Harness) -> None:
        await h.fire(service="a")
        await h.fire(service="b")
        await h.flush(T0 + 5)
        h.now = T0 + 6
        await h.fire("critical", service="a")
        sent = await h.flush(T0 + 6)
        assert [("hook", "severity_changed", "firing", 2)] == summary(sent)
        severities = {a.labels["service"]: a.severity for a in sent[0].alerts}
        assert {"a": "critical", "b": "warning"} == severities
        assert [] == await h.flush(T0 + 16)


class TestSilences:
    """Silenced alerts are tracked but not notified; when the silence ends they are."""

    async def test_silenced_alert_is_left_out_of_its_group(self, h: Harness) -> None:
        await h.silence({"service": "a"}, T0 - 1, T0 + HOUR_S)
        await h.fire(service="a")
        await h.fire(service="b")
        sent = await h.flush(T0 + 5)
        assert [("b", "firing")] == services(sent[0])

    async def test_fully_silenced_group_sends_nothing_until_expiry(self, h: Harness) -> None:
        await h.silence({"alertname": "DiskFull"}, T0 - 1, T0 + 30)
        await h.fire(service="a")
        assert [] == await h.flush(T0 + 5)
        assert [] == await h.flush(T0 + 25)
        assert 1 == len(await h.store.all())  # still tracked
        sent = await h.flush(T0 + 35)
        assert [("hook", "first", "firing", 1)] == summary(sent)

    async def test_silence_starting_later_mutes_from_then(self, h: Harness) -> None:
        await h.silence({"service": "a"}, T0 + 20, T0 + HOUR_S)
        await h.fire(service="a")
        assert 1 == len(await h.flush(T0 + 5))
        h.now = T0 + 21
        await h.fire("critical", service="a")
        assert [] == await h.flush(T0 + 21)


class TestResolveSilenced:
    """An alert told firing and then silenced still gets its resolution (resolve_silenced)."""

    async def test_resolution_of_silenced_alert_is_sent(self, h: Harness) -> None:
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.silence({"service": "a"}, T0 + 6, T0 + HOUR_S)
        assert [] == await h.flush(T0 + 15)
        await h.resolve(a)
        sent = await h.flush(T0 + 25)
        assert [("hook", "resolved", "resolved", 1)] == summary(sent)

    async def test_silence_ending_on_a_told_alert_does_not_resend(self, h: Harness) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.silence({"service": "a"}, T0 + 6, T0 + 20)
        assert [] == await h.flush(T0 + 15)
        assert [] == await h.flush(T0 + 25)

    async def test_never_told_silenced_resolution_is_not_sent(self, h: Harness) -> None:
        await h.silence({"service": "a"}, T0 - 1, T0 + HOUR_S)
        a = await h.fire(service="a")
        await h.fire(service="b")
        await h.flush(T0 + 5)
        await h.resolve(a)
        assert [] == await h.flush(T0 + 15)

    async def test_off_drops_the_resolution(self, tmp_path: Path, redis: Any) -> None:
        h = Harness(redis, write_config(tmp_path, notify="resolve_silenced = false"))
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.silence({"service": "a"}, T0 + 6, T0 + HOUR_S)
        await h.flush(T0 + 15)
        await h.resolve(a)
        assert [] == await h.flush(T0 + 25)


INHIBIT = (
    ROUTE_HOOK
    + '[[inhibit]]\nsource = { severity = "critical" }\ntarget = { severity = "warning" }\n'
    + 'equal = ["service"]\n'
)


class TestInhibition:
    """A firing source alert mutes its targets; when it resolves they are notified."""

    async def test_target_muted_while_source_fires(self, tmp_path: Path, redis: Any) -> None:
        h = Harness(redis, write_config(tmp_path, INHIBIT))
        down = await h.fire("critical", alertname="ServiceDown", service="api")
        await h.fire("warning", alertname="LatencyHigh", service="api")
        await h.fire("warning", alertname="LatencyHigh", service="web")
        sent = await h.flush(T0 + 5)
        told = sorted((n.group_labels["alertname"], s) for n in sent for s, _ in services(n))
        assert [("LatencyHigh", "web"), ("ServiceDown", "api")] == told

        await h.resolve(down)
        sent = await h.flush(T0 + 15)
        got = {n.group_labels["alertname"]: (n.reason.value, sorted(services(n))) for n in sent}
        expected = {
            "LatencyHigh": ("changed", [("api", "firing"), ("web", "firing")]),
            "ServiceDown": ("resolved", [("api", "resolved")]),
        }
        assert expected == got

    async def test_restart_or_reload_keeps_targets_muted(self, tmp_path: Path, redis: Any) -> None:
        h = Harness(redis, write_config(tmp_path, INHIBIT))
        await h.fire("critical", alertname="ServiceDown", service="api")
        await h.fire("warning", alertname="LatencyHigh", service="api")
        await h.fire("warning", alertname="LatencyHigh", service="web")
        assert 2 == len(await h.flush(T0 + 5))
        reloaded = tmp_path / "reloaded"
        reloaded.mkdir()
        h.rt = Runtime.build(write_config(reloaded, INHIBIT, notify="resolve_silenced = false"))
        assert [] == await h.flush(T0 + 6)  # every group looked at again: api still muted
        assert [] == await h.flush(T0 + 16, h.replica())  # and after a restart

    async def test_inhibition_starting_later_mutes_from_then(
        self, tmp_path: Path, redis: Any
    ) -> None:
        h = Harness(redis, write_config(tmp_path, INHIBIT))
        await h.fire("warning", alertname="LatencyHigh", service="api")
        assert 1 == len(await h.flush(T0 + 5))
        h.now = T0 + 6
        await h.fire("critical", alertname="ServiceDown", service="api")
        await h.fire("warning", alertname="LatencyHigh", service="web")
        sent = await h.flush(T0 + 15)
        latency = [n for n in sent if n.group_labels["alertname"] == "LatencyHigh"]
        assert [[("web", "firing")]] == [services(n) for n in latency]


WEEKEND = """
[[time_intervals]]
name = "weekend"
weekdays = ["saturday", "sunday"]
[[routes]]
channels = ["hook"]
mute_during = ["weekend"]
"""


class TestMuteDuring:
    """A route is quiet during its mute windows and catches up after them."""

    async def test_muted_on_the_weekend_sent_on_monday(self, tmp_path: Path, redis: Any) -> None:
        h = Harness(redis, write_config(tmp_path, WEEKEND))
        h.now = SATURDAY
        await h.fire(service="a")
        assert [] == await h.flush(SATURDAY + 5)
        assert [] == await h.flush(SATURDAY + 3 * HOUR_S)
        sent = await h.flush(MONDAY)
        assert [("hook", "first", "firing", 1)] == summary(sent)

    async def test_resolution_during_the_window_is_told_after(
        self, tmp_path: Path, redis: Any
    ) -> None:
        h = Harness(redis, write_config(tmp_path, WEEKEND))
        friday = SATURDAY - 14 * HOUR_S
        h.now = friday
        a = await h.fire(service="a")
        assert 1 == len(await h.flush(friday + 5))
        h.now = SATURDAY
        await h.resolve(a)
        assert [] == await h.flush(SATURDAY + 10)
        sent = await h.flush(MONDAY)
        assert [("hook", "resolved", "resolved", 1)] == summary(sent)
        assert [] == await h.store.all()

    async def test_other_routes_are_not_muted(self, tmp_path: Path, redis: Any) -> None:
        extra = WEEKEND.replace('channels = ["hook"]', 'channels = ["hook"]\ncontinue = true')
        extra += '[[routes]]\nchannels = ["pager"]\n'
        h = Harness(redis, write_config(tmp_path, extra))
        h.now = SATURDAY
        await h.fire(service="a")
        assert ["pager"] == [n.receiver for n in await h.flush(SATURDAY + 5)]


class TestChannels:
    """Each channel of a route gets the group and keeps its own notification log."""

    async def test_every_channel_of_the_route_is_told(self, tmp_path: Path, redis: Any) -> None:
        h = Harness(redis, write_config(tmp_path, '[[routes]]\nchannels = ["hook", "pager"]\n'))
        await h.fire(service="a")
        sent = await h.flush(T0 + 5)
        assert ["hook", "pager"] == sorted(n.receiver for n in sent)
        assert len({n.id for n in sent}) == 2

    async def test_channel_send_resolved_overrides_route(self, tmp_path: Path, redis: Any) -> None:
        cfg = write_config(tmp_path, '[[routes]]\nchannels = ["hook", "pager"]\n')
        cfg.channels["pager"] = cfg.channels["pager"].model_copy(update={"send_resolved": False})
        h = Harness(redis, cfg)
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.resolve(a)
        assert ["hook"] == [n.receiver for n in await h.flush(T0 + 15)]


def al(service: str, severity: str = "warning", state: str = "firing") -> Alert:
    labels = {"alertname": "DiskFull", "service": service, "severity": severity}
    return Alert(fingerprint(labels), "DiskFull", labels, {}, state, severity, 1.0, T0)  # type: ignore[arg-type]


def logged(*alerts: Alert, resolved: tuple[str, ...] = (), ts: float = T0) -> NflogEntry:
    return NflogEntry(frozenset(firing_key(a) for a in alerts), frozenset(resolved), ts)


class TestDecide:
    """The dedup decision: notify only on news, resolutions or after repeat_interval."""

    A, B = al("a"), al("b")
    A_CRIT = al("a", "critical")
    A_RES = al("a", state="resolved")

    @pytest.mark.parametrize(
        ("entry", "firing", "resolved", "expected"),
        [
            (None, [A], [], NotifyReason.FIRST),
            (None, [], [A_RES], None),
            (None, [], [], None),
            (logged(), [A], [], NotifyReason.FIRST),
            (logged(A), [A], [], None),
            (logged(A), [A, B], [], NotifyReason.CHANGED),
            (logged(A), [A_CRIT], [], NotifyReason.SEVERITY_CHANGED),
            (logged(A, B), [B], [], None),
            (logged(A, B), [B], [A_RES], NotifyReason.RESOLVED),
            (logged(A), [], [A_RES], NotifyReason.RESOLVED),
            (logged(A, B), [B], [A_RES], NotifyReason.RESOLVED),
            (logged(B, resolved=(A.fingerprint,)), [B], [A_RES], None),
        ],
    )
    def test_table(
        self,
        entry: NflogEntry | None,
        firing: list[Alert],
        resolved: list[Alert],
        expected: NotifyReason | None,
    ) -> None:
        assert expected == decide(entry, firing, resolved, True, HOUR_S, T0 + 60)

    def test_repeat_interval(self) -> None:
        assert None is decide(logged(self.A), [self.A], [], True, HOUR_S, T0 + HOUR_S - 1)
        assert NotifyReason.REPEAT == decide(
            logged(self.A), [self.A], [], True, HOUR_S, T0 + HOUR_S
        )

    def test_without_send_resolved_a_partial_resolution_waits(self) -> None:
        assert None is decide(logged(self.A, self.B), [self.B], [self.A_RES], False, HOUR_S, T0)

    def test_last_resolution_clears_the_log_even_without_send_resolved(self) -> None:
        assert NotifyReason.RESOLVED == decide(logged(self.A), [], [self.A_RES], False, HOUR_S, T0)

    def test_carried_alerts_are_not_gone(self) -> None:
        carried = frozenset({firing_key(self.A)})
        assert None is decide(logged(self.A), [], [], True, HOUR_S, T0, carried)
        assert NotifyReason.RESOLVED == decide(logged(self.A), [], [], True, HOUR_S, T0)

    def test_entry_round_trips(self) -> None:
        entry = logged(self.A, self.B, resolved=("x",), ts=T0 + 1.5)
        assert entry == NflogEntry.from_json(entry.to_json())
        assert NflogEntry.from_json(b"{junk") is None


class TestQuietGroups:
    """A group whose receivers know everything sleeps until its repeat; changes wake it."""

    async def due_at(self, h: Harness) -> list[float]:
        return [
            score
            for _, score in await h.redis.zrange(f"{PREFIX}groups:due", 0, -1, withscores=True)
        ]

    async def test_told_group_sleeps_until_repeat(self, h: Harness) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        assert [T0 + 5 + HOUR_S] == await self.due_at(h)

    async def test_group_with_a_muted_alert_keeps_looking(self, h: Harness) -> None:
        await h.silence({"service": "b"}, T0 - 1, T0 + 30)
        await h.fire(service="a")
        await h.fire(service="b")
        await h.flush(T0 + 5)
        assert [T0 + 15] == await self.due_at(h)

    async def test_reload_wakes_told_groups_for_new_channels(
        self, h: Harness, tmp_path: Path
    ) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        h.now = T0 + 6
        await h.fire(alertname="CpuHigh", service="a")  # still in group_wait at the reload
        both = tmp_path / "both"
        both.mkdir()
        h.rt = Runtime.build(write_config(both, '[[routes]]\nchannels = ["hook", "pager"]\n'))
        sent = await h.flush(T0 + 7)
        assert [("pager", "first", "firing", 1)] == summary(sent)
        assert ["DiskFull"] == [n.group_labels["alertname"] for n in sent]
        assert 2 == len(await h.flush(T0 + 11))  # CpuHigh after its group_wait, on both

    async def test_restart_on_the_same_config_lets_groups_sleep(self, h: Harness) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        assert [] == await h.flush(T0 + 6, h.replica())
        assert [T0 + 5 + HOUR_S] == await self.due_at(h)
