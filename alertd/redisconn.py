"""The daemon's Redis connections: a write timeout without a task per command.

redis-py bounds a write by `socket_timeout` with `asyncio.wait_for`, which on
Python 3.11 wraps every command in a new task: about a tenth of alertd's CPU
under load (bench/). These connections bound the write with
`asyncio.timeout` instead: the same limit, the same error, no task. Reads
keep redis-py's own timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import TimeoutError as RedisTimeoutError


class _WriteTimeout:
    socket_timeout: float | None

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        send = super().send_packed_command  # type: ignore[misc]
        if not timeout:
            await send(command, check_health)
            return
        self.socket_timeout = None  # redis-py's own wait_for is skipped when unset
        try:
            async with asyncio.timeout(timeout):
                await send(command, check_health)
        except TimeoutError:
            # redis-py dropped the connection on the cancel, as on its own timeout
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class _Connection(_WriteTimeout, Connection):  # type: ignore[misc]
    pass


class _SSLConnection(_WriteTimeout, SSLConnection):  # type: ignore[misc]
    pass


class _UnixConnection(_WriteTimeout, UnixDomainSocketConnection):  # type: ignore[misc]
    pass


_FASTER: dict[type[Any], type[Any]] = {
    Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


def without_write_tasks(redis: Redis) -> Redis:
    """`redis`, its pool making these connections (call before its first command)."""
    pool = redis.connection_pool
    pool.connection_class = _FASTER.get(pool.connection_class, pool.connection_class)
    return redis
