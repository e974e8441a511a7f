"""The HTTP API (SPEC section 6) against a real App, a real Redis and a real receiver."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from alertd.app import App
from alertd.http import build_http, start_http
from alertd.http.common import MAX_BODY_BYTES
from alertd.http.openapi import openapi_document
from alertd.http.server import auth_decision
from alertd.settings import load_config
from tests.conftest import Receiver, RedisServer, free_port, wait_for

STREAM = "alertd:events"
DEAD = "alertd:dead"
TOKEN = "s3cret-api-token"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

QUEUE_RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
group_by = ["queue"]
warning = "> 100"
critical = "> 1000"
summary = "{queue}: {value} waiting"
"""

DISK_RULES = """
[[rules]]
name = "DiskFull"
metric = "disk_used_ratio"
aggregate = "max"
window = "1m"
critical = ">= 0.95"
"""


def write_config(base: Path, redis_url: str, port: int, receiver_url: str, token: str = "") -> Path:
    (base / "rules").mkdir(exist_ok=True)
    (base / "channels").mkdir(exist_ok=True)
    (base / "rules" / "queue.toml").write_text(QUEUE_RULES)
    (base / "channels" / "hook.toml").write_text(
        f"""
[channels.hook]
type = "webhook"
url = "{receiver_url}/hook"

[channels.hook.retry]
attempts = 1
initial_backoff = "10ms"
max_backoff = "10ms"
timeout = "2s"
"""
    )
    path = base / "alertd.toml"
    path.write_text(
        f"""
[redis]
url = "{redis_url}"

[daemon]
block = "100ms"
eval_interval = "200ms"
shutdown_timeout = "2s"

[http]
listen = "127.0.0.1:{port}"
token = "{token}"

[paths]
rules = ["rules/*.toml"]
channels = ["channels/*.toml"]
"""
    )
    return path


@dataclass
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]


@dataclass
class Api:
    """A running App and a client for its HTTP API."""

    app: App
    base: str
    config_path: Path
    session: aiohttp.ClientSession
    token: str = ""

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = dict(headers or {})
        if data is not None:  # writes with a body are JSON (alertd.http.browser)
            headers.setdefault("Content-Type", "application/json")
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        async with self.session.request(
            method, self.base + path, json=json, data=data, headers=headers
        ) as resp:
            raw = await resp.read()
            is_json = resp.content_type == "application/json"
            return Reply(resp.status, orjson.loads(raw) if is_json else raw.decode(), resp.headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json=json, **kw)

    async def status(self, path: str) -> int:
        return (await self.get(path)).status

    async def status_is(self, path: str, expected: int) -> bool:
        return expected == await self.status(path)

    async def alerts(self, query: str = "") -> list[dict[str, Any]]:
        reply = await self.get(f"/api/v1/alerts{query}")
        assert 200 == reply.status
        result: list[dict[str, Any]] = reply.body["alerts"]
        return result


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(
    tmp_path: Path, redis: aioredis.Redis, redis_server: RedisServer, receiver: Receiver
) -> AsyncIterator[StartApi]:
    """Starts Apps on private ports (default: the session Redis); stops them after the test."""
    started: list[App] = []
    session = aiohttp.ClientSession()

    async def start(token: str = "", redis_url: str | None = None) -> Api:
        port = free_port()
        path = write_config(tmp_path, redis_url or redis_server.url, port, receiver.url, token)
        app = App(load_config(path, env={}))
        await app.start()
        started.append(app)
        return Api(app, f"http://127.0.0.1:{port}", path, session, token)

    yield start
    await session.close()  # first: the server's shutdown would wait on idle keep-alives
    for app in started:
        await app.stop()


@pytest.fixture
async def api(start_api: StartApi) -> Api:
    return await start_api()


