"""Alert state in Redis, and the groups each change is filed into.

An alert lives beside its series' window, in the series' partition (keys
`{s}`, storage/partitions.py); a group it is filed into lives in the partition
of the group's id (`{g}`, GroupSide), which keeps a copy of the alert as last
filed:

    {s}alerts            hash  fingerprint -> Alert JSON (pending, firing)
    {s}alerts:clock      zset  fingerprint -> when the clock must next judge the live alert
                               (its `for` ends, a bucket leaves its window, ...): the clock
                               reads only what is due, not every alert
    {s}alerts:ver        int   the partition's filing counter (`seq`); bumped by every
                               change filed into groups (reloads inhibition sources)
    {s}filings           hash  fingerprint -> the change still to be filed (seq, tab, JSON)
    {g}ga, {g}ga:seq     hash  fingerprint -> the alert as last filed (firing, or resolved
                               and not yet told by every group), and that filing's seq
    {g}ag:{fp}           set   group ids still holding the alert
    {g}groups:due        zset  group id -> when the group must next be flushed (or its lease ends)
    {g}group:{gid}       hash  key, labels, route, created, last_flush; while a flush holds
                               it: lease, lease_until, and what changed meanwhile: dirty
                               (flush again after group_interval) or rush (again at once)
    {g}gm:{gid}          set   fingerprints in the group

A change is written with compare-and-set (apply_alert_changes.lua): the alert
moves only if nobody else moved it since we read it, so replicas never lose or
double a transition. A change receivers hear of is kept, in the same atomic
step, in the partition's `filings` under the next `seq`; then it is filed into
its groups (file_alerts.lua: the copy, membership and schedule, skipped when a
newer seq was filed already) and only then removed. A daemon that dies in
between leaves the filing for the partition's owner, who files it again
(`refile`). A filing is kept per alert: a newer change replaces one not filed
yet (its groups hear the newer; a mere refresh of the value keeps what the
older one told them), and none is filed after a newer one. An alert
leaves a group only when that group's flush has told its resolution
(dispatcher.py); a resolved alert leaves its series' partition at once (its
groups have their copy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from alertd.model import Alert
from alertd.notify.routing import GroupTarget
from alertd.storage import keys, scripts
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua

APPLY_CHUNK = 500  # changes per Lua call: long enough to pay off, short enough not to stall Redis


DUE_LIMIT = 5000  # per clock evaluation (Lua's unpack takes at most ~8000)

# Where apply_alert_changes.lua reads a change's window place, and file_alerts.lua a
# filing's seq, targets, page flag and the place of its ag:<fp>; a target's group and
# members.
_WINDOW = 3
_SEQ, _NOW, _TARGETS, _PAGES, _ALERT_GROUPS = 1, 3, 4, 6, 7
_GROUP, _MEMBERS = 6, 7


@dataclass(slots=True)
class AlertChange:
    """One change's part of an `apply_many` call (AlertStore.apply_args): its entry in
    apply_alert_changes.lua's JSON, the window it was judged on, and its filing (None:
    its groups hear nothing of it).
    """

    partition: int
    args: list[Any]
    window: str | None
    filing: list[Any] | None


class GroupSide:
    """The keys of one partition's groups: their schedule, the copies of the alerts filed
    into them, and each group's hash, members and notification log."""

    def __init__(self, partition: int, prefix: str, redis: Redis) -> None:
        self.partition = partition
        self.prefix = prefix
        self.redis = redis
        self.due_key = keys.groups_due(prefix)
        self.urgent_key = keys.groups_urgent(prefix)
        self.copies_key = keys.alert_copies(prefix)
        self.copies_seq_key = keys.alert_copies_seq(prefix)

    def group_key(self, gid: str) -> str:
        return keys.group(self.prefix, gid)

    def members_key(self, gid: str) -> str:
        return keys.group_members(self.prefix, gid)

    def alert_groups_key(self, fp: str) -> str:
        return keys.alert_groups(self.prefix, fp)

    def nflog_key(self, channel: str, gid: str) -> str:
        return keys.nflog(self.prefix, channel, gid)


