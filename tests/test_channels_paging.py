"""PagerDuty, Opsgenie, Teams, Discord and Telegram against local stubs answering as each
service documents (tests/service_stubs.py): shapes, limits, throttling, rejections, secrets."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from alertd.channels.base import Channel, ChannelContext, RetryConfig
from alertd.channels.registry import CHANNEL_TYPES, parse_channel_config
from alertd.channels.text import incident_key
from alertd.errors import DeliveryError
from alertd.model import Notification
from alertd.notify.delivery import deliver
from tests.service_stubs import (
    DISCORD_TOKEN,
    OPSGENIE_KEY,
    PD_ROUTING_KEY,
    TEAMS_SIG,
    TELEGRAM_CHAT,
    TELEGRAM_TOKEN,
    Services,
)
from tests.test_channel_slack import make_alert, make_notification


@dataclass(frozen=True)
class Case:
    """One channel type: its config against the stubs, and how its service says no."""

    kind: str
    config: Callable[[Services], dict[str, Any]]
    refused: Callable[[Services], dict[str, Any]]  # a config the service rejects
    reason: str  # the service's words for that rejection
    secrets: tuple[str, ...]


CASES = [
    Case(
        "pagerduty",
        lambda s: {"type": "pagerduty", "routing_key": PD_ROUTING_KEY, "url": s.pagerduty},
        lambda s: {"type": "pagerduty", "routing_key": "too-short-key", "url": s.pagerduty},
        "Event object is invalid: Length of 'routing_key' is incorrect (should be 32 characters)",
        (PD_ROUTING_KEY,),
    ),
    Case(
        "opsgenie",
        lambda s: {
            "type": "opsgenie",
            "api_key": OPSGENIE_KEY,
            "url": s.url,
            "responders": [{"type": "team", "name": "ops"}],
        },
        lambda s: {"type": "opsgenie", "api_key": "0000-wrong-api-key", "url": s.url},
        "HTTP 401: Could not authenticate",
        (OPSGENIE_KEY,),
    ),
    Case(
        "teams",
        lambda s: {"type": "teams", "webhook_url": s.teams},
        lambda s: {"type": "teams", "webhook_url": s.teams.replace(TEAMS_SIG, "expired-signature")},
        "DirectApiAuthorizationRequired",
        (TEAMS_SIG,),
    ),
    Case(
        "discord",
        lambda s: {"type": "discord", "webhook_url": s.discord},
        lambda s: {
            "type": "discord",
            "webhook_url": s.discord.replace(DISCORD_TOKEN, "revoked-token-123"),
        },
        "HTTP 401: Invalid Webhook Token (50027)",
        (DISCORD_TOKEN,),
    ),
    Case(
        "telegram",
        lambda s: {
            "type": "telegram",
            "bot_token": TELEGRAM_TOKEN,
            "chat_id": TELEGRAM_CHAT,
            "api_url": s.url,
        },
        lambda s: {
            "type": "telegram",
            "bot_token": TELEGRAM_TOKEN,
            "chat_id": "-100999",
            "api_url": s.url,
        },
        "HTTP 400: Bad Request: chat not found",
        (TELEGRAM_TOKEN,),
    ),
]
BY_KIND = {c.kind: c for c in CASES}


@pytest.fixture
async def ctx() -> AsyncIterator[ChannelContext]:
    session = aiohttp.ClientSession()
    yield ChannelContext(http=session, external_url="http://alertd.example.com:9099")
    await session.close()


def channel(body: dict[str, Any], ctx: ChannelContext, name: str = "pager") -> Channel[Any]:
    cfg = parse_channel_config(body)
    return CHANNEL_TYPES[cfg.type](name, cfg, ctx)


def firing(count: int = 2) -> Notification:
    return make_notification([make_alert(i) for i in range(count)])


def resolved(count: int = 2) -> Notification:
    return make_notification([make_alert(i, state="resolved") for i in range(count)])


def huge() -> Notification:
    """300 alerts with long summaries and labels: more than any of the services takes."""
    long = "x" * 5000
    return make_notification(
        [
            make_alert(i, name="A" * 300, summary=long, extra_labels={"pod": f"{i}-{long}"})
            for i in range(300)
        ]
    )


FAST = RetryConfig(
    attempts=3, initial_backoff=timedelta(milliseconds=10), max_backoff=timedelta(milliseconds=20)
)


class TestPagerDuty:
    """A group opens one PagerDuty incident and its recovery resolves that same incident."""

    async def test_trigger_then_resolve_share_the_dedup_key(
        self, services: Services, ctx: ChannelContext
    ) -> None:
        pager = channel(BY_KIND["pagerduty"].config(services), ctx)
        await pager.send(firing())
        await pager.send(resolved())

        trigger, resolve = (c.body for c in services.of("pagerduty"))
        key = incident_key('{}:{alertname="HighErrorRate"}')
        assert ("trigger", key) == (trigger["event_action"], trigger["dedup_key"])
        assert {
            "routing_key": PD_ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": key,
        } == resolve
        payload = trigger["payload"]
        assert "critical" == payload["severity"]
        assert payload["summary"].startswith("[FIRING:2] HighErrorRate (critical)")
        assert [
            {"href": "https://runbooks.example.com/high-error-rate", "text": "Runbook"}
        ] == trigger["links"]
        assert 2 == payload["custom_details"]["num_firing"]

    @pytest.mark.parametrize(
        ("severity", "expected"),
        [("critical", "critical"), ("warning", "warning"), ("info", "info")],
    )
    async def test_severity_is_mapped(
        self, services: Services, ctx: ChannelContext, severity: str, expected: str
    ) -> None:
        pager = channel(BY_KIND["pagerduty"].config(services), ctx)
        await pager.send(make_notification([make_alert(severity=severity)]))
        assert [expected] == [c.body["payload"]["severity"] for c in services.of("pagerduty")]

    def test_other_groups_get_other_incidents(self) -> None:
        assert incident_key('{}:{a="1"}') != incident_key('{}:{a="2"}')
        assert 64 == len(incident_key("{}:" + "x" * 10_000))


class TestOpsgenie:
    """A group creates one Opsgenie alert by alias, with responders and priority, and closes it."""

    async def test_create_then_close_by_alias(
        self, services: Services, ctx: ChannelContext
    ) -> None:
        genie = channel(BY_KIND["opsgenie"].config(services), ctx)
        await genie.send(firing())
        await genie.send(resolved())

        create, close = services.of("opsgenie")
        alias = incident_key('{}:{alertname="HighErrorRate"}')
        assert "/v2/alerts" == create.path
        assert f"GenieKey {OPSGENIE_KEY}" == create.headers["Authorization"]
        assert alias == create.body["alias"]
        assert "P1" == create.body["priority"]
        assert [{"type": "team", "name": "ops"}] == create.body["responders"]
        assert f"/v2/alerts/{alias}/close" == close.path
        assert {"identifierType": "alias"} == close.query
        assert "alertd" == close.body["source"]

    @pytest.mark.parametrize(
        ("severity", "priority"), [("critical", "P1"), ("warning", "P3"), ("info", "P5")]
    )
    async def test_priority_follows_severity(
        self, services: Services, ctx: ChannelContext, severity: str, priority: str
    ) -> None:
        genie = channel(BY_KIND["opsgenie"].config(services), ctx)
        await genie.send(make_notification([make_alert(severity=severity)]))
        assert [priority] == [c.body["priority"] for c in services.of("opsgenie")]

    def test_eu_url_and_responder_checks(self) -> None:
        cfg = parse_channel_config(
            {"type": "opsgenie", "api_key": "k", "url": "https://api.eu.opsgenie.com/"}
        )
        assert "https://api.eu.opsgenie.com" == cfg.url  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="exactly one of name, id, username"):
            parse_channel_config(
                {"type": "opsgenie", "api_key": "k", "responders": [{"type": "team"}]}
            )


class TestTeams:
    """A group arrives in Teams as one Adaptive Card whose header colour follows severity."""

    async def test_firing_and_resolved_cards(self, services: Services, ctx: ChannelContext) -> None:
        teams = channel(BY_KIND["teams"].config(services), ctx)
        await teams.send(firing())
        await teams.send(resolved())

        cards = [c.body["attachments"][0]["content"] for c in services.of("teams")]
        assert ["AdaptiveCard", "AdaptiveCard"] == [c["type"] for c in cards]
        assert ["attention", "good"] == [c["body"][0]["style"] for c in cards]
        assert "[FIRING:2] HighErrorRate (critical)" == cards[0]["body"][0]["items"][0]["text"]
        texts = [b.get("text", "") for b in cards[0]["body"][1:]]
        assert 2 == sum("**FIRING** · HighErrorRate" in t for t in texts)
        assert [
            {
                "type": "Action.OpenUrl",
                "title": "Runbook",
                "url": "https://runbooks.example.com/high-error-rate",
            }
        ] == cards[0]["actions"]


class TestDiscord:
    """A group arrives in Discord as one embed coloured by severity, mentions disabled."""

    async def test_firing_and_resolved_embeds(
        self, services: Services, ctx: ChannelContext
    ) -> None:
        discord = channel(BY_KIND["discord"].config(services), ctx)
        await discord.send(firing())
        await discord.send(make_notification([make_alert(severity="warning")]))
        await discord.send(resolved())

        bodies = [c.body for c in services.of("discord")]
        assert [0xE01E5A, 0xECB22E, 0x2EB67D] == [b["embeds"][0]["color"] for b in bodies]
        assert {"parse": []} == bodies[0]["allowed_mentions"]
        assert "[RESOLVED] HighErrorRate" == bodies[2]["embeds"][0]["title"]
        assert (
            "[Runbook](https://runbooks.example.com/high-error-rate)"
            in bodies[0]["embeds"][0]["description"]
        )

    async def test_markdown_in_labels_is_shown_as_typed(
        self, services: Services, ctx: ChannelContext
    ) -> None:
        discord = channel(BY_KIND["discord"].config(services), ctx)
        await discord.send(make_notification([make_alert(extra_labels={"path": "**bold**"})]))
        assert "path=\\*\\*bold\\*\\*" in services.of("discord")[0].body["embeds"][0]["description"]


class TestTelegram:
    """A group arrives in Telegram as one HTML message the Bot API parses."""

    async def test_firing_and_resolved_messages(
        self, services: Services, ctx: ChannelContext
    ) -> None:
        telegram = channel(BY_KIND["telegram"].config(services), ctx)
        await telegram.send(firing())
        await telegram.send(resolved())

        first, second = (c.body for c in services.of("telegram"))
        assert ("HTML", TELEGRAM_CHAT) == (first["parse_mode"], first["chat_id"])
        assert first["text"].startswith("<b>[FIRING:2] HighErrorRate (critical)</b>")
        assert second["text"].startswith("<b>[RESOLVED] HighErrorRate</b>")
        assert True is second["disable_notification"]

    async def test_html_in_labels_is_escaped(self, services: Services, ctx: ChannelContext) -> None:
        telegram = channel(BY_KIND["telegram"].config(services), ctx)
        await telegram.send(make_notification([make_alert(extra_labels={"q": "<script>&"})]))
        assert 1 == len(services.of("telegram"))
        assert "q=&lt;script&gt;&amp;" in services.of("telegram")[0].body["text"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind)
class TestEveryService:
    """What all five share: limits kept, throttling honoured, rejections explained, secrets kept."""

    async def test_a_huge_group_stays_within_the_services_limits(
        self, case: Case, services: Services, ctx: ChannelContext
    ) -> None:
        ch = channel(case.config(services), ctx)
        await ch.send(huge())
        await ch.send(make_notification(huge().alerts, status="resolved"))
        assert [] == services.of(case.kind, ok=False)
        assert 2 == len(services.of(case.kind))

    async def test_429_waits_as_the_service_asks(
        self, case: Case, services: Services, ctx: ChannelContext
    ) -> None:
        services.throttle(case.kind, 1, 1.0)
        ch = channel(case.config(services), ctx)

        result = await deliver(ch, firing(), retry=FAST, rng=random.Random(1))

        assert (True, 2) == (result.ok, result.attempts)
        throttled, accepted = (c.at for c in services.calls)
        assert accepted - throttled >= 0.95

    async def test_a_rejection_is_permanent_and_gives_the_services_reason(
        self, case: Case, services: Services, ctx: ChannelContext
    ) -> None:
        ch = channel(case.refused(services), ctx)

        result = await deliver(ch, firing(), retry=FAST)

        assert (False, True, 1) == (result.ok, result.permanent, result.attempts)
        assert case.reason in result.error

    async def test_secrets_stay_out_of_errors_and_descriptions(
        self, case: Case, services: Services, ctx: ChannelContext
    ) -> None:
        ch = channel(case.config(services), ctx)
        services.throttle(case.kind, 1, 0.0)
        with pytest.raises(DeliveryError) as info:
            await ch.send(firing())
        shown = [str(info.value), repr(ch.describe()), repr(ch.config)]
        assert [] == [s for s in case.secrets for text in shown if s in text]


class TestRetryHintsInTheBody:
    """Discord and Telegram say how long to wait in the JSON body, not only in a header."""

    def test_discord_retry_after_is_fractional_seconds(self, ctx: ChannelContext) -> None:
        ch = channel(
            {"type": "discord", "webhook_url": "https://discord.com/api/webhooks/1/t"}, ctx
        )
        body = '{"message": "You are being rate limited.", "retry_after": 0.25, "global": false}'
        assert 0.25 == ch.rejected(429, body, "1").retry_after_s

    def test_telegram_retry_after_is_in_parameters(self, ctx: ChannelContext) -> None:
        ch = channel({"type": "telegram", "bot_token": "1:x", "chat_id": 1}, ctx)
        body = (
            '{"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 7",'
            ' "parameters": {"retry_after": 7}}'
        )
        assert 7.0 == ch.rejected(429, body, None).retry_after_s


class TestStubsHoldTheLimits:
    """The stubs refuse what their service refuses, so staying within limits is checked."""

    @pytest.mark.parametrize(
        ("kind", "body", "status", "words"),
        [
            (
                "pagerduty",
                {
                    "routing_key": PD_ROUTING_KEY,
                    "event_action": "trigger",
                    "payload": {"summary": "x" * 1025, "source": "s", "severity": "critical"},
                },
                400,
                "'payload.summary' must be 1024 characters or less",
            ),
            ("opsgenie", {"message": "x" * 131}, 422, "Message can not be longer than 130"),
            (
                "teams",
                {"type": "message", "attachments": [{"contentType": "x", "content": {}}]},
                400,
                "InvalidRequestContent",
            ),
            ("discord", {"embeds": [{"title": "x" * 257}]}, 400, "Must be 256 or fewer in length."),
            (
                "telegram",
                {"chat_id": TELEGRAM_CHAT, "text": "x" * 4097, "parse_mode": "HTML"},
                400,
                "Bad Request: message is too long",
            ),
            (
                "telegram",
                {"chat_id": TELEGRAM_CHAT, "text": "<b>open", "parse_mode": "HTML"},
                400,
                "Bad Request: can't parse entities",
            ),
        ],
    )
    async def test_over_the_limit_is_refused(
        self, services: Services, kind: str, body: dict[str, Any], status: int, words: str
    ) -> None:
        url = {
            "pagerduty": services.pagerduty,
            "opsgenie": f"{services.url}/v2/alerts",
            "teams": services.teams,
            "discord": services.discord,
            "telegram": f"{services.url}/bot{TELEGRAM_TOKEN}/sendMessage",
        }[kind]
        headers = {"Authorization": f"GenieKey {OPSGENIE_KEY}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json=body, headers=headers) as resp,
        ):
            assert status == resp.status
            assert words in await resp.text()
