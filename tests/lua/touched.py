"""What Lua scripts touched, as Redis saw them run: the keys named by every command a
script called (MONITOR, then COMMAND GETKEYS) and the KEYS its calls declared.

Redis does not hold a script to the keys it declares: a script may name any key of its
node (any of its slot, for a `#!lua` script on a Cluster: Redis 7 refuses only other
slots), so a key built inside Lua runs unnoticed until a Cluster puts it elsewhere.
Watching the commands is how a test sees every key a script touched, whatever its text.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis

_LINE = re.compile(rb"^\S+ \[\d+ ([^\]]*)\] (.*)$", re.S)
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


@dataclass
class Touched:
    declared: set[bytes] = field(default_factory=set)  # KEYS of every EVAL/EVALSHA seen
    touched: set[bytes] = field(default_factory=set)  # keys of every command Lua called

    @property
    def undeclared(self) -> set[bytes]:
        return self.touched - self.declared


def _unescape(arg: bytes) -> bytes:
    """An argument as MONITOR quotes it (sdscatrepr), back to its bytes."""
    out, i = bytearray(), 0
    while i < len(arg):
        if arg[i : i + 1] != b"\\":
            out += arg[i : i + 1]
            i += 1
        elif arg[i + 1 : i + 2] == b"x":
            out.append(int(arg[i + 2 : i + 4], 16))
            i += 4
        else:
            nxt = arg[i + 1 : i + 2]
            out += _ESCAPES.get(nxt, nxt)
            i += 2
    return bytes(out)


def _parse(line: bytes) -> tuple[bytes, list[bytes]]:
    """(client, command arguments) of one MONITOR line."""
    m = _LINE.match(line)
    assert m is not None, line
    return m.group(1), [_unescape(a) for a in _ARG.findall(m.group(2))]


@asynccontextmanager
async def watch(redis: aioredis.Redis) -> AsyncIterator[Touched]:
    """Everything run on `redis` inside the block, as Touched once the block is left."""
    seen = Touched()
    marker = f"watched-{uuid.uuid4()}".encode()
    commands: list[tuple[bytes, list[bytes]]] = []
    async with redis.monitor() as monitor:
        yield seen
        await redis.echo(marker)
        assert monitor.connection is not None
        while True:
            raw = await monitor.connection.read_response()
            client, args = _parse(raw if isinstance(raw, bytes) else raw.encode())
            if args[:2] == [b"echo", marker] or args[:2] == [b"ECHO", marker]:
                break
            commands.append((client, args))
    pipe = redis.pipeline(transaction=False)
    for client, args in commands:
        name = args[0].lower()
        if client == b"lua":
            pipe.command_getkeys(*args)
        elif name in (b"eval", b"evalsha"):
            seen.declared.update(args[3 : 3 + int(args[2])])
    for found in await pipe.execute():  # redis-py answers COMMAND GETKEYS in str
        seen.touched.update(k.encode() if isinstance(k, str) else k for k in found)
