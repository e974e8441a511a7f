"""alertd.client: what a Python service publishes is what the daemon reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from alertd.client import apublish, publish
from alertd.errors import EventError
from alertd.events import parse_entry, stream_id_seconds
from alertd.model import Event
from tests.conftest import RedisServer

STREAM = "alertd:events"


@pytest.fixture
def sync_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


def read_back(client: redis.Redis, entry_id: str, stream: str = STREAM) -> tuple[dict, Event]:
    """The entry as stored, and the one event the daemon's parser makes of it."""
    [(raw_id, fields)] = client.xrange(stream, entry_id, entry_id)
    events, errors = parse_entry(raw_id.decode(), fields)
    assert [] == errors
    [event] = events
    return fields, event


class TestPublish:
    """publish() adds one JSON entry the daemon parses back to the same event."""

    def test_round_trip(self, sync_redis: redis.Redis, redis_server: RedisServer) -> None:
        entry_id = publish(
            "queue_depth",
            7000,
            {"service": "billing", "queue": "emails"},
            redis_url=redis_server.url,
        )
        fields, event = read_back(sync_redis, entry_id)
        assert [b"data"] == list(fields)
        assert "queue_depth" == event.name
        assert 7000.0 == event.value
        assert {"service": "billing", "queue": "emails"} == event.labels

    def test_defaults_value_one_and_entry_time(
        self, sync_redis: redis.Redis, redis_server: RedisServer
    ) -> None:
        entry_id = publish("job_failed", redis_url=redis_server.url)
        fields, event = read_back(sync_redis, entry_id)
        assert "ts" not in orjson.loads(fields[b"data"])
        assert 1.0 == event.value
        assert {} == event.labels
        assert stream_id_seconds(entry_id) == event.ts

    @pytest.mark.parametrize(
        "ts",
        [1_790_000_000.5, "2026-09-21T14:13:20.500Z", datetime.fromtimestamp(1_790_000_000.5, UTC)],
        ids=["unix", "rfc3339", "datetime"],
    )
    def test_explicit_ts(
        self, sync_redis: redis.Redis, redis_server: RedisServer, ts: object
    ) -> None:
        entry_id = publish("heartbeat", ts=ts, redis_url=redis_server.url)  # type: ignore[arg-type]
        _, event = read_back(sync_redis, entry_id)
        assert 1_790_000_000.5 == event.ts

    def test_env_url_and_other_stream(
        self, sync_redis: redis.Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("ALERTD_REDIS_URL", redis_server.url)
        entry_id = publish("disk_free_percent", 4.5, {"host": "db1"}, stream="other:events")
        _, event = read_back(sync_redis, entry_id, stream="other:events")
        assert 4.5 == event.value
        assert 0 == sync_redis.xlen(STREAM)

    def test_reuses_a_given_client(self, sync_redis: redis.Redis) -> None:
        ids = [publish("queue_depth", float(i), client=sync_redis) for i in range(3)]
        assert 3 == sync_redis.xlen(STREAM)
        assert [0.0, 1.0, 2.0] == [read_back(sync_redis, i)[1].value for i in ids]


class TestValidation:
    """A bad event raises EventError and nothing reaches the stream."""

    @pytest.mark.parametrize(
        ("name", "value", "labels", "ts", "expected"),
        [
            ("9lives", 1.0, None, None, "must match"),
            ("", 1.0, None, None, "name is required"),
            ("queue_depth", float("nan"), None, None, "finite"),
            ("queue_depth", "7000", None, None, "value must be a number"),
            ("queue_depth", 1.0, {"service": 3}, None, "must be a string"),
            ("queue_depth", 1.0, {"__internal": "x"}, None, "label name"),
            ("queue_depth", 1.0, None, 1_790_000_000_000, "not milliseconds"),
            ("queue_depth", 1.0, None, datetime(2026, 1, 1), "timezone-aware"),
        ],
        ids=["name", "empty", "nan", "str-value", "label-type", "label-name", "ms", "naive"],
    )
    def test_rejected(
        self,
        sync_redis: redis.Redis,
        redis_server: RedisServer,
        name: str,
        value: object,
        labels: object,
        ts: object,
        expected: str,
    ) -> None:
        with pytest.raises(EventError, match=expected):
            publish(name, value, labels, ts, redis_url=redis_server.url)  # type: ignore[arg-type]
        assert 0 == sync_redis.exists(STREAM)


class TestAsyncPublish:
    """apublish() does the same from asyncio code."""

    async def test_round_trip(self, redis: aioredis.Redis, redis_server: RedisServer) -> None:
        entry_id = await apublish(
            "http_request_duration_seconds", 0.25, {"service": "api"}, redis_url=redis_server.url
        )
        [(raw_id, fields)] = await redis.xrange(STREAM, entry_id, entry_id)
        [event], errors = parse_entry(raw_id.decode(), fields)
        assert [] == errors
        assert ("http_request_duration_seconds", 0.25, {"service": "api"}) == (
            event.name,
            event.value,
            event.labels,
        )

    async def test_reuses_a_given_client(self, redis: aioredis.Redis) -> None:
        await apublish("heartbeat", client=redis)
        await apublish("heartbeat", client=redis)
        assert 2 == await redis.xlen(STREAM)

    async def test_bad_name_raises(self, redis: aioredis.Redis, redis_server: RedisServer) -> None:
        with pytest.raises(EventError):
            await apublish("bad name", redis_url=redis_server.url)
        assert 0 == await redis.exists(STREAM)
