"""Repeated errors logged once per interval with a count, never a flood of tracebacks.

A loop that fails the same way many times a second (a full disk of file
descriptors, Redis refusing writes) would otherwise write a line, often a
traceback, per failure: hundreds of thousands of lines that bury the one that
says why. `Throttle` lets the first occurrence of each kind through, then one
line per interval saying how many were held back.

`throttle_stdlib_loggers` applies the same to the libraries' own loggers
(asyncio's accept loop, aiohttp's request parser), which log with tracebacks
through the standard `logging` module, bypassing structlog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

INTERVAL_S = 60.0
MAX_KINDS = 1000  # kinds tracked at once; more (unbounded text) reset the table


class Throttle:
    """Decides, per kind of error, whether to log it now and how many were held back."""

    def __init__(
        self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, kind: str) -> int | None:
        """None: hold this one back. Else log it, noting the returned count held since."""
        now = self.clock()
        if now < self._next.get(kind, -1.0):
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        if len(self._next) >= MAX_KINDS and kind not in self._next:
            self._next.clear()
            self._held.clear()
        self._next[kind] = now + self.interval_s
        return self._held.pop(kind, 0)


class ThrottledLog:
    """A structlog logger's warning/error, each kind at most once per interval."""

    def __init__(self, log: Any, interval_s: float = INTERVAL_S) -> None:
        self.log = log
        self.throttle = Throttle(interval_s)

    def warning(self, kind: str, event: str, **kw: Any) -> None:
        self._emit(self.log.warning, kind, event, kw)

    def error(self, kind: str, event: str, **kw: Any) -> None:
        self._emit(self.log.error, kind, event, kw)

    def exception(self, kind: str, event: str, **kw: Any) -> None:
        """An error with the traceback of the exception being handled (once per interval)."""
        self._emit(self.log.error, kind, event, {**kw, "exc_info": True})

    def _emit(self, method: Any, kind: str, event: str, kw: dict[str, Any]) -> None:
        held = self.throttle.allow(kind)
        if held is None:
            return
        if held:
            kw["repeated"] = held
            kw["interval_s"] = self.throttle.interval_s
        method(event, **kw)


class _StdlibFilter(logging.Filter):
    """Throttles a library logger's records by message template; keeps one line each."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__()
        self.throttle = throttle

    def filter(self, record: logging.LogRecord) -> bool:
        kind = f"{record.name}:{record.levelno}:{record.msg}"
        held = self.throttle.allow(kind)
        if held is None:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            # The exception's one-line text says what happened; its traceback is the
            # library's internals, many lines per occurrence.
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it in the last interval)"
            record.args = None
        return True


_THROTTLED: set[str] = set()


def throttle_stdlib_loggers(
    names: tuple[str, ...] = ("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.access"),
    interval_s: float = INTERVAL_S,
) -> None:
    """Install the throttle on those loggers once per process."""
    for name in names:
        if name not in _THROTTLED:
            logging.getLogger(name).addFilter(_StdlibFilter(Throttle(interval_s)))
            _THROTTLED.add(name)
