"""Hardening (issue 19): regular expressions in linear time, clear errors for bad input.

Each finding is reproduced against a real daemon (real Redis, real HTTP API, real webhook).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from alertd.matchers import parse_matcher, parse_matchers
from alertd.settings import load_config
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_e2e import ROUTE, hook

PATHOLOGICAL = [
    "(a+)+$",
    "(a|aa)*b",
    "(a*)*b",
    "(a|a?)+$",
    "(.*a){3}",
    "(x+x+)+y",
    "(\\w+\\s?)+$",
    "^(([a-z])+.)+[A-Z]([a-z])+$",
]
KIB_VALUE = "a" * 1023 + "!"  # 1024 characters: the longest label value

RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["service"]
critical = "> 10"
"""


def base_url(app: Any) -> str:
    return f"http://{app.config.settings.http.listen}"


async def live_latencies_s(url: str, stop: asyncio.Event) -> list[float]:
    """Time /health/live answers until `stop` is set (at least one probe)."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set() or not latencies:
            started = time.perf_counter()
            async with session.get(f"{url}/health/live") as resp:
                assert 200 == resp.status
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    return latencies


class TestRegexLinearTime:
    """A pathological pattern against a 1 KiB label value costs microseconds, not seconds."""

    @pytest.mark.parametrize("pattern", PATHOLOGICAL)
    def test_pathological_pattern_matches_fast(self, pattern: str) -> None:
        matcher = parse_matcher("service", "~" + pattern)
        matcher.matches({"service": KIB_VALUE})  # warm: RE2 builds its DFA lazily
        batches = []
        for _ in range(5):  # the best of 5: a busy machine may pause any one batch
            started = time.perf_counter()
            for _ in range(10):
                matcher.matches({"service": KIB_VALUE})
            batches.append((time.perf_counter() - started) / 10)
        per_match_s = min(batches)
        assert per_match_s < 0.0005, f"{pattern}: {per_match_s * 1000:.3f} ms per match"

    def test_full_match_semantics_are_unchanged(self) -> None:
        """`~api|web` matches the whole value, as before: not a prefix, not a substring."""
        m = parse_matchers({"service": "~api|web", "env": "!~prod.*"})
        actual = [
            all(x.matches(labels) for x in m)
            for labels in (
                {"service": "api", "env": "dev"},
                {"service": "apix", "env": "dev"},
                {"service": "web", "env": "production"},
                {"service": "xweb", "env": "dev"},
            )
        ]
        assert [True, False, False, False] == actual

    @pytest.mark.parametrize("pattern", ["(a)\\1", "(?=a)b", "(?<!x)y"])
    def test_unsupported_syntax_names_the_matcher(self, pattern: str) -> None:
        with pytest.raises(ValueError) as info:
            parse_matcher("service", "~" + pattern)
        message = str(info.value)
        assert "service" in message and repr(pattern) in message and "RE2" in message

    def test_check_refuses_a_backreference_in_a_rule_match(self, daemons: DaemonFactory) -> None:
        rules = RULES + 'match = { service = "~(a)\\\\1" }\n'
        cfg = daemons.write(rules=rules)
        with pytest.raises(Exception) as info:
            load_config(cfg)
        assert "match" in str(info.value) and "RE2" in str(info.value)


class TestRedosAgainstDaemon:
    """The issue's probe: a silence `~(a+)+$` and a 1 KiB label cannot freeze the daemon."""

    async def test_silence_regex_and_long_label_keep_daemon_live(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(rules=RULES, channels=hook(receiver), extra=ROUTE)
        app = await daemons.start(http=True)
        url = base_url(app)
        async with aiohttp.ClientSession() as session:
            body = {"matchers": {"service": "~(a+)+$"}, "duration": "1h", "createdBy": "probe"}
            async with session.post(f"{url}/api/v1/silences", json=body) as resp:
                assert 201 == resp.status
        stop = asyncio.Event()
        probe = asyncio.create_task(live_latencies_s(url, stop))
        for _ in range(20):
            await redis.xadd(
                "alertd:events", {"name": "queue_depth", "value": "50", "service": KIB_VALUE}
            )
        await wait_for(lambda: receiver.bodies("/hook"), timeout_s=30)
        stop.set()
        latencies = await probe
        alert = receiver.bodies("/hook")[0]["alerts"][0]
        assert KIB_VALUE == alert["labels"]["service"]
        # Before RE2 one such event froze the loop for seconds (26 characters: 2 s).
        assert max(latencies) < 1.0, f"/health/live took {max(latencies):.3f}s"

    async def test_api_refuses_a_lookahead_silence_with_the_matcher(
        self, daemons: DaemonFactory
    ) -> None:
        daemons.write(rules=RULES)
        app = await daemons.start(http=True)
        body = {"matchers": {"service": "~(?=a)b"}, "duration": "1h", "createdBy": "probe"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url(app)}/api/v1/silences", json=body) as resp,
        ):
            answer = await resp.json()
        assert 400 == resp.status
        assert any("service" in d and "RE2" in d for d in answer["details"]), answer


class TestSilenceDuration:
    """A silence duration too long for any clock is a 400 that says so, not a Python error."""

    async def test_huge_duration_is_a_clear_400(self, daemons: DaemonFactory) -> None:
        daemons.write(rules=RULES)
        app = await daemons.start(http=True)
        body = {"matchers": {"service": "api"}, "duration": "99999999999d", "createdBy": "probe"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url(app)}/api/v1/silences", json=body) as resp,
        ):
            answer = await resp.json()
        assert 400 == resp.status
        assert ["duration: duration '99999999999d' is too long (at most 999999999d)"] == [
            d for d in answer["details"] if d.startswith("duration")
        ]
        assert "Python" not in str(answer)


def invalid_reasons(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "alertd_events_invalid":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = sample.value
    return out


class TestInvalidReasons:
    """alertd_events_invalid_total files each bad event under what is wrong with it."""

    async def test_bad_label_name_and_unknown_field_are_told_apart(
        self, daemons: DaemonFactory, redis: aioredis.Redis
    ) -> None:
        daemons.write(rules=RULES)
        app = await daemons.start(http=True)
        await redis.xadd("alertd:events", {"data": '{"name": "x", "labels": {"bad-name": "1"}}'})
        await redis.xadd("alertd:events", {"data": '{"name": "x", "colour": "red"}'})
        await redis.xadd("alertd:events", {"data": '{"name": "x", "value": "high"}'})
        await redis.xadd("alertd:events", {"data": "{not json"})

        async def reasons() -> dict[str, float] | None:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{base_url(app)}/metrics") as resp,
            ):
                found = invalid_reasons(await resp.text())
            return found if sum(found.values()) >= 4 else None

        expected = {
            "invalid_labels": 1.0,
            "unknown_field": 1.0,
            "invalid_value": 1.0,
            "invalid_json": 1.0,
        }
        assert expected == await wait_for(reasons, timeout_s=20)
