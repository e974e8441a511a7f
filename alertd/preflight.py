"""What `alertd run` checks and says before and while it waits on the outside world.

- The HTTP port is tried before anything is written to Redis: a port in use
  stops the start with one line (and no consumer group created for nothing).
- Redis is named (address with its password masked, and where the address
  came from) when it cannot be reached at start, once when it goes away and
  once when it is back; the components' own retries stay quiet meanwhile
  (alertd.logs limits their repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time

import structlog
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError

from alertd.errors import AlertdError
from alertd.redisurl import shown
from alertd.settings import Settings, env_source

log = structlog.get_logger("alertd.preflight")

PING_TIMEOUT_S = 3.0
WATCH_INTERVAL_S = 2.0


def _where(key: str, config_name: str) -> str:
    """Where a setting came from: "ALERTD_HTTP_LISTEN" or "http.listen in alertd.toml"."""
    return env_source(key) or f"{key} in {config_name}"


def redis_target(settings: Settings, config_name: str) -> dict[str, str]:
    """Log fields naming the Redis alertd uses: masked URL and where it was set."""
    return {"redis": shown(settings.redis.url), "redis_from": _where("redis.url", config_name)}


def listen_error(settings: Settings, config_name: str, exc: OSError) -> AlertdError:
    """One line for a listen address alertd cannot bind, with what to do."""
    listen = settings.http.listen
    source = _where("http.listen", config_name)
    change = f"set {source} to a free HOST:PORT"
    if exc.errno == errno.EADDRINUSE:
        why = f"port {settings.http.port} is in use (another alertd running? `ss -ltnp` shows who)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need root)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"{settings.http.host} is not an address of this machine"
    elif isinstance(exc, socket.gaierror):
        why = f"host {settings.http.host!r} is unknown"
    else:
        why = exc.strerror or str(exc)
    return AlertdError(f"cannot listen on {listen} (from {source}): {why}; {change}")


def check_listen(settings: Settings, config_name: str) -> None:
    """Bind the HTTP address once and let go; AlertdError when the server could not."""
    host, port = settings.http.host, settings.http.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            # As aiohttp binds: a port in TIME_WAIT from the last run is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except OSError as exc:
        raise listen_error(settings, config_name, exc) from None


async def _ping(redis: Redis) -> tuple[str, bool]:
    """Why Redis does not answer ("" when it does: one line, no secret), and whether it
    refused the login rather than not answering."""
    try:
        await asyncio.wait_for(redis.ping(), PING_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {PING_TIMEOUT_S:g}s", False
    except (RedisError, OSError) as exc:
        why = shown(" ".join(str(exc).split())) or type(exc).__name__
        return why, isinstance(exc, AuthenticationError)
    return "", False


class RedisWatch:
    """Logs when Redis stops and starts answering, naming it; nothing while that holds."""

    def __init__(self, redis: Redis, target: dict[str, str]) -> None:
        self.redis = redis
        self.target = target
        self.down_since: float | None = None

    async def check(self) -> None:
        error, refused = await _ping(self.redis)
        if error and self.down_since is None:
            self.down_since = time.monotonic()
            log.error(
                "Redis refuses alertd's login; check the user and password in the URL"
                if refused
                else "cannot reach Redis; alertd keeps trying and resumes when it answers",
                error=error,
                **self.target,
            )
        elif not error and self.down_since is not None:
            down_s = round(time.monotonic() - self.down_since, 1)
            self.down_since = None
            log.info("Redis answers again", down_s=down_s, **self.target)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_INTERVAL_S):
                    await stopping.wait()
            if not stopping.is_set():
                await self.check()
