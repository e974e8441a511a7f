"""The Lua scripts under `alertd/storage/lua/`, read once from the package, and how a
pipeline of them runs.

Each script's header comment says what it takes in KEYS and ARGV and what it
answers; each is called through one method of the class that owns its keys
(AlertStore, RedisWindows, Dispatcher, Outbox, Ownership, History,
RateLimiter). A direct call is redis-py's (EVALSHA, loaded again after
NOSCRIPT). In a pipeline, redis-py would first ask `SCRIPT EXISTS` on every
execute: a round trip more on the path of every event batch. `queue` and
`execute` skip it: scripts are sent as EVALSHA, and what a restarted or
failed-over Redis refuses with NOSCRIPT is loaded and run again (only what it
refused: nothing of it ran).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_BY_SHA: dict[str, AsyncScript] = {}  # what a NOSCRIPT answer names, to load it again


@cache
def lua(name: str) -> str:
    """The text of script `name` (without `.lua`)."""
    return files("alertd.storage").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def queue(pipe: Pipeline, script: AsyncScript, keys: list[Any], args: list[Any]) -> None:
    """Queue a call of `script` on `pipe`; run the pipeline with `execute`."""
    _BY_SHA.setdefault(script.sha, script)
    pipe.evalsha(script.sha, len(keys), *keys, *args)


async def execute(pipe: Pipeline) -> list[Any]:
    """`pipe.execute()` for a pipeline with queued scripts: the first error is raised
    once the rest ran, as redis-py does.

    Calls refused with NOSCRIPT are run again once their scripts are loaded, after
    the calls that ran: a pipeline must not rely on the order of its scripts.
    """
    stack = list(pipe.command_stack)
    results: list[Any] = await pipe.execute(raise_on_error=False)
    refused = [
        i
        for i, r in enumerate(results)
        if isinstance(r, NoScriptError) and stack[i][0][1] in _BY_SHA
    ]
    if refused:
        shas = {stack[i][0][1] for i in refused}
        for sha in shas:
            pipe.script_load(_BY_SHA[sha].script)
        for i in refused:
            args, options = stack[i]
            pipe.execute_command(*args, **options)
        again = (await pipe.execute(raise_on_error=False))[len(shas) :]
        for i, result in zip(refused, again, strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results
