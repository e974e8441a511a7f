"""structlog setup: one JSON object per line on stdout (or console for humans).

A last processor scrubs secrets: URL passwords anywhere, and every secret value
the loaded configuration holds (SMTP passwords, signing secrets, Slack URLs).
Warnings and errors that repeat with the same context (a Redis outage seen by
every component on every retry) are written once per REPEAT_WINDOW_S, the next
one carrying how many were left out. The console format writes colours only to
a terminal and nested values as `key=value` text, never as Python reprs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from alertd.redact import redact

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class SecretScrubber:
    """A structlog processor replacing known secrets in string values with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redact(value, self.secrets)
            elif isinstance(value, (dict, list)):
                event[key] = self._deep(value)
        return event

    def _deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, dict):
            return {k: self._deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._deep(v) for v in value]
        return value


SCRUBBER = SecretScrubber()

REPEAT_WINDOW_S = 30.0
# What makes two lines the same report; counters and waits (retry_in_s) may differ.
_SAME = ("channel", "error", "notification_id", "fingerprint", "rule", "stream_id", "group")
_QUIET_LEVELS = frozenset(("warning", "error"))
_MAX_TRACKED = 1000


class RepeatLimiter:
    """Drops a warning or error already written within `window_s` with the same context."""

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self.seen: dict[tuple[Any, ...], list[float]] = {}  # key -> [written at, left out]

    def __call__(
        self, _: Any, level: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if level not in _QUIET_LEVELS:
            return event
        key = (level, event.get("event"), *(str(event.get(k, "")) for k in _SAME))
        now = self.clock()
        entry = self.seen.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            raise structlog.DropEvent
        if entry is not None and entry[1]:
            event["repeated"] = int(entry[1])  # left out since this line was last written
        if len(self.seen) >= _MAX_TRACKED:
            self.seen.clear()
        self.seen[key] = [now, 0]
        return event


def _plain(value: Any) -> Any:
    """A nested value as text a person reads: {"a": 1} -> "a=1", lists joined by "; "."""
    if isinstance(value, dict):
        return " ".join(f"{k}={_nested(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(str(_plain(v)) for v in value)
    return value


def _nested(value: Any) -> str:
    text = str(_plain(value))
    return f"({text})" if isinstance(value, (dict, list, tuple)) else text


def _console_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, (dict, list, tuple)):
            event[key] = _plain(value)
    return event


def _json(event: Any, **_: Any) -> str:
    """orjson for the log lines: several times faster than json.dumps at a line per alert."""
    return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


class TurnWriter:
    """Writes log lines; inside an event loop, the lines of one turn of the loop go out
    in one write at the start of the next. A write and flush per line is a system call
    per line, and a storm logs three lines per alert. At most one turn's lines are in
    hand (lost only if the process is killed): written at exit too."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._scheduled = False
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        self._lines.append(message)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the line goes out now
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    log = debug = info = warn = warning = error = critical = exception = msg

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        out = self._stream if self._stream is not None else sys.stdout
        # A closed pipe loses the lines, not the daemon.
        with contextlib.suppress(OSError, ValueError):
            out.write("\n".join(lines) + "\n")
            out.flush()


def configure(
    level: str = "info",
    fmt: str = "json",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    daemon: bool = False,
) -> None:
    """Set up logging; `stream` pins the output (default: sys.stdout as it is at each call).

    `daemon` (alertd run, configured once): each logger is bound once, and the lines of
    a turn of the event loop are written together (TurnWriter)."""
    SCRUBBER.secrets = [s for s in secrets if s]
    renderers: list[structlog.types.Processor]
    if fmt == "console":
        out = stream if stream is not None else sys.stdout
        colors = bool(getattr(out, "isatty", lambda: False)())  # no ANSI codes in pipes, files
        renderers = [_console_values, structlog.dev.ConsoleRenderer(colors=colors)]
    else:
        renderers = [structlog.processors.JSONRenderer(serializer=_json)]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            RepeatLimiter(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SCRUBBER,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=(
            _constant(TurnWriter(stream)) if daemon else structlog.PrintLoggerFactory(stream)
        ),
        cache_logger_on_first_use=daemon,
    )


def _constant(writer: TurnWriter) -> Callable[..., TurnWriter]:
    return lambda *_: writer
