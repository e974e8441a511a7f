"""End to end, per paging and chat service: a rule's alert fires and resolves at the
service's stub; a service's rejection lands in the dead letters with its reason; no
credential of the channel shows in logs, API answers or dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
import structlog

from alertd.app import config_secrets
from alertd.logs import configure
from tests.conftest import DaemonFactory, wait_for
from tests.service_stubs import Services
from tests.test_channels_paging import CASES, Case
from tests.test_e2e import RULES, xadd_flat

ROUTE = '\n[[routes]]\nchannels = ["pager"]\n'


def channel_toml(body: dict[str, Any]) -> str:
    lines = ["[channels.pager]"]
    for key, value in body.items():
        if key != "responders":
            lines.append(f"{key} = {orjson.dumps(value).decode()}")
    for r in body.get("responders", []):
        lines.append("[[channels.pager.responders]]")
        lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in r.items()]
    lines += ["[channels.pager.retry]", 'initial_backoff = "50ms"', 'max_backoff = "200ms"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def logs_scrubbed() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind)
class TestThroughTheDaemon:
    """What an on-call engineer sees from each service when alertd runs for real."""

    async def test_firing_then_resolved_reach_the_service(
        self, case: Case, daemons: DaemonFactory, redis: aioredis.Redis, services: Services
    ) -> None:
        daemons.write(RULES, channel_toml(case.config(services)), ROUTE)
        await daemons.start()

        await xadd_flat(redis, "queue_depth", 7000, service="billing", queue="emails")
        await wait_for(lambda: services.of(case.kind), timeout_s=20)
        await xadd_flat(redis, "queue_depth", 10, service="billing", queue="emails")
        await wait_for(lambda: len(services.of(case.kind)) >= 2, timeout_s=20)

        first, second = services.of(case.kind)[:2]
        assert [] == services.of(case.kind, ok=False)
        assert "firing" in orjson.dumps(first.body).decode().lower()
        # PagerDuty's "resolve" action, Opsgenie's close by alias, the chats' "[RESOLVED]".
        assert "resolve" in orjson.dumps(second.body).decode().lower() or "close" in second.path

    async def test_rejection_is_dead_lettered_with_the_reason_and_no_secret(
        self,
        case: Case,
        daemons: DaemonFactory,
        redis: aioredis.Redis,
        services: Services,
        capsys: pytest.CaptureFixture[str],
        logs_scrubbed: None,
    ) -> None:
        refused = case.refused(services)
        daemons.write(RULES, channel_toml(refused), ROUTE)
        app = await daemons.start(http=True)
        configure("debug", "json", config_secrets(app.config))
        secrets = [s for s in (*case.secrets, *config_secrets(app.config)) if len(s) >= 6]

        await xadd_flat(redis, "queue_depth", 7000, service="billing", queue="emails")

        async def dead() -> list[Any]:
            rows = await redis.xrange("alertd:dead")
            return [f for _, f in rows if f[b"source"] == b"notification"]

        letters = await wait_for(dead, timeout_s=20)
        assert case.reason in letters[0][b"last_error"].decode()
        assert "permanent failure" == letters[0][b"reason"].decode()

        base = f"http://{app.config.settings.http.listen}"
        async with aiohttp.ClientSession() as http:
            answers = []
            for method, path, body in [
                ("GET", "/api/v1/dead-letters", None),
                ("GET", "/health", None),
                ("POST", "/api/v1/test-alert", {"channel": "pager"}),
            ]:
                async with http.request(method, base + path, json=body) as resp:
                    answers.append(await resp.text())
        assert case.reason in answers[2]
        shown = [orjson.dumps([list(f.items()) for f in letters], default=repr).decode()]
        logged = capsys.readouterr().out
        assert case.reason in logged  # the log says why, so it is there to leak from
        shown += [*answers, logged]
        assert [] == [s for s in secrets for text in shown if s in text]
