"""The aiohttp application: routes, and the middlewares every answer passes through.

Middlewares, outermost first:
    errors   every failure becomes JSON {"error", "details"}; nothing unexpected leaks
    auth     /api/v1 and /api/v2: bearer token, or with no token reads open and writes
             only from loopback or http.trusted_networks
    size     bodies over 1 MiB are refused from their Content-Length before any is read
    browser  what a web page elsewhere could make a browser send (alertd.http.browser):
             a body must be application/json, no cross-site Origin / Sec-Fetch-Site;
             with no token, the Host must be one alertd answers to (DNS rebinding)

Connections themselves (header deadline, keep-alive, a cap) are alertd.http.guard's.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from alertd.errors import EventError, NotFoundError
from alertd.http import console, health, v1, v2
from alertd.http.browser import allowed_hosts, browser_decision
from alertd.http.common import (
    APP_KEY,
    MAX_BODY_BYTES,
    ApiError,
    Denial,
    app_of,
    error_reply,
    reply,
)
from alertd.http.guard import KEEPALIVE_S, GuardedSite, connection_cap
from alertd.http.openapi import openapi_document
from alertd.logthrottle import throttle_stdlib_loggers

if TYPE_CHECKING:
    from alertd.app import App

log = structlog.get_logger("alertd.http")

API_PREFIXES = ("/api/v1", "/api/v2")
SAFE_METHODS = frozenset({"GET", "HEAD"})
SHUTDOWN_TIMEOUT_S = 5.0


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(remote: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not remote:
        return None
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_loopback(remote: str | None) -> bool:
    addr = _address(remote)
    return addr is not None and addr.is_loopback


def is_trusted(remote: str | None, networks: tuple[Network, ...]) -> bool:
    """From loopback or one of `networks` (http.trusted_networks)."""
    addr = _address(remote)
    if addr is None:
        return False
    return addr.is_loopback or any(addr in net for net in networks)


def bearer_matches(authorization: str | None, token: str) -> bool:
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _is_api(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in API_PREFIXES)


def auth_decision(
    method: str,
    path: str,
    remote: str | None,
    authorization: str | None,
    token: str,
    trusted: tuple[Network, ...] = (),
) -> Denial | None:
    """None when the request may go on; else why not. Pure, so tested directly."""
    if not _is_api(path):
        return None
    if token:
        if bearer_matches(authorization, token):
            return None
        return Denial(401, "unauthorized", ("send Authorization: Bearer <http.token>",))
    if method.upper() in SAFE_METHODS or is_trusted(remote, trusted):
        return None
    return Denial(
        403,
        "forbidden",
        (
            "with no http.token set, only GET requests are accepted from addresses"
            " outside loopback and http.trusted_networks",
        ),
    )


# --- middlewares -----------------------------------------------------------------

_REASONS = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers: dict[str, str] = {}
    details: list[str] = []
    if exc.status == 404:
        details = [f"no route {request.path}"]
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        headers["Allow"] = allowed
        details = [f"{request.method} is not allowed on {request.path}; allowed: {allowed}"]
    elif exc.status == 413:
        details = [f"the limit is {MAX_BODY_BYTES} bytes"]
    error = _REASONS.get(exc.status, (exc.reason or "error").lower())
    return error_reply(exc.status, error, details, headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_reply(exc.status, exc.error, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(request, exc)
    except NotFoundError as exc:
        return error_reply(404, "not found", [str(exc)])
    except EventError as exc:
        return error_reply(400, "invalid events", [str(exc)])
    except RedisError as exc:
        log.warning("redis unavailable", path=request.path, error=type(exc).__name__)
        return error_reply(503, "redis unavailable", [type(exc).__name__])
    except Exception:
        log.exception("http handler failed", method=request.method, path=request.path)
        return error_reply(500, "internal error")


@web.middleware
async def browser_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = app_of(request).config.settings
    denial = browser_decision(
        request.method,
        request.path,
        request.headers,
        settings.http.external_url,
        allowed_hosts(settings.http.listen, settings.http.external_url)
        if not settings.http.token.get_secret_value()
        else None,
    )
    if denial is not None:
        raise ApiError(denial.status, denial.error, list(denial.details))
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Read at request time: a reload may set, change or clear the token.
    http = app_of(request).config.settings.http
    denial = auth_decision(
        request.method,
        request.path,
        request.remote,
        request.headers.get("Authorization"),
        http.token.get_secret_value(),
        http.trusted,
    )
    if denial is not None:
        headers = {"WWW-Authenticate": 'Bearer realm="alertd"'} if denial.status == 401 else {}
        raise ApiError(denial.status, denial.error, list(denial.details), headers)
    return await handler(request)


@web.middleware
async def size_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "request body too large", [f"the limit is {MAX_BODY_BYTES} bytes"])
    return await handler(request)


# --- the application -------------------------------------------------------------


async def openapi(request: web.Request) -> web.Response:
    return reply(openapi_document())


def build_http(app: App) -> web.Application:
    """The aiohttp application serving `app` (not yet listening)."""
    http = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[errors_middleware, auth_middleware, size_middleware, browser_middleware],
    )
    http[APP_KEY] = app
    health.add_routes(http.router)
    v1.add_routes(http.router)
    v2.add_routes(http.router)
    http.router.add_get("/api/v1/openapi.json", openapi)
    console.add_routes(http.router)
    return http


async def start_http(app: App) -> web.AppRunner:
    """Listen on `http.listen`; App.stop calls `runner.cleanup()`."""
    throttle_stdlib_loggers()
    runner = web.AppRunner(
        build_http(app),
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        keepalive_timeout=KEEPALIVE_S,
    )
    await runner.setup()
    s = app.config.settings.http
    try:
        await GuardedSite(runner, s.host, s.port, connection_cap()).start()
    except OSError:
        await runner.cleanup()  # the caller never gets this runner to clean up
        raise
    log.info("http listening", listen=s.listen)
    return runner
