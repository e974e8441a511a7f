"""Repeated errors are logged once per interval with a count, never as a traceback flood."""

from __future__ import annotations

import io
import logging

import structlog
from structlog.testing import capture_logs

from alertd.logthrottle import Throttle, ThrottledLog, _StdlibFilter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestThrottledLog:
    """A loop failing 1,000 times a minute writes one line, then one saying how many more."""

    def test_one_line_per_interval_with_the_count(self) -> None:
        clock = FakeClock()
        throttled = ThrottledLog(structlog.get_logger("test"))
        throttled.throttle = Throttle(60.0, clock)
        with capture_logs() as logs:
            for _ in range(1000):
                throttled.warning("redis", "redis unavailable; retrying")
            clock.now += 61
            throttled.warning("redis", "redis unavailable; retrying")
        assert [None, 999] == [entry.get("repeated") for entry in logs]

    def test_kinds_are_counted_apart(self) -> None:
        throttled = ThrottledLog(structlog.get_logger("test"))
        with capture_logs() as logs:
            for _ in range(10):
                throttled.warning("a", "first kind")
                throttled.error("b", "second kind")
        assert ["first kind", "second kind"] == [entry["event"] for entry in logs]


class TestLibraryLoggers:
    """asyncio's and aiohttp's own error records lose their traceback and repeat once."""

    def test_flood_of_tracebacks_becomes_one_line(self) -> None:
        out = io.StringIO()
        logger = logging.getLogger("test.throttled.lib")
        logger.propagate = False
        handler = logging.StreamHandler(out)
        logger.addHandler(handler)
        logger.addFilter(_StdlibFilter(Throttle(60.0)))
        try:
            for _ in range(500):
                try:
                    raise OSError(24, "Too many open files")
                except OSError:
                    logger.exception("socket.accept() out of system resource")
        finally:
            logger.removeHandler(handler)
        lines = out.getvalue().splitlines()
        assert [
            "socket.accept() out of system resource: OSError: [Errno 24] Too many open files"
        ] == lines