class AlertStore:
    def __init__(self, partitions: Partitions) -> None:
        self.partitions = partitions
        self.sides = [
            GroupSide(p, partitions.prefix(p), partitions.client(p))
            for p in range(partitions.count)
        ]
        # The home partition's groups (all there are with one partition: tests, tools).
        home = self.sides[keys.HOME]
        self.redis, self.prefix = home.redis, home.prefix
        self.due_key, self.urgent_key = home.due_key, home.urgent_key
        self.copies_key, self.copies_seq_key = home.copies_key, home.copies_seq_key
        self.group_key, self.members_key = home.group_key, home.members_key
        self.alert_groups_key = home.alert_groups_key
        self._apply = self.redis.register_script(lua("apply_alert_changes"))
        self._file = self.redis.register_script(lua("file_alerts"))
        self._due = self.redis.register_script(lua("due_alerts"))
        # Filings done, per series partition: removed from `filings` with its next call.
        self._filed: dict[int, list[tuple[str, int]]] = {}
        # Group partitions this daemon filed into since the dispatcher last looked; and
        # those it filed a page into (a critical alert firing) since its urgent flush.
        self.filed_into: set[int] = set()
        self.paged_into: set[int] = set()

    def side_of(self, gid: str) -> GroupSide:
        """The partition a group lives in (its id's, as a series' is its fingerprint's)."""
        return self.sides[keys.partition_of(gid, self.partitions.count)]

    def apply_keys(self, partition: int) -> tuple[str, ...]:
        """The keys apply_alert_changes.lua takes first, of a series partition (named here
        once: the store's calls and the tests that run the script alone use them)."""
        prefix = self.partitions.prefix(partition)
        return (
            keys.alerts(prefix),
            keys.alerts_clock(prefix),
            keys.alerts_version(prefix),
            keys.filings(prefix),
        )

    def window_key(self, fp: str, version: str) -> str:
        return keys.window(self.partitions.prefix(self.partitions.of_series(fp)), fp, version)

    # --- reads, each partition's in one pipeline per client --------------------

    async def per_partition(self, parts: Iterable[int], queue: Any) -> dict[int, list[Any]]:
        """`queue(pipe, partition)` for each partition, one pipeline per client, the
        clients at once; the answers of the commands queued for each partition."""

        async def run(client: Redis, ps: list[int]) -> list[tuple[int, list[Any]]]:
            pipe = client.pipeline(transaction=False)
            ends = []
            for p in ps:
                queue(pipe, p)
                ends.append(len(pipe.command_stack))
            answers = await scripts.execute(pipe)
            starts = [0, *ends[:-1]]
            return [(p, answers[a:b]) for p, a, b in zip(ps, starts, ends, strict=True)]

        answers = await asyncio.gather(
            *(run(client, ps) for client, ps in self.partitions.by_client(parts))
        )
        return {p: a for one in answers for p, a in one}

    def _by_partition(self, fingerprints: Iterable[str]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for fp in fingerprints:
            out.setdefault(self.partitions.of_series(fp), []).append(fp)
        return out

    def _alerts_key(self, partition: int) -> str:
        return keys.alerts(self.partitions.prefix(partition))

    async def get_raw(self, fingerprints: list[str]) -> list[bytes | None]:
        if not fingerprints:
            return []
        by_part = self._by_partition(fingerprints)
        answers = await self.per_partition(
            by_part, lambda pipe, p: pipe.hmget(self._alerts_key(p), by_part[p])
        )
        found = {
            fp: raw
            for p, fps in by_part.items()
            for fp, raw in zip(fps, answers[p][0], strict=True)
        }
        return [found[fp] for fp in fingerprints]

    async def all(self, partitions: Iterable[int] | None = None) -> list[Alert]:
        """Every stored alert (of these partitions)."""
        parts = range(self.partitions.count) if partitions is None else partitions
        answers = await self.per_partition(parts, lambda pipe, p: pipe.hgetall(self._alerts_key(p)))
        return [
            Alert.from_dict(orjson.loads(v)) for (raw,) in answers.values() for v in raw.values()
        ]

    async def versions(self) -> tuple[bytes | None, ...]:
        """Every partition's filing counter: changed when any alert change was filed."""
        answers = await self.per_partition(
            range(self.partitions.count),
            lambda pipe, p: pipe.get(keys.alerts_version(self.partitions.prefix(p))),
        )
        return tuple(answers[p][0] for p in range(self.partitions.count))

    async def due(
        self, now: float, partitions: Iterable[int] | None = None, limit: int = DUE_LIMIT
    ) -> list[Alert]:
        """The live alerts (of these partitions) whose next clock judgement is due by
        `now`, oldest due first.

        Entries of alerts that are gone or resolved are dropped from the index.
        """
        parts = list(range(self.partitions.count) if partitions is None else partitions)

        def clock(p: int) -> str:
            return keys.alerts_clock(self.partitions.prefix(p))

        answers = await self.per_partition(
            parts,
            lambda pipe, p: scripts.queue(
                pipe, self._due, [clock(p), self._alerts_key(p)], [now, limit]
            ),
        )
        alerts: list[Alert] = []
        stale: dict[int, list[bytes]] = {}
        for p, ((fps, raws),) in answers.items():
            for fp, raw in zip(fps, raws, strict=True):
                alert = Alert.from_dict(orjson.loads(raw)) if raw else None
                if alert is None or alert.state == "resolved":
                    stale.setdefault(p, []).append(fp)
                else:
                    alerts.append(alert)
        if stale:
            await self.per_partition(stale, lambda pipe, p: pipe.zrem(clock(p), *stale[p]))
        return alerts

    async def reschedule(self, clock: dict[str, float]) -> None:
        """When the clock must next judge these alerts (judged, but not changed)."""
        if not clock:
            return
        by_part = self._by_partition(clock)
        await self.per_partition(
            by_part,
            lambda pipe, p: pipe.zadd(
                keys.alerts_clock(self.partitions.prefix(p)), {fp: clock[fp] for fp in by_part[p]}
            ),
        )

    # --- changes ----------------------------------------------------------------

    def apply_args(
        self,
        fp: str,
        expected: bytes,
        new: Alert | None,
        targets: list[GroupTarget],
        immediate: bool,
        now: float,
        window: tuple[str, float] | None = None,
        clock_at: float | None = None,
        refresh: bool = False,
    ) -> AlertChange:
        """One change's part of an `apply_many` call (opaque to callers).

        `targets`: the groups to file it into. `refresh`: they hear nothing of it, but
        the copies they hold are brought up to date (a firing alert's value moved).
        `window` (key, newest sample time): the change is refused, like a lost
        compare-and-set, when that window has received newer samples since.
        `clock_at`: when the clock must next judge the alert (None: not live).
        A critical alert that fires marks its groups urgent (flushed first).
        """
        as_json = "" if new is None else orjson.dumps(new.to_dict()).decode()
        filing = None
        if new is not None and targets:
            filing = [
                fp,
                0,  # its seq (apply_many)
                as_json,
                repr(now),
                [
                    [
                        t.gid,
                        t.group_key,
                        orjson.dumps(t.labels).decode(),
                        t.policy.route_id,
                        repr(t.policy.group_wait.total_seconds()),
                        repr(t.policy.group_interval.total_seconds()),
                        0,  # the places in KEYS of its group and members (file_many)
                        0,
                    ]
                    for t in targets
                ],
                "1" if immediate else "0",
                "1" if new.pages and not refresh else "0",
                0,  # the place in KEYS of the alert's groups (file_many)
                "1" if refresh else "0",
            ]
        args = [
            fp,
            expected.decode(errors="replace"),  # as stored: JSON text
            # A resolved alert lives on only in its groups' copies, until they told it.
            "" if new is None or new.state == "resolved" else as_json,
            0,  # the window's place in KEYS (apply_many)
            "" if window is None else repr(window[1]),
            "" if clock_at is None else repr(clock_at),
            "" if filing is None else orjson.dumps(filing).decode(),
        ]
        partition = self.partitions.of_series(fp)
        return AlertChange(partition, args, None if window is None else window[0], filing)

    async def apply_many(self, changes: list[AlertChange]) -> list[bool]:
        """Run compare-and-set changes, a few hundred per call and one round trip per
        client, then file those that took into their groups. True where each took."""
        if not changes:
            return []
        by_part: dict[int, list[int]] = {}
        for i, c in enumerate(changes):
            by_part.setdefault(c.partition, []).append(i)

        def queue(pipe: Any, p: int) -> None:
            fixed = self.apply_keys(p)
            positions = by_part[p]
            done = self._filed.pop(p, [])
            for start in range(0, len(positions), APPLY_CHUNK):
                call = keys.ScriptKeys(fixed)
                chunk = []
                for i in positions[start : start + APPLY_CHUNK]:
                    c = changes[i]
                    c.args[_WINDOW] = 0 if c.window is None else call.at(c.window)
                    chunk.append(c.args)
                args = [orjson.dumps(chunk), orjson.dumps(done if start == 0 else [])]
                scripts.queue(pipe, self._apply, call.keys, args)

        answers = await self.per_partition(by_part, queue)
        taken = [False] * len(changes)
        filings: list[tuple[int, list[Any]]] = []
        for p, positions in by_part.items():
            # One answer per call in the pipeline; a partition's calls are queued in order.
            answered = [
                row
                for flags, seqs, kept in answers[p]
                for row in zip(flags, seqs, kept, strict=True)
            ]
            for i, (flag, seq, kept) in zip(positions, answered, strict=True):
                taken[i] = bool(flag)
                filing = changes[i].filing
                if kept:  # a refresh over a filing not yet filed: that one, up to date
                    filing = orjson.loads(kept)
                if flag and filing is not None:
                    filing[_SEQ] = int(seq)
                    filings.append((p, filing))
        if filings:
            await self.file_many(filings)
        return taken

    async def file_many(self, filings: list[tuple[int, list[Any]]]) -> None:
        """File changes (series partition, filing) into their groups, in each group's
        partition; each is then removed from its series partition's `filings` with that
        partition's next call."""
        parts: dict[int, list[list[Any]]] = {}
        for _, f in filings:
            by_side: dict[int, list[Any]] = {}
            for t in f[_TARGETS]:
                by_side.setdefault(self.side_of(t[0]).partition, []).append(t)
            for p, targets in by_side.items():
                part = list(f)
                part[_TARGETS] = targets
                parts.setdefault(p, []).append(part)

        def queue(pipe: Any, p: int) -> None:
            side = self.sides[p]
            fixed = (side.due_key, side.urgent_key, side.copies_key, side.copies_seq_key)
            todo = parts[p]
            for start in range(0, len(todo), APPLY_CHUNK):
                call = keys.ScriptKeys(fixed)
                chunk = []
                for f in todo[start : start + APPLY_CHUNK]:
                    f[_ALERT_GROUPS] = call.at(side.alert_groups_key(f[0]))
                    f[_TARGETS] = [
                        [
                            *t[:_GROUP],
                            call.at(side.group_key(t[0])),
                            call.at(side.members_key(t[0])),
                        ]
                        for t in f[_TARGETS]
                    ]
                    chunk.append(f)
                scripts.queue(pipe, self._file, call.keys, [orjson.dumps(chunk)])

        await self.per_partition(parts, queue)
        self.filed_into.update(parts)
        self.paged_into.update(p for p, fs in parts.items() if any(f[_PAGES] == "1" for f in fs))
        for p, f in filings:
            self._filed.setdefault(p, []).append((f[0], f[_SEQ]))

    async def refile(self, partitions: Iterable[int], before: float) -> int:
        """File again what was left in these partitions' `filings` from before `before`
        (a daemon died between a change and its filing); how many. Also removes the
        filings this daemon has done since its last call there."""
        parts = list(partitions)
        answers = await self.per_partition(
            parts, lambda pipe, p: pipe.hgetall(keys.filings(self.partitions.prefix(p)))
        )
        again: list[tuple[int, list[Any]]] = []
        for p, (rows,) in answers.items():
            for raw in rows.values():
                seq, _, text = raw.decode().partition("\t")
                filing = orjson.loads(text)
                if float(filing[_NOW]) < before:
                    filing[_SEQ] = int(seq)
                    again.append((p, filing))
        if again:
            await self.file_many(again)
        done = [p for p in parts if self._filed.get(p)]
        if done:
            await self._remove_filed(done)
        return len(again)

    async def _remove_filed(self, partitions: list[int]) -> None:
        """Remove the filings done from these partitions' `filings` (apply_many does it
        with a partition's next changes; this, when none came)."""

        def queue(pipe: Any, p: int) -> None:
            done = self._filed.pop(p, [])
            scripts.queue(pipe, self._apply, list(self.apply_keys(p)), [b"[]", orjson.dumps(done)])

        await self.per_partition(partitions, queue)
