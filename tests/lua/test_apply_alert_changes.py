"""apply_alert_changes.lua and file_alerts.lua: compare-and-set alert changes in their
series' partition, then filed into their groups (through `filings`, in order, once).

Changes are built as the rule engine builds them (AlertStore.apply_args, targets from
the router of tests/test_dispatch.py's config: group_wait 5s, group_interval 10s).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from alertd.alerts import AlertChange
from alertd.model import Alert
from alertd.storage import keys
from tests.conftest import apply_unfiled
from tests.lua.conftest import SLOT, TAGGED, SlotHarness
from tests.lua.touched import watch
from tests.test_dispatch import PREFIX, T0, Harness, write_config


@pytest.fixture
async def h(redis: aioredis.Redis, tmp_path: Path) -> Harness:
    return Harness(redis, write_config(tmp_path))


def args(
    h: Harness,
    alert: Alert | None,
    expected: bytes,
    *,
    fp: str = "",
    notify: bool = True,
    immediate: bool = False,
    window: tuple[str, float] | None = None,
    clock_at: float | None = None,
) -> AlertChange:
    targets = h.rt.router.groups(alert) if notify and alert is not None else []
    fp = fp or (alert.fingerprint if alert is not None else "")
    return h.store.apply_args(
        fp, expected, alert, targets, immediate, h.now, window=window, clock_at=clock_at
    )


def gid_of(h: Harness, alert: Alert) -> str:
    [target] = h.rt.router.groups(alert)
    return target.gid


async def due_at(h: Harness, gid: str) -> float | None:
    score: float | None = await h.redis.zscore(h.store.due_key, gid)
    return score


class TestCompareAndSet:
    """A change lands only over the value and window it was judged on; a refusal writes nothing."""

    async def test_stale_expected_value_is_refused(self, h: Harness) -> None:
        alert = await h.fire(service="db")
        _, stored = await h.get(alert.fingerprint)
        version = await h.redis.get(keys.alerts_version(PREFIX))
        worse = replace(alert, severity="critical")
        stale = args(h, worse, b"{}", clock_at=T0 + 60)
        assert [False] == await h.store.apply_many([stale])
        assert stored == (await h.get(alert.fingerprint))[1]
        assert version == await h.redis.get(keys.alerts_version(PREFIX))
        assert None is await h.redis.zscore(keys.alerts_clock(PREFIX), alert.fingerprint)
        assert [True] == await h.store.apply_many([args(h, worse, stored)])
        assert worse == (await h.get(alert.fingerprint))[0]

    async def test_change_judged_on_an_older_window_is_refused(self, h: Harness) -> None:
        alert = await h.fire(service="db")
        _, stored = await h.get(alert.fingerprint)
        wkey = keys.window(PREFIX, alert.fingerprint, "v1")
        await h.redis.hset(wkey, "T", repr(T0 + 5))
        worse = replace(alert, severity="critical")
        older = args(h, worse, stored, window=(wkey, T0 + 4), clock_at=T0 + 60)
        assert [False] == await h.store.apply_many([older])
        assert stored == (await h.get(alert.fingerprint))[1]
        same = args(h, worse, stored, window=(wkey, T0 + 5), clock_at=T0 + 60)
        assert [True] == await h.store.apply_many([same])
        assert T0 + 60 == await h.redis.zscore(keys.alerts_clock(PREFIX), alert.fingerprint)


class TestGroupScheduling:
    """Groups come due after group_wait, then group_interval, or now if immediate; never later."""

    async def test_new_group_waits_group_wait(self, h: Harness) -> None:
        alert = await h.fire(service="db", disk="a")
        [target] = h.rt.router.groups(alert)
        gid = target.gid
        assert T0 + 5 == await due_at(h, gid)
        group = await h.redis.hgetall(h.store.group_key(gid))
        stored = (group[b"key"], group[b"route"], group[b"created"])
        assert (target.group_key.encode(), target.policy.route_id.encode(), b"%r" % T0) == stored
        assert {gid.encode()} == await h.redis.smembers(h.store.alert_groups_key(alert.fingerprint))
        h.now = T0 + 3
        other = await h.fire(service="db", disk="b")  # group_wait alone would say T0 + 8
        assert T0 + 5 == await due_at(h, gid)
        members = {alert.fingerprint.encode(), other.fingerprint.encode()}
        assert members == await h.redis.smembers(h.store.members_key(gid))

    async def test_flushed_group_waits_group_interval_unless_immediate(self, h: Harness) -> None:
        first = await h.fire(service="db", disk="a")
        gid = gid_of(h, first)
        await h.redis.hset(h.store.group_key(gid), "last_flush", repr(T0))
        await h.redis.zadd(h.store.due_key, {gid: T0 + 3600})
        h.now = T0 + 3
        await h.fire(service="db", disk="b")
        assert T0 + 10 == await due_at(h, gid)
        h.now = T0 + 4
        await h.fire(severity="critical", service="db", disk="a")  # a severity change
        assert T0 + 4 == await due_at(h, gid)


class TestUrgent:
    """A critical alert firing marks its groups urgent, due when they are; others do not."""

    async def test_critical_marks_warning_does_not(self, h: Harness) -> None:
        warn = await h.fire(service="db", disk="a")
        assert None is await h.redis.zscore(h.store.urgent_key, gid_of(h, warn))
        page = await h.fire(severity="critical", service="web", disk="b")
        assert T0 + 5 == await h.redis.zscore(h.store.urgent_key, gid_of(h, page))

    async def test_critical_while_leased_marks_it_now(self, h: Harness) -> None:
        alert = await h.fire(service="db", disk="a")
        gid = gid_of(h, alert)
        lease = {"lease": "x:0", "lease_until": repr(T0 + 60), "last_flush": repr(T0)}
        await h.redis.hset(h.store.group_key(gid), mapping=lease)
        h.now = T0 + 1
        await h.fire(severity="critical", service="db", disk="a")
        assert T0 + 1 == await h.redis.zscore(h.store.urgent_key, gid)


class TestWhileLeased:
    """While a flush holds a group, a change leaves `dirty` (or `rush`) and no new due time."""

    async def test_change_leaves_dirty_then_rush(self, h: Harness) -> None:
        alert = await h.fire(service="db", disk="a")
        gid = gid_of(h, alert)
        lease = {"lease": "x:0", "lease_until": repr(T0 + 60), "last_flush": repr(T0)}
        await h.redis.hset(h.store.group_key(gid), mapping=lease)
        await h.redis.zadd(h.store.due_key, {gid: T0 + 60})
        h.now = T0 + 1
        await h.fire(service="db", disk="b")
        group = await h.redis.hgetall(h.store.group_key(gid))
        assert (b"1", None) == (group.get(b"dirty"), group.get(b"rush"))
        await h.fire(severity="critical", service="db", disk="a")
        assert b"1" == await h.redis.hget(h.store.group_key(gid), "rush")
        assert T0 + 60 == await due_at(h, gid)


class TestFiling:
    """A change receivers hear of is kept in `filings` until its groups hold it; the groups
    hold the alert as last filed (a resolution until told), each filing once and in order."""

    async def test_resolved_alert_lives_on_in_its_groups_copy(self, h: Harness) -> None:
        alert = await h.fire(service="db")
        h.now = T0 + 1
        resolved = await h.resolve(alert)
        assert (None, b"") == await h.get(alert.fingerprint)
        copy = await h.redis.hget(h.store.copies_key, alert.fingerprint)
        assert resolved == Alert.from_dict(orjson.loads(copy))
        version = await h.redis.get(keys.alerts_version(PREFIX))
        h.now = T0 + 2
        await h.go_pending(resolved)  # not filed: the groups still owe the resolution
        assert copy == await h.redis.hget(h.store.copies_key, alert.fingerprint)
        assert version == await h.redis.get(keys.alerts_version(PREFIX))
        h.now = T0 + 3
        again = await h.fire(service="db")
        stored = await h.redis.hget(h.store.copies_key, alert.fingerprint)
        assert "firing" == Alert.from_dict(orjson.loads(stored)).state
        assert again.fingerprint == alert.fingerprint

    async def test_filing_is_kept_until_done_then_removed_by_the_next_call(
        self, h: Harness
    ) -> None:
        first = await h.fire(service="db")
        [row] = (await h.redis.hgetall(keys.filings(PREFIX))).values()
        seq = int(row.split(b"\t")[0])
        assert seq == int(await h.redis.get(keys.alerts_version(PREFIX)))
        assert seq == int(await h.redis.hget(h.store.copies_seq_key, first.fingerprint))
        await h.fire(service="web")  # its call removes the first one's, done
        [left] = (await h.redis.hgetall(keys.filings(PREFIX))).keys()
        assert first.fingerprint != left.decode()

    async def test_filing_left_by_a_dead_daemon_is_filed_again_once(self, h: Harness) -> None:
        alert = Alert(
            "fp-left",
            "DiskFull",
            {"alertname": "DiskFull", "service": "db"},
            {},
            "firing",
            "warning",
            1.0,
            starts_at=T0,
            updated_at=T0,
        )
        # What a daemon leaves when it dies between a change and its filing.
        await apply_unfiled(h.store, args(h, alert, b""))
        gid = gid_of(h, alert)
        assert None is await due_at(h, gid)
        left = await h.redis.hget(keys.filings(PREFIX), "fp-left")
        assert 0 == await h.store.refile([0], before=T0)  # not old enough yet
        assert 1 == await h.store.refile([0], before=T0 + 10)
        assert T0 + 5 == await due_at(h, gid)
        assert {b"fp-left"} == await h.redis.smembers(h.store.members_key(gid))
        assert {} == await h.redis.hgetall(keys.filings(PREFIX))
        # The same filing again (another daemon refiling it late): skipped, nothing moves.
        await h.redis.zadd(h.store.due_key, {gid: T0 + 99})
        await h.redis.hset(keys.filings(PREFIX), "fp-left", left)
        await h.store.refile([0], before=T0 + 10)
        assert T0 + 99 == await due_at(h, gid)

    async def test_refresh_over_an_unfiled_fire_still_files_the_fire(self, h: Harness) -> None:
        labels = {"alertname": "DiskFull", "service": "db"}
        alert = Alert(
            "fp-fired",
            "DiskFull",
            labels,
            {},
            "firing",
            "warning",
            1.0,
            starts_at=T0,
            updated_at=T0,
        )
        # Step 1 of the fire landed, its filing did not (Redis went away in between).
        await apply_unfiled(h.store, args(h, alert, b""))
        # The value moves: a refresh, which alone would only touch a copy there is not.
        moved = replace(alert, value=2.0)
        _, stored = await h.get(alert.fingerprint)
        targets = h.rt.router.groups(moved)
        refresh = h.store.apply_args(
            alert.fingerprint, stored, moved, targets, False, h.now, refresh=True
        )
        assert [True] == await h.store.apply_many([refresh])
        gid = gid_of(h, alert)
        assert T0 + 5 == await due_at(h, gid)  # filed as fired: the group will tell it
        copy = await h.redis.hget(h.store.copies_key, alert.fingerprint)
        assert 2.0 == Alert.from_dict(orjson.loads(copy)).value


class TestDeclaredKeys:
    """On the partition's Cluster slot, every key a change touches is one it declared."""

    async def test_every_key_touched_is_declared(self, slot: SlotHarness) -> None:
        first = await slot.fire(service="db", disk="a")
        fp, gid = first.fingerprint, gid_of(slot, first)
        lease = {"lease": "x:0", "lease_until": repr(T0 + 60), "last_flush": repr(T0)}
        await slot.redis.hset(slot.store.group_key(gid), mapping=lease)
        wkey = keys.window(TAGGED, fp, "v1")
        await slot.redis.hset(wkey, "T", repr(T0))
        async with watch(slot.redis) as seen:
            alert, stored = await slot.get(fp)
            assert alert is not None
            page = replace(alert, severity="critical")  # while leased: urgent, rush
            changed = args(slot, page, stored, immediate=True, window=(wkey, T0), clock_at=T0)
            assert [True] == await slot.store.apply_many([changed])
            slot.now = T0 + 1
            resolved = await slot.resolve(page)
            slot.now = T0 + 2
            await slot.go_pending(resolved)  # keeps the resolution its group owes
            other = await slot.fire(service="db", alertname="CpuHigh")  # a new group
        assert set() == seen.undeclared
        s = slot.store
        singles = {
            keys.alerts(TAGGED),
            keys.alerts_clock(TAGGED),
            keys.alerts_version(TAGGED),
            keys.filings(TAGGED),
            s.due_key,
            s.urgent_key,
            s.copies_key,
            s.copies_seq_key,
        }
        gids = (gid, gid_of(slot, other))
        per_group = {s.group_key(g) for g in gids} | {s.members_key(g) for g in gids}
        per_alert = {wkey, s.alert_groups_key(fp), s.alert_groups_key(other.fingerprint)}
        assert singles | per_group | per_alert == {k.decode() for k in seen.touched}
        assert {SLOT} == {key_slot(k) for k in seen.declared}
