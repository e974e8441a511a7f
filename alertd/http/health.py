"""Probes and metrics: /health, /health/live, /health/ready, /metrics; never authenticated."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from alertd import __version__
from alertd.http.common import app_of, reply
from alertd.logs import SCRUBBER
from alertd.model import rfc3339
from alertd.redact import redact

if TYPE_CHECKING:
    from alertd.app import App

PROBE_TIMEOUT_S = 1.0


def _why(exc: BaseException) -> str:
    """A one-line reason without secrets (a Redis URL may carry a password)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:g}s"
    text = redact(str(exc))[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def ping_redis(app: App) -> tuple[float | None, str]:
    """(latency in ms, "") when Redis answers PING in time, else (None, reason)."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(app.redis.ping(), PROBE_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        return None, _why(exc)
    return round((time.perf_counter() - started) * 1000, 2), ""


async def lag_and_pending(app: App) -> tuple[int | None, int | None]:
    try:
        return await asyncio.wait_for(app.lag_and_pending(), PROBE_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError):
        return None, None


def _last_error(error: str) -> str | None:
    return redact(error, SCRUBBER.secrets)[:500] if error else None


def channel_checks(app: App) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(app.channels):
        h = app.workers.health.get(name)
        enabled = app.channels[name].config.enabled
        out[name] = {
            "status": (h.status if h else "ok") if enabled else "disabled",
            "consecutive_failures": h.consecutive_failures if h else 0,
            "last_success": rfc3339(h.last_success) if h and h.last_success else None,
            # Why the latest failed delivery failed (kept after a success: status says whether
            # it still fails). Redacted again: an error text may echo a URL or a secret.
            "last_error": _last_error(h.last_error) if h else None,
        }
    return out


async def health(request: web.Request) -> web.Response:
    app = app_of(request)
    verdict = await app.watchdog.check()
    latency_ms, redis_error = await ping_redis(app)
    lag, pending = await lag_and_pending(app) if latency_ms is not None else (None, None)
    redis_check: dict[str, Any] = {
        "status": "ok" if latency_ms is not None and verdict.redis_ok else "down",
        "latency_ms": latency_ms,
        "writable": verdict.redis_ok,
    }
    if verdict.redis_error or redis_error:
        redis_check["error"] = verdict.redis_error or redis_error
    channels = channel_checks(app)
    if latency_ms is None or verdict.reason:
        status = "unhealthy"
    elif app.last_reload_error or any(
        c["status"] not in ("ok", "disabled") for c in channels.values()
    ):
        status = "degraded"
    else:
        status = "healthy"
    body = {
        "status": status,
        "timestamp": rfc3339(time.time()),
        "version": __version__,
        "uptime_s": round(time.time() - app.started_at, 3),
        "checks": {
            "redis": redis_check,
            "consumer": {
                "lag": lag,
                "pending": pending,
                # A group joined before Redis went away (or refused us) is not one we read.
                "joined": app.consumer.joined and verdict.redis_ok,
                "stalled_s": round(verdict.stalled_s, 1) if verdict.stalled_s else None,
            },
            "rules": {"loaded": len(app.config.rules), "last_reload_error": app.last_reload_error},
            "channels": channels,
        },
    }
    if verdict.reason:
        body["reason"] = verdict.reason
    return reply(body, status=503 if status == "unhealthy" else 200)


async def live(_: web.Request) -> web.Response:
    return reply({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    app = app_of(request)
    reason = ""
    if app.stopping.is_set():
        reason = "shutting down"
    else:
        # Not only "does Redis answer" but "can events be stored and are they": a PING
        # answers while Redis refuses every write (out of memory, read-only, ACL).
        verdict = await app.watchdog.check()
        if verdict.reason:
            reason = verdict.reason
        elif not app.consumer.joined:
            try:
                await asyncio.wait_for(app.consumer.join(), PROBE_TIMEOUT_S)
            except (RedisError, OSError, TimeoutError) as exc:
                reason = f"consumer group not joined ({_why(exc)})"
        if not reason and app.replication.waiting:
            reason = app.replication.waiting
        # Rules are loaded once a configuration is (zero rules is a valid configuration).
    if reason:
        return reply({"status": "not ready", "reason": reason}, status=503)
    return reply({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    app = app_of(request)
    lag, pending = await lag_and_pending(app)
    if lag is not None:
        app.metrics.consumer_lag.set(lag)
    if pending is not None:
        app.metrics.consumer_pending.set(pending)
    return web.Response(
        body=generate_latest(app.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/health", health)
    router.add_get("/health/live", live)
    router.add_get("/health/ready", ready)
    router.add_get("/metrics", metrics)
