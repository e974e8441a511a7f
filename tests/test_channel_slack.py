"""The Slack channel against a local stub that answers as Slack's incoming webhooks do."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from slack_sdk.models.attachments import BlockAttachment
from slack_sdk.models.blocks import Block

from alertd.channels.base import ChannelContext
from alertd.channels.slack import SlackChannel, SlackConfig, slack_payload
from alertd.errors import DeliveryError
from alertd.model import Alert, Notification, NotifyReason, fingerprint
from tests.conftest import Receiver, RedisServer, free_port, wait_for

T0 = 1_790_000_000.0


def make_alert(
    i: int = 0,
    *,
    name: str = "HighErrorRate",
    severity: str = "critical",
    state: str = "firing",
    value: float | None = 0.073,
    summary: str = "api: 7.30% of requests failed over 5m",
    runbook: str = "https://runbooks.example.com/high-error-rate",
    extra_labels: dict[str, str] | None = None,
) -> Alert:
    labels = {"alertname": name, "service": "api", "instance": f"api-{i}", "severity": severity}
    labels.update(extra_labels or {})
    annotations = {"summary": summary}
    if runbook:
        annotations["runbook_url"] = runbook
    return Alert(
        fingerprint=fingerprint(labels),
        rule=name,
        labels=labels,
        annotations=annotations,
        state=state,  # type: ignore[arg-type]
        severity=severity,
        value=value,
        starts_at=T0,
        ends_at=T0 + 60 if state == "resolved" else None,
    )


def make_notification(alerts: list[Alert], status: str | None = None) -> Notification:
    firing = any(a.state != "resolved" for a in alerts)
    return Notification(
        id="01JD3X5Y0C9Q8V7N6M5K4J3H2G",
        receiver="slack-alerts",
        status=status or ("firing" if firing else "resolved"),  # type: ignore[arg-type]
        alerts=alerts,
        group_labels={"alertname": alerts[0].alertname} if alerts else {},
        group_key='{}:{alertname="HighErrorRate"}',
        reason=NotifyReason.FIRST,
        created_at=T0,
        changed_at=T0,
    )


def blocks_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = payload["attachments"][0]["blocks"]
    return blocks


def validate_with_slack_sdk(payload: dict[str, Any]) -> None:
    """slack_sdk's own models are the checker: each raises on a broken limit."""
    parsed = [Block.parse(b) for b in blocks_of(payload)]
    for block in parsed:
        assert block is not None
        block.validate_json()
    attachment = payload["attachments"][0]
    BlockAttachment(
        blocks=parsed,  # type: ignore[arg-type]
        color=attachment["color"],
        fallback=attachment["fallback"],
    ).validate_json()


def section_texts(payload: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in blocks_of(payload) if b["type"] == "section"]


@pytest.fixture
async def ctx() -> AsyncIterator[ChannelContext]:
    session = aiohttp.ClientSession()
    yield ChannelContext(http=session)
    await session.close()


@pytest.fixture
def slack_url(receiver: Receiver) -> str:
    """A webhook URL of its own per test, so rate limits never carry over between tests."""
    return f"{receiver.url}/services/T0000/B0000/{uuid.uuid4().hex}"


def slack_channel(url: str, ctx: ChannelContext, **config: Any) -> SlackChannel:
    return SlackChannel("slack-alerts", SlackConfig(webhook_url=url, **config), ctx)


async def send_error(channel: SlackChannel, n: Notification) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await channel.send(n)
    return info.value


