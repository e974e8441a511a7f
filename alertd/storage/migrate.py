"""State written by alertd before its keys carried a partition hash tag.

Up to 0.1 every state key was `<key_prefix><name>` (`alertd:alerts`,
`alertd:outbox:hook`, ...). On start, a daemon on one Redis or behind Sentinel
renames each such key to its place in partition 0 (`alertd:{p0}:alerts`), so
alerts, groups, the notification log, silences and queued notifications carry
over an upgrade. RENAMENX is atomic per key, so replicas starting together
cannot clash, and a key already in its new place is left be (the old one is
then reported, not overwritten). A Cluster never ran the old layout: nothing
to do there.
"""

from __future__ import annotations

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from alertd.storage import keys

log = structlog.get_logger("alertd.migrate")

# Old state keys, after the prefix: these names, and names starting with these.
OLD_NAMES = frozenset(
    {
        "alerts",
        "alerts:gone",
        "alerts:ver",
        "alerts:clock",
        "groups:due",
        "silences",
        "dispatch:routing",
        "lease:tick",
    }
)
OLD_ROOTS = (
    "ag:",
    "group:",
    "gm:",
    "nflog:",
    "outbox:",
    "channel:failures:",
    "channel:failing:",
    "w:",
    "series:",
    "email:msgid:",
    "slack:rl:",
)
SCAN_COUNT = 1000


def old_state_key(key: str, key_prefix: str, streams: set[str]) -> bool:
    """Whether `key` is a state key of the old layout (not a stream alertd reads or fills)."""
    if key in streams or not key.startswith(key_prefix) or "{" in key:
        return False
    rest = key[len(key_prefix) :]
    return rest in OLD_NAMES or rest.startswith(OLD_ROOTS)


async def migrate_unpartitioned(redis: Redis, key_prefix: str, streams: set[str]) -> int:
    """Rename old-layout state keys into partition 0; how many were moved."""
    target = keys.state_prefix(key_prefix)
    done = keys.migrated(target)
    if await redis.exists(done):
        return 0
    moved = kept = 0
    async for raw in redis.scan_iter(match=f"{key_prefix}*", count=SCAN_COUNT):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not old_state_key(key, key_prefix, streams):
            continue
        new = target + key[len(key_prefix) :]
        try:
            if await redis.renamenx(key, new):
                moved += 1
            else:
                kept += 1
        except ResponseError:
            continue  # another replica moved it first
    await redis.set(done, "1")
    if moved or kept:
        log.warning(
            "state of an earlier version moved into partition 0",
            moved=moved,
            left_in_place=kept,
            prefix=key_prefix,
        )
    return moved
