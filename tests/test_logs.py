"""Logs: one JSON object per line with timestamp, level, event; secrets never appear."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Iterator

import orjson
import pytest
import structlog

from alertd.logs import configure


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class TestJsonLogs:
    """Operators' log pipelines get parseable lines without secrets."""

    def test_line_shape_and_scrubbing(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure("info", "json", secrets=["s3cr3t-value"])
        structlog.get_logger().error(
            "delivery failed",
            channel="ops",
            error="login with s3cr3t-value refused",
            url="redis://user:pa55word@redis:6379/0",
            nested={"k": ["s3cr3t-value"]},
        )
        line = capsys.readouterr().out.strip().splitlines()[-1]
        record = orjson.loads(line)
        assert "delivery failed" == record["event"]
        assert "error" == record["level"]
        assert record["timestamp"].endswith("Z")
        assert "ops" == record["channel"]
        assert "s3cr3t-value" not in line
        assert "pa55word" not in line

    def test_level_filter(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure("warning", "json")
        structlog.get_logger().info("quiet")
        structlog.get_logger().warning("loud")
        out = capsys.readouterr().out
        assert "quiet" not in out
        assert "loud" in out


class TestRepeats:
    """A warning repeating with the same context is written once per window, then counted."""

    def test_once_per_window_with_count(self) -> None:
        from alertd.logs import RepeatLimiter

        now = [0.0]
        limiter = RepeatLimiter(window_s=30, clock=lambda: now[0])
        kept = []
        for t in [0, 1, 2, 3, 31, 32]:
            now[0] = t
            event = {"event": "outbox unavailable", "channel": "ops", "error": "ConnectionError"}
            with contextlib.suppress(structlog.DropEvent):
                kept.append((t, limiter(None, "warning", event).get("repeated")))
        other = limiter(None, "warning", {"event": "outbox unavailable", "channel": "mail"})
        info = [limiter(None, "info", {"event": "notified"}) for _ in range(3)]

        assert [(0, None), (31, 3)] == kept
        assert "repeated" not in other
        assert 3 == len(info)


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


class TestDaemonWriter:
    """The daemon writes the lines of one turn of its event loop together, and none is lost."""

    async def test_a_turns_lines_go_out_in_one_write_at_the_next_turn(self) -> None:
        out = _CountingStream()
        configure("info", "json", stream=out, daemon=True)
        log = structlog.get_logger()
        for i in range(3):
            log.info("alert fired", n=i)
        assert "" == out.getvalue()  # still this turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [0, 1, 2] == [orjson.loads(line)["n"] for line in out.getvalue().splitlines()]
        assert 1 == out.writes

    def test_without_an_event_loop_a_line_goes_out_at_once(self) -> None:
        out = _CountingStream()
        configure("info", "json", stream=out, daemon=True)
        structlog.get_logger().warning("config warning")
        assert "config warning" == orjson.loads(out.getvalue())["event"]