class TestPayloadShape:
    """A group arrives as one message: a summary line and a coloured card of its alerts."""

    def test_firing_group_has_summary_line_header_and_a_section_per_alert(self) -> None:
        """The notification preview reads "[FIRING:2] HighErrorRate (critical)"."""
        payload = slack_payload(make_notification([make_alert(0), make_alert(1)]))

        assert "[FIRING:2] HighErrorRate (critical)" == payload["text"]
        assert 1 == len(payload["attachments"])
        assert ["header", "section", "section"] == [b["type"] for b in blocks_of(payload)]
        header = blocks_of(payload)[0]["text"]
        assert {"type": "plain_text", "text": payload["text"], "emoji": True} == header

    @pytest.mark.parametrize(
        ("severity", "color"),
        [("critical", "#E01E5A"), ("warning", "#ECB22E"), ("info", "#36C5F0")],
    )
    def test_bar_colour_follows_severity(self, severity: str, color: str) -> None:
        """The card's side bar is red, yellow or blue by the group's severity."""
        payload = slack_payload(make_notification([make_alert(severity=severity)]))

        assert color == payload["attachments"][0]["color"]

    def test_most_severe_firing_alert_sets_the_colour(self) -> None:
        """One critical alert among warnings makes the whole card red."""
        alerts = [make_alert(0, severity="warning"), make_alert(1, severity="critical")]
        payload = slack_payload(make_notification(alerts))

        assert "#E01E5A" == payload["attachments"][0]["color"]
        assert "[FIRING:2] HighErrorRate (critical)" == payload["text"]

    def test_section_lists_status_value_summary_labels_and_runbook(self) -> None:
        """Each alert shows what fired, its value, summary, labels and a runbook link."""
        payload = slack_payload(make_notification([make_alert(7)]))

        expected = (
            ":red_circle: *FIRING* · *HighErrorRate* · critical\n"
            "*Value:* 0.073\n"
            "*Summary:* api: 7.30% of requests failed over 5m\n"
            "*Labels:* instance=api-7, service=api\n"
            "<https://runbooks.example.com/high-error-rate|:book: Runbook>"
        )
        assert [expected] == section_texts(payload)

    def test_markup_in_labels_is_shown_not_interpreted(self) -> None:
        """A label value like <!channel> appears as text and pings nobody."""
        alert = make_alert(extra_labels={"note": "<!channel> & co"})
        payload = slack_payload(make_notification([alert]))

        assert "note=&lt;!channel&gt; &amp; co" in section_texts(payload)[0]
        assert "<!channel>" not in section_texts(payload)[0]

    def test_channel_username_and_icon_are_sent_only_when_set(self) -> None:
        """Overrides for legacy webhooks go along when configured, and only then."""
        n = make_notification([make_alert()])
        plain = slack_payload(n)
        custom = slack_payload(n, channel="#ops", username="alertd", icon_emoji=":rotating_light:")

        assert {"text", "attachments"} == set(plain)
        assert ("#ops", "alertd", ":rotating_light:") == (
            custom["channel"],
            custom["username"],
            custom["icon_emoji"],
        )


class TestResolvedMessage:
    """A resolved group turns green and says so."""

    def test_resolved_group_is_green_and_titled_resolved(self) -> None:
        """When everything has recovered the card is green and reads [RESOLVED]."""
        payload = slack_payload(make_notification([make_alert(state="resolved")]))

        assert "#2EB67D" == payload["attachments"][0]["color"]
        assert "[RESOLVED] HighErrorRate" == payload["text"]
        assert section_texts(payload)[0].startswith(":large_green_circle: *RESOLVED*")

    def test_firing_alerts_are_listed_before_resolved_ones(self) -> None:
        """In a mixed group the alerts still firing come first."""
        alerts = [make_alert(0, state="resolved"), make_alert(1, severity="warning")]
        payload = slack_payload(make_notification(alerts))

        assert ["FIRING", "RESOLVED"] == [t.split("*")[1] for t in section_texts(payload)]
        assert "#ECB22E" == payload["attachments"][0]["color"]


class TestSlackLimits:
    """However large the group, Slack accepts the message."""

    def test_two_hundred_alerts_fit_in_fifty_blocks(self) -> None:
        """A storm of 200 alerts shows 48 of them and says how many more there are."""
        payload = slack_payload(make_notification([make_alert(i) for i in range(200)]))

        blocks = blocks_of(payload)
        assert 50 == len(blocks)
        assert 48 == len(section_texts(payload))
        more = {"type": "mrkdwn", "text": "…and 152 more alerts"}
        assert {"type": "context", "elements": [more]} == blocks[-1]
        assert all(len(t) <= 3000 for t in section_texts(payload))
        validate_with_slack_sdk(payload)

    @pytest.mark.parametrize(
        ("count", "sections", "more"), [(49, 49, None), (50, 48, "…and 2 more alerts")]
    )
    def test_blocks_at_the_boundary(self, count: int, sections: int, more: str | None) -> None:
        """49 alerts all fit; from 50 on, the last block counts the rest."""
        payload = slack_payload(make_notification([make_alert(i) for i in range(count)]))

        blocks = blocks_of(payload)
        last = blocks[-1]["elements"][0]["text"] if blocks[-1]["type"] == "context" else None
        assert (50, sections, more) == (len(blocks), len(section_texts(payload)), last)
        validate_with_slack_sdk(payload)

    def test_long_summary_and_labels_are_cut_but_runbook_kept(self) -> None:
        """A huge summary is cut with … and the runbook link still works."""
        labels = {f"label_{k:03d}": "v" * 40 for k in range(100)}
        alert = make_alert(summary="x&y " * 2000, extra_labels=labels)
        payload = slack_payload(make_notification([alert]))

        text = section_texts(payload)[0]
        assert 3000 >= len(text)
        assert text.endswith("…\n<https://runbooks.example.com/high-error-rate|:book: Runbook>")
        validate_with_slack_sdk(payload)

    def test_cut_never_leaves_half_an_escape(self) -> None:
        """Cutting text full of & never shows a broken "&am" in Slack."""
        payload = slack_payload(make_notification([make_alert(summary="&" * 5000, runbook="")]))

        text = section_texts(payload)[0]
        assert text.endswith("&amp;…")
        validate_with_slack_sdk(payload)

    def test_long_alert_name_is_cut_in_the_header(self) -> None:
        """An alert name of 300 characters still gives a valid header of at most 150."""
        payload = slack_payload(make_notification([make_alert(name="N" * 300)]))

        header = blocks_of(payload)[0]["text"]["text"]
        assert (150, "…") == (len(header), header[-1])
        validate_with_slack_sdk(payload)