@pytest.fixture(scope="module")
async def shared_api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """One App on a redis-server of its own, for tests that leave no state another would see."""
    base = tmp_path_factory.mktemp("shared-api")
    server = RedisServer(port=free_port(), dir=base)
    server.start()
    port = free_port()
    path = write_config(base, server.url, port, "http://127.0.0.1:9")
    app = App(load_config(path, env={}))
    await app.start()
    session = aiohttp.ClientSession()
    yield Api(app, f"http://127.0.0.1:{port}", path, session)
    await session.close()
    await app.stop()
    server.stop()


def error_shape(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"error", "details"}
        and isinstance(body["error"], str)
        and isinstance(body["details"], list)
    )


async def send_queue_depth(api: Api, value: float, queue: str = "emails") -> None:
    reply = await api.post(
        "/api/v1/events", {"name": "queue_depth", "value": value, "labels": {"queue": queue}}
    )
    assert 202 == reply.status


class TestProbes:
    """Load balancers see liveness, readiness and a health summary."""

    async def test_live_answers_ok(self, shared_api: Api) -> None:
        reply = await shared_api.get("/health/live")
        assert (200, {"status": "ok"}) == (reply.status, reply.body)

    async def test_ready_when_redis_answers_and_group_joined(self, shared_api: Api) -> None:
        reply = await shared_api.get("/health/ready")
        assert (200, "ready") == (reply.status, reply.body["status"])

    async def test_health_reports_every_check(self, api: Api) -> None:
        reply = await api.get("/health")
        body = reply.body
        assert 200 == reply.status
        assert "healthy" == body["status"]
        assert RFC3339.match(body["timestamp"])
        assert body["uptime_s"] >= 0
        checks = body["checks"]
        assert "ok" == checks["redis"]["status"]
        assert isinstance(checks["redis"]["latency_ms"], float)
        assert {"lag", "pending", "joined", "stalled_s"} == set(checks["consumer"])
        assert checks["consumer"]["joined"] is True
        assert {"loaded": 1, "last_reload_error": None} == checks["rules"]
        hook = {"status": "ok", "consecutive_failures": 0, "last_success": None, "last_error": None}
        assert hook == checks["channels"]["hook"]
        assert {"hook", "log"} == set(checks["channels"])

    async def test_health_degraded_after_failed_reload(self, api: Api) -> None:
        (api.config_path.parent / "rules" / "broken.toml").write_text("[[rules]]\nname = 'X'\n")
        assert 400 == (await api.post("/api/v1/reload")).status
        reply = await api.get("/health")
        assert (200, "degraded") == (reply.status, reply.body["status"])
        assert "broken.toml" in reply.body["checks"]["rules"]["last_reload_error"]

    async def test_ready_follows_redis_while_live_stays(
        self, start_api: StartApi, private_redis: RedisServer
    ) -> None:
        api = await start_api(redis_url=private_redis.url)
        assert 200 == await api.status("/health/ready")
        private_redis.stop()
        await wait_for(lambda: api.status_is("/health/ready", 503))
        ready = await api.get("/health/ready")
        assert ("not ready", True) == (ready.body["status"], "redis" in ready.body["reason"])
        assert 200 == await api.status("/health/live")
        health = await api.get("/health")
        assert (503, "unhealthy", "down") == (
            health.status,
            health.body["status"],
            health.body["checks"]["redis"]["status"],
        )
        private_redis.start()
        await wait_for(lambda: api.status_is("/health/ready", 200))
        assert 200 == await api.status("/health/live")
        assert "healthy" == (await api.get("/health")).body["status"]


