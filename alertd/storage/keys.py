"""Every Redis key alertd uses, named in one place.

State keys begin with `redis.key_prefix` and a partition's hash tag,
`alertd:{p7}:`, so that every multi-key operation (a Lua script, a MULTI)
touches one hash slot and runs unchanged on a Redis Cluster. A series' keys are
in the partition of its fingerprint (`partition_of`), a group's in the partition
of its id, the rest in the home partition (`HOME`; storage/partitions.py). The
event and dead-letter streams keep their configured names (each is one key).

| key (after the state prefix) | type | partition | holds |
| --- | --- | --- | --- |
| `w:{fingerprint}:{version}` | hash | series | a series' window (engine/windows.py) |
| `series:{rule}:{version}` | zset | series | series of an `age` rule -> newest sample time |
| `alerts` | hash | series | fingerprint -> alert JSON (pending, firing) |
| `alerts:clock` | zset | series | fingerprint -> when the clock must next judge it |
| `alerts:ver` | int | series | the filing counter (`seq`) |
| `filings` | hash | series | fingerprint -> a change still to be filed (alerts.py) |
| `ga`, `ga:seq` | hash | group | fingerprint -> alert as last filed, its `seq` |
| `ag:{fingerprint}` | set | group | the partition's groups still holding the alert |
| `groups:due` | zset | group | group id -> next flush (or lease end) |
| `groups:urgent` | zset | group | groups a critical alert fired in: flushed first |
| `group:{gid}` | hash | group | group key, labels, route, last flush, lease |
| `gm:{gid}` | set | group | the group's fingerprints |
| `nflog:{channel}:{gid}` | string | group | what the channel was last told of the group |
| `outbox:{channel}` | stream | each | notifications waiting for delivery |
| `urgent:{channel}` | stream | each | the channel's urgent lane (new critical pages) |
| `lease:partition` | string | each | the partition's owner and fencing token (`name:token`) |
| `lease:fence` | int | each | the partition's last fencing token handed out |
| `replication:probe` | int | each | written before each WAIT (replication.py) |
| `dispatch:routing` | string | home | digest of the routing groups were flushed under |
| `channel:failures:{channel}` | string | home | consecutive failures |
| `channel:failing:{channel}` | string | home | the AlertdChannelFailing episode |
| `silences` | hash | home | silence id -> JSON |
| `nhist`, `nhist:rec` | zset, hash | home | notification history: index, records |
| `rl:{channel}`, `held:{channel}` | zset, list | home | rate-limit window, held notifications |
| `admitted:{rule}`, `...:dl` | zset, string | home | the cardinality guard, its dead-letter slot |
| `probe:{consumer}` | string | home | the watchdog's write probe |
| `layout`, `layout:lock` | string | home | the partition layout state is in (storage/rehome.py) |
| `migrated` | string | home | old-layout keys were moved in (storage/migrate.py) |
| `daemon:{consumer}` | string | home | a live daemon's heartbeat (expires after `takeover`) |
| `daemons` | zset | home | live daemons: name -> registration expiry (ms) |
| `email:msgid:...`, `slack:rl:...` | string | home | threading and rate-limit slots of channels |

Every Lua script in `lua/` gets each key it touches in KEYS (a batched call
indexes them from its JSON argument: `ScriptKeys`), except `claim_groups.lua`:
it finds the due group ids itself, so it names their `group:`, `gm:` and
`nflog:` keys from the state prefix (passed as ARGV). Declaring them would
cost a round trip (read the due ids, then claim) on the path of every page;
the keys it builds carry the prefix's hash tag, so they share the partition's
slot with the keys it declares.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

HOME = 0  # the partition of state that is not a series' (groups, outboxes, silences, ...)


def hash_tag(partition: int = HOME) -> str:
    return f"{{p{partition}}}"


def state_prefix(key_prefix: str, partition: int = HOME) -> str:
    """What a partition's state keys begin with: `alertd:{p3}:` for key_prefix `alertd:`."""
    return f"{key_prefix}{hash_tag(partition)}:"


def partition_of(fingerprint: str, partitions: int) -> int:
    """The partition of a series (its window and alert): a stable hash of its fingerprint,
    the same in every daemon and every version."""
    return zlib.crc32(fingerprint.encode()) % partitions


def window(prefix: str, fingerprint: str, version: str) -> str:
    return f"{prefix}w:{fingerprint}:{version}"


def age_series(prefix: str, rule: str, version: str) -> str:
    return f"{prefix}series:{rule}:{version}"


def alerts(prefix: str) -> str:
    return f"{prefix}alerts"


def alerts_clock(prefix: str) -> str:
    return f"{prefix}alerts:clock"


def alerts_version(prefix: str) -> str:
    return f"{prefix}alerts:ver"


