"""Connection-level protection of the HTTP listener: what happens before a request exists.

- A connection must finish its first request's headers within HEADER_TIMEOUT_S, and
  an idle keep-alive connection is closed after KEEPALIVE_S (aiohttp's own timer, which
  also runs while a later request's headers are incomplete).
- At most `connection_cap()` connections are open at once, derived from the file
  descriptor limit so the daemon keeps descriptors for Redis, SMTP and webhooks. When
  full, the oldest connection that has no request in progress is closed to make room
  (half-open clients go first); when every one is busy, the newcomer is closed.
- A request aiohttp's parser refuses (an over-long header or request line, a bad method)
  is answered as JSON `{"error", "details"}` like every other error, and logged one
  line per kind per interval (alertd.logthrottle), not as a traceback per request.
"""

from __future__ import annotations

import asyncio
import resource
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from alertd.http.common import error_reply
from alertd.logthrottle import ThrottledLog

log = structlog.get_logger("alertd.http")
throttled = ThrottledLog(log)

HEADER_TIMEOUT_S = 10.0
KEEPALIVE_S = 15.0
MAX_CONNECTIONS = 1024
# Descriptors kept for everything but the listener: Redis pools, channel connections,
# config files, the log.
RESERVED_FDS = 128


def connection_cap() -> int:
    """How many HTTP connections may be open at once under this process's fd limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, (soft - RESERVED_FDS) // 2))


class Connections:
    """The open connections, oldest first, and the cap they are held to."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[GuardedHandler, None] = {}  # insertion order = age
        self.evicted = 0
        self.refused = 0

    def admit(self, handler: GuardedHandler) -> bool:
        """Make room for `handler` if needed; False when it must be closed."""
        if len(self.open) >= self.cap:
            idle = next((h for h in self.open if not h.busy), None)
            if idle is None:
                self.refused += 1
                throttled.warning("refused", "http connection refused: every slot is busy")
                return False
            self.evicted += 1
            throttled.warning(
                "evicted",
                "http connections at their cap; closing the oldest idle one",
                cap=self.cap,
            )
            self.forget(idle)
            idle.force_close()
        self.open[handler] = None
        return True

    def forget(self, handler: GuardedHandler) -> None:
        self.open.pop(handler, None)


class GuardedHandler(RequestHandler):
    """aiohttp's protocol with a header deadline, a place in Connections, JSON errors."""

    __slots__ = ("_connections", "_header_timer")

    def __init__(self, server: web.Server, connections: Connections, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._connections = connections
        self._header_timer: asyncio.TimerHandle | None = None

    @property
    def busy(self) -> bool:
        """A request is being handled (not merely awaited): not to be cut off."""
        return bool(getattr(self, "_request_in_progress", False))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._connections.admit(self):
            self.force_close()
            return
        self._header_timer = self._loop.call_later(HEADER_TIMEOUT_S, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._request_count == 0:  # not one complete request line and headers yet
            throttled.warning("header-timeout", "http client sent no complete request in time")
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connections.forget(self)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The parser's (or a broken handler's) error as JSON, logged without a traceback."""
        kind = type(exc).__name__ if exc is not None else str(status)
        throttled.warning(
            f"bad-request:{kind}", "http request refused by the parser", status=status, error=kind
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        try:
            phrase = HTTPStatus(status).phrase.lower()
        except ValueError:
            phrase = "error"
        details = [_first_line(message or (str(exc) if exc else ""))] if status < 500 else []
        resp = error_reply(status, phrase, [d for d in details if d])
        resp.force_close()
        return resp


def _first_line(text: str) -> str:
    """A parser message is one line of reason and then the offending bytes: keep the reason."""
    return text.strip().splitlines()[0][:200] if text.strip() else ""


class GuardedSite(web.TCPSite):
    """A TCP site whose connections are GuardedHandlers sharing one Connections."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, cap: int) -> None:
        super().__init__(runner, host, port)
        self.connections = Connections(cap)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")
        connections = self.connections

        def protocol() -> GuardedHandler:
            # The Server's own arguments (timeouts, limits, access log) as it would pass them.
            return GuardedHandler(server, connections, loop=server._loop, **server._kwargs)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