class TestMetrics:
    """Prometheus scrapes /metrics, and the counters move."""

    async def test_events_consumed_counter_moves(self, api: Api) -> None:
        def consumed(text: str) -> float:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "alertd_events_consumed_total":
                        return float(sample.value)
            raise AssertionError("alertd_events_consumed_total missing")

        first = await api.get("/metrics")
        assert 200 == first.status
        assert "text/plain" == first.headers["Content-Type"].split(";")[0]
        names = {f.name for f in text_string_to_metric_families(first.body)}
        assert {"alertd_consumer_lag", "alertd_consumer_pending", "alertd_rules_loaded"} <= names
        before = consumed(first.body)
        await send_queue_depth(api, 5)
        await send_queue_depth(api, 6)

        async def moved() -> bool:
            return consumed((await api.get("/metrics")).body) >= before + 2

        await wait_for(moved)

    async def test_alerts_gauge_counts_alerts_by_state_and_severity(self, api: Api) -> None:
        await send_queue_depth(api, 5000)
        await wait_for(api.alerts)
        await api.app.housekeeping()  # what counts them, every few seconds
        text = (await api.get("/metrics")).body
        counted = {
            (s.labels["state"], s.labels["severity"]): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "alertd_alerts"
        }
        assert {("firing", "critical"): 1.0} == counted


class TestAlerts:
    """Events sent over HTTP become alerts listed with their state and filters."""

    async def test_event_makes_a_firing_alert(self, api: Api) -> None:
        await send_queue_depth(api, 5000)
        alerts = await wait_for(api.alerts)
        alert = alerts[0]
        assert 1 == len(alerts)
        assert ("firing", "critical", 5000.0) == (alert["state"], alert["severity"], alert["value"])
        assert {"alertname": "QueueBacklog", "queue": "emails", "severity": "critical"} == alert[
            "labels"
        ]
        assert "emails: 5000.0 waiting" == alert["annotations"]["summary"]
        assert ([], []) == (alert["silencedBy"], alert["inhibitedBy"])
        assert RFC3339.match(alert["startsAt"])

    async def test_filters(self, api: Api) -> None:
        await send_queue_depth(api, 5000, "emails")
        await send_queue_depth(api, 500, "sms")

        async def both() -> bool:
            return 2 == len(await api.alerts())

        await wait_for(both)
        assert ["sms"] == [a["labels"]["queue"] for a in await api.alerts("?severity=warning")]
        assert ["emails"] == [
            a["labels"]["queue"] for a in await api.alerts("?filter=queue=emails")
        ]
        assert 2 == len(await api.alerts("?state=firing"))
        assert [] == await api.alerts("?state=pending")
        assert [] == await api.alerts("?filter=queue=emails&filter=queue=sms")
        # The configuration's matcher syntax, as `alertd alerts --filter` takes it.
        assert ["emails"] == [a["labels"]["queue"] for a in await api.alerts("?filter=queue=~em.*")]
        assert ["sms"] == [a["labels"]["queue"] for a in await api.alerts("?filter=queue=!emails")]

    @pytest.mark.parametrize(
        "query",
        ["?state=resolved", "?severity=fatal", "?filter=queue", "?filter==x", "?filter=q=~("],
    )
    async def test_bad_filter_is_400(self, shared_api: Api, query: str) -> None:
        reply = await shared_api.get(f"/api/v1/alerts{query}")
        assert (400, True) == (reply.status, error_shape(reply.body))

    async def test_silenced_alert_names_its_silence(self, api: Api) -> None:
        created = await api.post(
            "/api/v1/silences",
            {"matchers": {"queue": "emails"}, "duration": "1h", "createdBy": "tests"},
        )
        await send_queue_depth(api, 5000)
        alerts = await wait_for(api.alerts)
        assert [created.body["id"]] == alerts[0]["silencedBy"]


class TestRules:
    """Operators see the loaded rules, their files and their series."""

    async def test_rules_with_series(self, api: Api) -> None:
        await send_queue_depth(api, 500)
        await wait_for(api.alerts)
        reply = await api.get("/api/v1/rules")
        assert 200 == reply.status
        (rule,) = reply.body["rules"]
        expected = {
            "name": "QueueBacklog",
            "file": "rules/queue.toml",
            "metric": "queue_depth",
            "aggregate": "last",
            "window": "5m",
            "group_by": ["queue"],
            "levels": {"warning": "> 100", "critical": "> 1000"},
        }
        assert expected == {k: rule[k] for k in expected}
        (series,) = rule["series"]
        assert ("firing", "warning", 500.0, "emails") == (
            series["state"],
            series["severity"],
            series["value"],
            series["labels"]["queue"],
        )
        assert re.fullmatch(r"[0-9a-f]{16}", series["fingerprint"])


