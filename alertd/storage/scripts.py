"""The Lua scripts under `alertd/storage/lua/`, read once from the package.

Each script's header comment says what it takes in KEYS and ARGV and what it
answers; each is called through one method of the class that owns its keys
(AlertStore, RedisWindows, Dispatcher, Outbox). redis-py loads a script again
after NOSCRIPT (a restarted or failed-over Redis) on a direct call; a
pipeline's NOSCRIPT is an error its caller retries (`load_all` first).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

NAMES = (
    "apply_alert_changes",
    "claim_groups",
    "commit_groups",
    "due_alerts",
    "enqueue_if",
    "enqueue_once",
    "hold_partition",
    "merge_windows",
    "prune_consumers",
    "release_partition",
    "reschedule_groups",
    "touch_entries",
)


@cache
def lua(name: str) -> str:
    """The text of script `name` (without `.lua`)."""
    return files("alertd.storage").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


async def load_all(redis: Any) -> None:
    """Load every script (on every master of a cluster), so pipelines find them."""
    for name in NAMES:
        await redis.script_load(lua(name))


def is_noscript(exc: BaseException) -> bool:
    """A script missing from Redis's cache (a restart or a failover emptied it)."""
    return isinstance(exc, NoScriptError) or (
        isinstance(exc, ResponseError) and str(exc).startswith("NOSCRIPT")
    )