def filings(prefix: str) -> str:
    """hash: fingerprint -> the alert change still to be filed into its groups (`seq`
    tab JSON), removed once filed (alerts.py)."""
    return f"{prefix}filings"


def alert_copies(prefix: str) -> str:
    """hash: fingerprint -> the alert as last filed into the partition's groups."""
    return f"{prefix}ga"


def alert_copies_seq(prefix: str) -> str:
    """hash: fingerprint -> the `seq` of that filing (an older one arriving late is ignored)."""
    return f"{prefix}ga:seq"


def alert_groups(prefix: str, fingerprint: str) -> str:
    return f"{prefix}ag:{fingerprint}"


def groups_due(prefix: str) -> str:
    return f"{prefix}groups:due"


def groups_urgent(prefix: str) -> str:
    """zset: group id -> when due, for groups a critical alert fired in (claimed first)."""
    return f"{prefix}groups:urgent"


def group(prefix: str, gid: str) -> str:
    return f"{prefix}group:{gid}"


def group_members(prefix: str, gid: str) -> str:
    return f"{prefix}gm:{gid}"


def nflog(prefix: str, channel: str, gid: str) -> str:
    return f"{prefix}nflog:{channel}:{gid}"


def routing_digest(prefix: str) -> str:
    return f"{prefix}dispatch:routing"


def outbox(prefix: str, channel: str, urgent: bool = False) -> str:
    """A channel's outbox stream, or its urgent lane's (Notification.urgent)."""
    return f"{prefix}urgent:{channel}" if urgent else f"{prefix}outbox:{channel}"


def channel_failures(prefix: str, channel: str) -> str:
    return f"{prefix}channel:failures:{channel}"


def channel_failing(prefix: str, channel: str) -> str:
    return f"{prefix}channel:failing:{channel}"


def silences(prefix: str) -> str:
    return f"{prefix}silences"


def partition_lease(prefix: str) -> str:
    return f"{prefix}lease:partition"


def partition_fence(prefix: str) -> str:
    return f"{prefix}lease:fence"


def history_index(prefix: str) -> str:
    """zset: `channel id` -> when the notification was queued (unix seconds)."""
    return f"{prefix}nhist"


def history_records(prefix: str) -> str:
    """hash: `channel id` -> the history record's JSON."""
    return f"{prefix}nhist:rec"


def rate_slots(prefix: str, channel: str) -> str:
    """zset: slot -> when taken (ms): a channel's `rate_limit` sliding window."""
    return f"{prefix}rl:{channel}"


def rate_held(prefix: str, channel: str) -> str:
    """list: notifications held for the channel's next digest."""
    return f"{prefix}held:{channel}"


def admitted_series(prefix: str, rule: str) -> str:
    """zset: series fingerprint -> last seen: the rule's cardinality guard."""
    return f"{prefix}admitted:{rule}"


def series_dead_letter_slot(prefix: str, rule: str) -> str:
    """string: the guard's one-dead-letter-per-second slot for the rule."""
    return f"{prefix}admitted:{rule}:dl"


def write_probe(prefix: str, consumer: str) -> str:
    """string: the watchdog's write probe (expires after 60 s)."""
    return f"{prefix}probe:{consumer}"


def replication_probe(prefix: str) -> str:
    """Written before a WAIT, so the WAIT covers every earlier write (replication.py)."""
    return f"{prefix}replication:probe"


def layout(prefix: str) -> str:
    """The partition layout the state is in (storage/rehome.py)."""
    return f"{prefix}layout"


def layout_lock(prefix: str) -> str:
    """Held by the daemon moving state to a new layout."""
    return f"{prefix}layout:lock"


def migrated(prefix: str) -> str:
    """Set once state of the unpartitioned layout was looked for (storage/migrate.py)."""
    return f"{prefix}migrated"


def daemon_heartbeat(prefix: str, consumer: str) -> str:
    return f"{prefix}daemon:{consumer}"


def daemons(prefix: str) -> str:
    """zset: daemon name -> when its registration expires (unix ms), in the home
    partition: the live daemons the partitions are shared among (ownership.py)."""
    return f"{prefix}daemons"


class ScriptKeys:
    """The KEYS of one script call, each key once: `at(key)` is where Lua finds it
    (1-based). A batched call passes these places in its JSON argument, so a key many
    changes share (a group, an outbox) is sent once.
    """

    __slots__ = ("_at", "keys")

    def __init__(self, fixed: Iterable[str] = ()) -> None:
        self.keys: list[str] = []
        self._at: dict[str, int] = {}
        for key in fixed:
            self.at(key)

    def at(self, key: str) -> int:
        i = self._at.get(key)
        if i is None:
            self.keys.append(key)
            i = self._at[key] = len(self.keys)
        return i