class TestEvents:
    """POST /api/v1/events validates everything, then adds all or nothing."""

    async def test_one_event_and_an_array(self, api: Api, redis: aioredis.Redis) -> None:
        one = await api.post("/api/v1/events", {"name": "heartbeat"})
        many = await api.post(
            "/api/v1/events",
            [{"name": "cpu", "value": 0.5, "ts": 1_800_000_000}, {"name": "cpu", "value": 0.7}],
        )
        assert (202, {"accepted": 1}) == (one.status, one.body)
        assert (202, {"accepted": 2}) == (many.status, many.body)
        entries = await redis.xrange(STREAM)
        assert 3 == len(entries)
        assert {"name": "cpu", "value": 0.5, "labels": {}, "ts": 1_800_000_000} == orjson.loads(
            entries[1][1][b"data"]
        )

    async def test_invalid_events_reject_the_whole_body(
        self, api: Api, redis: aioredis.Redis
    ) -> None:
        reply = await api.post(
            "/api/v1/events",
            [{"name": "ok"}, {"name": "bad name"}, {"name": "x", "value": "1"}, {"name": "y"}],
        )
        assert 400 == reply.status
        assert "invalid events" == reply.body["error"]
        assert ["[1]", "[2]"] == [d.split(" ")[0] for d in reply.body["details"]]
        assert 0 == await redis.xlen(STREAM)

    @pytest.mark.parametrize(
        "body",
        ["just a string", 42, None, [{"name": "a"}] * 1001, {"name": "a", "extra": 1}],
        ids=["string", "number", "null", "too-many", "unknown-field"],
    )
    async def test_wrong_body_is_400(self, shared_api: Api, body: Any) -> None:
        reply = await shared_api.call("POST", "/api/v1/events", data=orjson.dumps(body))
        assert (400, True) == (reply.status, error_shape(reply.body))

    async def test_malformed_json_is_400(self, shared_api: Api) -> None:
        reply = await shared_api.call("POST", "/api/v1/events", data=b'{"name": ')
        assert (400, "malformed JSON") == (reply.status, reply.body["error"])
        assert error_shape(reply.body)

    async def test_empty_body_is_400(self, shared_api: Api) -> None:
        reply = await shared_api.call("POST", "/api/v1/events", data=b"")
        assert (400, "a JSON body is required") == (reply.status, reply.body["error"])


class TestSilences:
    """Operators create, list and expire silences over HTTP."""

    async def test_create_list_expire(self, api: Api) -> None:
        created = await api.post(
            "/api/v1/silences",
            {
                "matchers": {"service": "api", "env": "~prod.*"},
                "duration": "2h",
                "createdBy": "ops",
                "comment": "deploy",
            },
        )
        assert 201 == created.status
        sid = created.body["id"]
        assert f"/api/v1/silences/{sid}" == created.headers["Location"]
        listed = (await api.get("/api/v1/silences")).body["silences"]
        assert [(sid, "active", {"service": "api", "env": "~prod.*"})] == [
            (s["id"], s["status"], s["matchers"]) for s in listed
        ]
        expired = await api.call("DELETE", f"/api/v1/silences/{sid}")
        assert (200, {"id": sid, "status": "expired"}) == (expired.status, expired.body)
        after = (await api.get("/api/v1/silences?status=expired")).body["silences"]
        assert [sid] == [s["id"] for s in after]
        assert [] == (await api.get("/api/v1/silences?status=active")).body["silences"]

    async def test_expire_unknown_is_404(self, shared_api: Api) -> None:
        reply = await shared_api.call("DELETE", "/api/v1/silences/nope")
        assert (404, True) == (reply.status, error_shape(reply.body))

    async def test_invalid_silence_lists_every_problem(self, shared_api: Api) -> None:
        reply = await shared_api.post("/api/v1/silences", {"matchers": {}, "duration": "soon"})
        assert (400, "invalid silence") == (reply.status, reply.body["error"])
        assert 3 <= len(reply.body["details"])

    @pytest.mark.parametrize("body", [b'"a string"', b"[1, 2]", b"{"])
    async def test_wrong_body_type_is_400(self, shared_api: Api, body: bytes) -> None:
        reply = await shared_api.call("POST", "/api/v1/silences", data=body)
        assert (400, True) == (reply.status, error_shape(reply.body))


