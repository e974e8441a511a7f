"""The daemon's Redis connections: one Redis, a Sentinel set-up or a Cluster
(`redis.mode`), through redis-py's own clients; and a write timeout without a
task per command.

redis-py bounds a write by `socket_timeout` with `asyncio.wait_for`, which on
Python 3.11 wraps every command in a new task: about a tenth of alertd's CPU
under load (bench/). These connections bound the write with
`asyncio.timeout` instead: the same limit, the same error, no task. Reads
keep redis-py's own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Iterable
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import (
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.sentinel import Sentinel
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from alertd.settings import RedisSettings


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


def connect(settings: RedisSettings, **options: Any) -> Redis:
    """A client for `settings.mode`; `options` are redis-py connection options.

    A Cluster client follows MOVED/ASK and re-learns the topology after a failover;
    a Sentinel client asks the Sentinels for the master on every new connection.
    Both answer the same commands as a `Redis` (so callers type them as one).
    """
    if settings.mode == "cluster":
        return cast(Redis, RedisCluster.from_url(settings.url, **options))
    if settings.mode == "sentinel":
        # The URL gives only the database, credentials and TLS: the address is the
        # Sentinels' to tell.
        conn = {k: v for k, v in parse_url(settings.url).items() if k not in ("host", "port")}
        sentinel = Sentinel(
            [_host_port(a) for a in settings.sentinels],
            socket_connect_timeout=options.get("socket_connect_timeout", 3),
            socket_timeout=options.get("socket_connect_timeout", 3),
        )
        return sentinel.master_for(settings.master, redis_class=Redis, **conn, **options)
    return without_write_tasks(Redis.from_url(settings.url, **options))


async def close(redis: Redis) -> None:
    """Close a client of `connect` or `pinned`, and the Sentinel clients behind it."""
    await redis.aclose()
    manager = (
        getattr(redis.connection_pool, "sentinel_manager", None) if not is_cluster(redis) else None
    )
    for sentinel in getattr(manager, "sentinels", []):
        await sentinel.aclose()


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


def pinned(redis: Redis, key: str) -> Redis:
    """A plain client for whichever master serves `key`'s slot: `redis` itself unless it
    is a Cluster client.

    redis-py's Cluster pipelines refuse scripts, and alertd's state writes are scripts
    in pipelines; every key of a partition shares one slot, so a partition's work runs
    on a plain connection to that slot's master instead. Each new connection asks the
    Cluster where the slot is now, and a MOVED or READONLY answer (the slot moved, the
    master was demoted) drops the connection, so a failover is followed without a
    restart.
    """
    if not isinstance(redis, RedisCluster):
        return redis
    pool = _SlotPool(redis, key, **_plain_options(redis))
    return Redis.from_pool(pool)


class _SlotConnection(_Connection):
    connection_pool: _SlotPool

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_connected:
            self.host, self.port = await self.connection_pool.master_address()
        await super().connect_check_health(*args, **kwargs)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if str(exc).startswith(("MOVED", "READONLY", "CLUSTERDOWN")):
                await self.disconnect()  # the next command asks where the slot is now
            raise


class _SlotPool(ConnectionPool):  # type: ignore[misc]
    def __init__(self, cluster: RedisCluster, key: str, **options: Any) -> None:
        options["connection_class"] = _SlotConnection
        super().__init__(**options)
        self.cluster = cluster
        self.key = key
        self.slot = key_slot(key.encode())
        self._address: tuple[str, int] | None = None
        self._refreshed = 0.0
        self._refreshing = asyncio.Lock()

    def make_connection(self) -> Any:
        conn = super().make_connection()
        conn.connection_pool = self
        return conn

    async def master_address(self) -> tuple[str, int]:
        # A new connection, maybe after a failure: the topology may have changed. Ask
        # the Cluster again (any node), at most every 250 ms.
        async with self._refreshing:
            if self._address is None or time.monotonic() - self._refreshed > 0.25:
                # Then the last one it is. redis-py's Cluster client may also fail with an
                # AttributeError when a failover closes a connection under it.
                with contextlib.suppress(RedisError, OSError, AttributeError):
                    self._address = await self._ask()
                self._refreshed = time.monotonic()
        if self._address is None:
            raise RedisConnectionError(f"no master known for {self.key!r}")
        return self._address

    async def _ask(self) -> tuple[str, int] | None:
        slots = await self.cluster.cluster_slots(target_nodes=RedisCluster.RANDOM)
        for (start, end), shard in slots.items():
            if int(start) <= self.slot <= int(end):
                host, port = shard["primary"]
                return str(host), int(port)
        return None


def _plain_options(cluster: RedisCluster) -> dict[str, Any]:
    """The Cluster client's connection options that a plain connection takes."""
    cluster_options = cluster.get_connection_kwargs()
    options = {
        k: v
        for k, v in cluster_options.items()
        if k in _CONNECTION_OPTIONS and k not in ("host", "port", "retry")
    }
    connection_class = cluster_options.get("connection_class")
    if isinstance(connection_class, type) and issubclass(connection_class, SSLConnection):
        raise ValueError("TLS to a Redis Cluster is not supported yet")
    return options


_CONNECTION_OPTIONS = frozenset(inspect.signature(Connection.__init__).parameters) | frozenset(
    inspect.signature(ConnectionPool.__init__).parameters
)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


_BULK_HEADERS: dict[int, bytes] = {}  # of short arguments' lengths: the common ones


def pack_command(args: list[bytes]) -> bytes:
    """A command in the Redis protocol, its arguments bytes already. redis-py packs
    argument by argument through its encoder: for the XACK of a thousand ids, or the
    hundred keys of a merge, that costs more than Redis's work."""
    headers = _BULK_HEADERS
    out = [b"*%d" % len(args)]
    for arg in args:
        header = headers.get(len(arg))
        if header is None:
            header = b"\r\n$%d\r\n" % len(arg)
            if len(arg) < 1024:
                headers[len(arg)] = header
        out.append(header)
        out.append(arg)
    out.append(b"\r\n")
    return b"".join(out)