class TestDelivery:
    """Slack's answers decide between delivered, retried later and given up."""

    async def test_ok_answer_delivers_the_payload(
        self, receiver: Receiver, slack_url: str, ctx: ChannelContext
    ) -> None:
        """A 200 "ok" from Slack is a delivered message with exactly the built payload."""
        n = make_notification([make_alert()])
        await slack_channel(slack_url, ctx).send(n)

        assert [slack_payload(n)] == receiver.bodies()
        assert "application/json" == receiver.received[0].headers["Content-Type"]

    async def test_rate_limited_answer_is_retried_after_retry_after(
        self, receiver: Receiver, slack_url: str, ctx: ChannelContext
    ) -> None:
        """Slack's 429 is retried, no sooner than its Retry-After."""
        receiver.script.append((429, {"Retry-After": "1"}, "rate_limited"))

        exc = await send_error(slack_channel(slack_url, ctx), make_notification([make_alert()]))

        assert (True, 1.0) == (exc.retryable, exc.retry_after_s)

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (400, "invalid_payload"),
            (403, "invalid_token"),
            (404, "no_service"),
            (410, "channel_is_archived"),
        ],
    )
    async def test_client_errors_are_permanent(
        self, receiver: Receiver, slack_url: str, ctx: ChannelContext, status: int, body: str
    ) -> None:
        """A payload or URL Slack refuses goes straight to the dead letters, with Slack's reason."""
        receiver.script.append((status, {}, body))

        exc = await send_error(slack_channel(slack_url, ctx), make_notification([make_alert()]))

        assert (False, f"HTTP {status}: {body}", "slack-alerts") == (
            exc.retryable,
            str(exc),
            exc.channel,
        )

    async def test_server_error_is_retried(
        self, receiver: Receiver, slack_url: str, ctx: ChannelContext
    ) -> None:
        """A 500 from Slack is a passing fault: retried."""
        receiver.script.append((500, {}, "internal_error"))

        exc = await send_error(slack_channel(slack_url, ctx), make_notification([make_alert()]))

        assert (True, None) == (exc.retryable, exc.retry_after_s)

    async def test_unreachable_slack_is_retried(self, ctx: ChannelContext) -> None:
        """With nothing listening, the attempt fails as retryable."""
        url = f"http://127.0.0.1:{free_port()}/services/T0000/B0000/{uuid.uuid4().hex}"

        exc = await send_error(slack_channel(url, ctx), make_notification([make_alert()]))

        assert True is exc.retryable
        assert url not in str(exc)