class TestTestAlert:
    """Whoever sets up a channel sees per channel whether delivery worked."""

    async def test_delivered(self, api: Api, receiver: Receiver) -> None:
        reply = await api.post("/api/v1/test-alert", {"channel": "hook", "severity": "warning"})
        assert 200 == reply.status
        result = reply.body["results"]["hook"]
        assert (True, 1) == (result["ok"], result["attempts"])
        (sent,) = receiver.bodies("/hook")
        assert ("AlertdTestAlert", "warning") == (
            sent["commonLabels"]["alertname"],
            sent["alerts"][0]["labels"]["severity"],
        )

    async def test_every_enabled_channel_by_default(self, api: Api) -> None:
        reply = await api.call("POST", "/api/v1/test-alert")
        assert (200, {"hook", "log"}) == (reply.status, set(reply.body["results"]))

    async def test_failed_channel_is_502(self, api: Api, receiver: Receiver) -> None:
        receiver.default = (400, {}, "rejected")
        reply = await api.post("/api/v1/test-alert", {"channel": ["hook", "log"]})
        results = reply.body["results"]
        assert 502 == reply.status
        assert (False, True) == (results["hook"]["ok"], results["log"]["ok"])
        assert "400" in results["hook"]["error"]

    async def test_unknown_channel_is_404(self, shared_api: Api) -> None:
        reply = await shared_api.post("/api/v1/test-alert", {"channel": "pager"})
        assert (404, True) == (reply.status, error_shape(reply.body))
        assert "pager" in reply.body["details"][0]

    @pytest.mark.parametrize(
        "body",
        [{"severity": "fatal"}, {"channel": 3}, {"channel": []}, {"chanel": "hook"}, ["hook"]],
    )
    async def test_bad_request_is_400(self, shared_api: Api, body: Any) -> None:
        reply = await shared_api.post("/api/v1/test-alert", body)
        assert (400, True) == (reply.status, error_shape(reply.body))


class TestReload:
    """Reloading picks up new rules, and a broken file keeps the running ones."""

    async def test_reload_adds_rules(self, api: Api) -> None:
        (api.config_path.parent / "rules" / "disk.toml").write_text(DISK_RULES)
        reply = await api.post("/api/v1/reload")
        assert (200, "reloaded", 2) == (reply.status, reply.body["status"], reply.body["rules"])
        names = [r["name"] for r in (await api.get("/api/v1/rules")).body["rules"]]
        assert ["DiskFull", "QueueBacklog"] == sorted(names)

    async def test_broken_rule_keeps_old_config(self, api: Api) -> None:
        (api.config_path.parent / "rules" / "broken.toml").write_text(
            '[[rules]]\nname = "Bad"\nmetric = "m"\nthreshhold = 3\n'
        )
        reply = await api.post("/api/v1/reload", {})
        assert (400, "reload failed") == (reply.status, reply.body["error"])
        assert any("broken.toml" in d for d in reply.body["details"])
        names = [r["name"] for r in (await api.get("/api/v1/rules")).body["rules"]]
        assert ["QueueBacklog"] == names

    async def test_reload_rejects_a_body_with_fields(self, shared_api: Api) -> None:
        reply = await shared_api.post("/api/v1/reload", {"force": True})
        assert (400, True) == (reply.status, error_shape(reply.body))


