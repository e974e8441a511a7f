"""The Lua scripts under `alertd/storage/lua/`, read once from the package.

Each script's header comment says what it takes in KEYS and ARGV and what it
answers; each is called through one method of the class that owns its keys
(AlertStore, RedisWindows, Dispatcher, Outbox, Ownership, History,
RateLimiter). redis-py loads a script again after NOSCRIPT (a restarted or
failed-over Redis), in a pipeline as on a direct call.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua(name: str) -> str:
    """The text of script `name` (without `.lua`)."""
    return files("alertd.storage").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