class TestWebhookUrlStaysSecret:
    """The webhook URL is a credential: no error or description shows it."""

    @pytest.mark.parametrize(
        "answer",
        [
            (429, {"Retry-After": "1"}, "rate_limited"),
            (400, {}, "invalid_payload"),
            (500, {}, "internal_error"),
            (404, {}, "no_service"),
        ],
    )
    async def test_errors_never_contain_the_url(
        self,
        receiver: Receiver,
        slack_url: str,
        ctx: ChannelContext,
        answer: tuple[int, dict[str, str], str],
    ) -> None:
        """Whatever Slack answers, the error text carries no webhook URL."""
        receiver.script.append(answer)

        exc = await send_error(slack_channel(slack_url, ctx), make_notification([make_alert()]))

        assert [] == [s for s in (str(exc), repr(exc), *map(str, exc.args)) if slack_url in s]

    async def test_an_answer_echoing_the_url_is_redacted(
        self, receiver: Receiver, slack_url: str, ctx: ChannelContext
    ) -> None:
        """Even a receiver that repeats the URL in its answer does not leak it."""
        receiver.script.append((400, {}, f"no such hook {slack_url}"))

        exc = await send_error(slack_channel(slack_url, ctx), make_notification([make_alert()]))

        assert "HTTP 400: no such hook ***" == str(exc)

    def test_config_errors_and_description_hide_the_url(self) -> None:
        """A mistyped URL is rejected without being printed; describe() never shows it."""
        bad = "hooks.slack.com/services/T0000/B0000/XXXXSECRETXXXX"
        with pytest.raises(ValidationError) as info:
            SlackConfig(webhook_url=bad)
        assert "XXXXSECRETXXXX" not in str(info.value)

        good = "https://hooks.slack.com/services/T0000/B0000/XXXXSECRETXXXX"
        channel = SlackChannel("s", SlackConfig(webhook_url=good), ChannelContext())
        assert [good] == channel.secrets()
        assert "XXXXSECRETXXXX" not in repr(channel.describe())
        assert "XXXXSECRETXXXX" not in repr(channel.config)

    @pytest.mark.parametrize("rate", [0, -1.0, float("inf")])
    def test_rate_limit_must_be_a_positive_number(self, rate: float) -> None:
        """A rate limit of zero, below zero or infinite is a config error."""
        with pytest.raises(ValidationError):
            SlackConfig(webhook_url="https://hooks.slack.com/x", rate_limit_per_s=rate)


class TestRateLimit:
    """At most one message per second reaches one webhook URL."""

    async def test_two_messages_to_one_url_are_a_second_apart(
        self, receiver: Receiver, slack_url: str, ctx: ChannelContext
    ) -> None:
        """Two groups flushed together reach Slack one second apart, not in a burst."""
        channel = slack_channel(slack_url, ctx)
        n = make_notification([make_alert()])

        await asyncio.gather(channel.send(n), channel.send(n))

        first, second = sorted(r.at for r in receiver.received)
        assert second - first >= 0.9

    async def test_other_urls_are_not_held_back(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """A busy webhook does not slow down the one of another channel."""
        urls = [f"{receiver.url}/services/T0000/B0000/{uuid.uuid4().hex}" for _ in range(2)]
        n = make_notification([make_alert()])

        await asyncio.gather(*(slack_channel(u, ctx).send(n) for u in urls))

        first, second = sorted(r.at for r in receiver.received)
        assert second - first < 0.5

    async def test_replicas_share_the_limit_through_redis(
        self, receiver: Receiver, slack_url: str, redis: aioredis.Redis
    ) -> None:
        """Two alertd replicas posting to one URL still keep a second apart."""
        sessions = [aiohttp.ClientSession() for _ in range(2)]
        try:
            replicas = [
                slack_channel(slack_url, ChannelContext(http=s, redis=redis)) for s in sessions
            ]
            n = make_notification([make_alert()])
            await asyncio.gather(*(r.send(n) for r in replicas))
        finally:
            for s in sessions:
                await s.close()

        first, second = sorted(r.at for r in receiver.received)
        assert second - first >= 0.9
        digest = hashlib.sha1(slack_url.encode()).hexdigest()
        assert [f"alertd:slack:rl:{digest}".encode()] == await redis.keys("*")

    async def test_a_post_by_another_replica_holds_this_one_back(
        self, receiver: Receiver, slack_url: str, redis: aioredis.Redis, ctx: ChannelContext
    ) -> None:
        """A message another replica just sent makes this one wait for its turn."""
        digest = hashlib.sha1(slack_url.encode()).hexdigest()
        await redis.set(f"alertd:slack:rl:{digest}", b"1", px=800)
        started = time.time()

        shared = ChannelContext(http=ctx.http, redis=redis)
        channel = slack_channel(slack_url, shared)
        task = asyncio.create_task(channel.send(make_notification([make_alert()])))
        await wait_for(lambda: receiver.received)
        await task

        assert receiver.received[0].at - started >= 0.7

    async def test_redis_down_falls_back_to_the_local_limit(
        self, receiver: Receiver, slack_url: str, private_redis: RedisServer, ctx: ChannelContext
    ) -> None:
        """With Redis unreachable, messages still go out, a second apart."""
        client = aioredis.Redis.from_url(private_redis.url)
        private_redis.stop()
        try:
            channel = slack_channel(slack_url, ChannelContext(http=ctx.http, redis=client))
            n = make_notification([make_alert()])
            await asyncio.gather(channel.send(n), channel.send(n))
        finally:
            await client.aclose()

        first, second = sorted(r.at for r in receiver.received)
        assert second - first >= 0.9