class TestDeadLetters:
    """Operators list dead letters and replay them."""

    async def test_list_and_replay(self, api: Api, redis: aioredis.Redis) -> None:
        await redis.xadd(STREAM, {"name": "bad name!", "value": "1"})

        async def dead() -> list[dict[str, Any]]:
            reply = await api.get("/api/v1/dead-letters")
            assert 200 == reply.status
            result: list[dict[str, Any]] = reply.body["dead_letters"]
            return result

        (letter,) = await wait_for(dead)
        assert "event" == letter["source"]
        assert "name" in letter["reason"]
        assert (
            [] == (await api.get("/api/v1/dead-letters?source=notification")).body["dead_letters"]
        )
        reply = await api.post("/api/v1/dead-letters/replay", {"ids": [letter["id"], "1-0"]})
        assert (200, {"replayed": [letter["id"]], "failed": [], "not_found": ["1-0"]}) == (
            reply.status,
            reply.body,
        )
        # Replayed into the stream, it is still invalid: a new dead letter, a new id.
        (again,) = await wait_for(dead)
        assert letter["id"] != again["id"]
        everything = await api.post("/api/v1/dead-letters/replay")
        assert [again["id"]] == everything.body["replayed"]

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("GET", "/api/v1/dead-letters?limit=0", None),
            ("GET", "/api/v1/dead-letters?limit=many", None),
            ("GET", "/api/v1/dead-letters?source=cron", None),
            ("POST", "/api/v1/dead-letters/replay", {"ids": []}),
            ("POST", "/api/v1/dead-letters/replay", {"ids": ["not-an-id"]}),
            ("POST", "/api/v1/dead-letters/replay", {"ids": "1-0"}),
        ],
    )
    async def test_bad_request_is_400(
        self, shared_api: Api, method: str, path: str, body: Any
    ) -> None:
        reply = await shared_api.call(method, path, json=body)
        assert (400, True) == (reply.status, error_shape(reply.body))


class TestErrors:
    """Every error is JSON, with no stack trace and no secret."""

    async def test_unknown_route_is_404(self, shared_api: Api) -> None:
        reply = await shared_api.get("/api/v1/nothing-here")
        assert (404, "not found", True) == (
            reply.status,
            reply.body["error"],
            error_shape(reply.body),
        )

    async def test_wrong_method_is_405(self, shared_api: Api) -> None:
        reply = await shared_api.call("DELETE", "/api/v1/alerts")
        assert (405, "method not allowed") == (reply.status, reply.body["error"])
        assert "GET" in reply.headers["Allow"]
        assert error_shape(reply.body)

    async def test_large_body_is_413(self, shared_api: Api) -> None:
        reply = await shared_api.call(
            "POST", "/api/v1/events", data=io.BytesIO(b" " * (MAX_BODY_BYTES + 1))
        )
        assert (413, True) == (reply.status, error_shape(reply.body))

    async def test_large_chunked_body_is_413(self, shared_api: Api) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 65536

        reply = await shared_api.call("POST", "/api/v1/events", data=chunks())
        assert (413, True) == (reply.status, error_shape(reply.body))

    async def test_unexpected_exception_is_500_without_details(self, shared_api: Api) -> None:
        http = build_http(shared_api.app)

        async def boom(_: Any) -> Any:
            raise RuntimeError(f"password={TOKEN}")

        http.router.add_get("/boom", boom)
        async with TestClient(TestServer(http)) as client:
            resp = await client.get("/boom")
            text = await resp.text()
        assert (500, {"error": "internal error", "details": []}) == (
            resp.status,
            orjson.loads(text),
        )
        assert TOKEN not in text


class TestListen:
    """The API listens on http.listen, and a busy port is an error, not a half-started server."""

    async def test_busy_port_raises(self, tmp_path: Path, redis_server: RedisServer) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            app = App(
                load_config(
                    write_config(tmp_path, redis_server.url, port, "http://127.0.0.1:9"), env={}
                )
            )
            try:
                with pytest.raises(OSError):
                    await start_http(app)
            finally:
                await app.redis.aclose()


