"""structlog setup: one JSON object per line on stdout (or console for humans).

A last processor scrubs secrets: URL passwords anywhere, and every secret value
the loaded configuration holds (SMTP passwords, signing secrets, Slack URLs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
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


def _json(event: Any, **_: Any) -> str:
    """orjson for the log lines: several times faster than json.dumps at a line per alert."""
    return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


def configure(
    level: str = "info",
    fmt: str = "json",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up logging; `stream` pins the output (default: sys.stdout as it is at each call)."""
    SCRUBBER.secrets = [s for s in secrets if s]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_json)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SCRUBBER,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