class TestOpenApiServed:
    """The OpenAPI document is served by the API it describes."""

    async def test_served(self, shared_api: Api) -> None:
        reply = await shared_api.get("/api/v1/openapi.json")
        assert (200, openapi_document()) == (reply.status, reply.body)


class TestAuth:
    """The bearer token guards /api/v1; without one, only loopback may write."""

    async def test_token_required_everywhere_under_api(self, start_api: StartApi) -> None:
        api = await start_api(token=TOKEN)
        for method, path in (("GET", "/api/v1/alerts"), ("POST", "/api/v1/reload")):
            for header in (None, "Bearer wrong", f"Basic {TOKEN}", TOKEN):
                headers = {"Authorization": header} if header else {"Authorization": ""}
                reply = await api.call(method, path, headers=headers)
                assert (401, "unauthorized") == (reply.status, reply.body["error"])
                assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert 200 == (await api.get("/api/v1/alerts")).status
        assert 202 == (await api.post("/api/v1/events", {"name": "x"})).status

    async def test_probes_and_metrics_never_need_the_token(self, start_api: StartApi) -> None:
        api = await start_api(token=TOKEN)
        for path in ("/health", "/health/live", "/health/ready", "/metrics"):
            reply = await api.get(path, headers={"Authorization": ""})
            assert (path, 200) == (path, reply.status)

    async def test_no_token_loopback_may_write(self, shared_api: Api) -> None:
        assert 200 == (await shared_api.get("/api/v1/silences")).status
        assert 202 == (await shared_api.post("/api/v1/events", {"name": "x"})).status

    async def test_token_is_read_at_request_time(self, api: Api) -> None:
        text = api.config_path.read_text().replace('token = ""', f'token = "{TOKEN}"')
        api.config_path.write_text(text)
        assert 200 == (await api.post("/api/v1/reload")).status
        assert 401 == (await api.get("/api/v1/alerts")).status
        api.token = TOKEN
        assert 200 == (await api.get("/api/v1/alerts")).status

    @pytest.mark.parametrize(
        ("method", "path", "remote", "auth", "token", "expected"),
        [
            ("POST", "/api/v1/events", "10.1.2.3", None, "", 403),
            ("DELETE", "/api/v1/silences/x", "192.168.0.9", None, "", 403),
            ("POST", "/api/v1/events", None, None, "", 403),
            ("POST", "/api/v1/events", "not-an-ip", None, "", 403),
            ("POST", "/api/v1/events", "127.0.0.1", None, "", None),
            ("POST", "/api/v1/events", "127.0.0.2", None, "", None),
            ("POST", "/api/v1/events", "::1", None, "", None),
            ("POST", "/api/v1/events", "::ffff:127.0.0.1", None, "", None),
            ("POST", "/api/v1/events", "::ffff:10.0.0.1", None, "", 403),
            ("GET", "/api/v1/alerts", "10.1.2.3", None, "", None),
            ("POST", "/health", "10.1.2.3", None, "", None),
            ("GET", "/api/v1/alerts", "127.0.0.1", None, "t0k", 401),
            ("GET", "/api/v1/alerts", "10.1.2.3", "Bearer t0k", "t0k", None),
            ("POST", "/api/v1/events", "10.1.2.3", "bearer t0k", "t0k", None),
            ("POST", "/api/v1/events", "10.1.2.3", "Bearer t0k2", "t0k", 401),
            ("POST", "/api/v1/events", "10.1.2.3", "Bearer tøk", "t0k", 401),
            ("GET", "/metrics", "10.1.2.3", None, "t0k", None),
        ],
    )
    def test_decision(
        self,
        method: str,
        path: str,
        remote: str | None,
        auth: str | None,
        token: str,
        expected: int | None,
    ) -> None:
        denial = auth_decision(method, path, remote, auth, token)
        assert expected == (denial.status if denial else None)
