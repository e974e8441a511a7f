"""Delivery through a running daemon: retries, Retry-After, dead letters, isolation, fallback."""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

import orjson
import pytest
import redis.asyncio as aioredis
from standardwebhooks import Webhook

from alertd.channels.base import Channel, ChannelConfig, ChannelContext, RetryConfig
from alertd.errors import DeliveryError
from alertd.model import Alert, Notification, NotifyReason, fingerprint, new_id
from alertd.notify.delivery import deliver
from alertd.notify.outbox import Outbox
from alertd.notify.retry import Outcome
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, free_port, keys_like, wait_for

SECRET = "whsec_" + base64.b64encode(bytes(range(7, 31))).decode()
FAST_RETRY = 'initial_backoff = "50ms"\nmax_backoff = "200ms"\n'
SPEC_DEAD_LETTER_FIELDS = {
    "source",
    "reason",
    "at",
    "channel",
    "notification_id",
    "attempts",
    "last_error",
    "payload",
}


def make_notification(
    receiver: str, series: str = "a", alertname: str = "DiskFull", severity: str = "warning"
) -> Notification:
    """A firing notification of one alert; a warning, so it is queued on the channel's
    outbox (a critical one takes its urgent lane)."""
    now = time.time()
    labels = {"alertname": alertname, "severity": severity, "series": series}
    alert = Alert(
        fingerprint(labels),
        alertname,
        labels,
        {"summary": f"{series}: disk 97% full"},
        "firing",
        severity,
        97.0,
        now,
        updated_at=now,
    )
    return Notification(
        id=new_id(now),
        receiver=receiver,
        status="firing",
        alerts=[alert],
        group_labels={"alertname": alertname, "series": series},
        group_key=f'{{}}:{{alertname="{alertname}", series="{series}"}}',
        reason=NotifyReason.FIRST,
        created_at=now,
        changed_at=now,
    )


def webhook(name: str, url: str, extra: str = "", retry: str = FAST_RETRY) -> str:
    head = f'[channels.{name}]\ntype = "webhook"\nurl = "{url}"\n{extra}\n'
    return head + f"[channels.{name}.retry]\n{retry}"


async def dead_letters(redis: aioredis.Redis) -> list[dict[str, str]]:
    rows = await redis.xrange("alertd:dead")
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows]


async def outbox_len(redis: aioredis.Redis, channel: str) -> int:
    """Entries in the channel's streams of every partition: its outboxes and urgent lanes."""
    streams = [
        *await keys_like(redis, f"alertd:{{p*}}:outbox:{channel}"),
        *await keys_like(redis, f"alertd:{{p*}}:urgent:{channel}"),
    ]
    return sum([await redis.xlen(stream) for stream in streams])


def outbox_empty(redis: aioredis.Redis, channel: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return 0 == await outbox_len(redis, channel)

    return check


def dead_letters_at_least(
    redis: aioredis.Redis, count: int
) -> Callable[[], Awaitable[list[dict[str, str]]]]:
    async def check() -> list[dict[str, str]]:
        letters = await dead_letters(redis)
        return letters if len(letters) >= count else []

    return check


class TestRetriedUntilDelivered:
    """A receiver failing twice, then accepting, gets it once: the same id on every attempt."""

    async def test_500_500_200_is_one_delivery_with_one_webhook_id(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=webhook("hook", f"{receiver.url}/hook", f'secret = "{SECRET}"'))
        await daemons.start()
        receiver.script = [(500, {}, "oops"), (500, {}, "oops")]
        n = make_notification("hook")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)

        await wait_for(lambda: len(receiver.received) >= 3)
        await wait_for(outbox_empty(redis, "hook"))
        await asyncio.sleep(0.3)  # nothing more may come
        ids = [(r.headers["webhook-id"], r.json()["id"]) for r in receiver.received]
        assert [(n.id, n.id)] * 3 == ids
        for r in receiver.received:
            Webhook(SECRET).verify(r.body, r.headers)
        assert [] == await dead_letters(redis)

    async def test_429_retry_after_is_waited(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=webhook("hook", f"{receiver.url}/hook"))
        await daemons.start()
        receiver.script = [(429, {"Retry-After": "1"}, "slow down")]
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(make_notification("hook"))

        await wait_for(lambda: len(receiver.received) >= 2, timeout_s=5)
        first, second = receiver.received[:2]
        assert second.at - first.at >= 1.0
        await wait_for(outbox_empty(redis, "hook"))


class TestPermanentFailure:
    """A refusal (4xx) is not retried: it lands once in the dead letters, without secrets."""

    async def test_400_goes_to_the_dead_letters_once(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=webhook("hook", f"{receiver.url}/hook", f'secret = "{SECRET}"'))
        await daemons.start()
        bare = SECRET.removeprefix("whsec_")
        receiver.script = [(400, {}, f"bad signature for {SECRET} / {bare}")]
        n = make_notification("hook")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)

        letters = await wait_for(lambda: dead_letters(redis))
        await wait_for(outbox_empty(redis, "hook"))
        await asyncio.sleep(0.3)
        assert 1 == len(receiver.received)
        assert 1 == len(letters)
        letter = letters[0]
        assert SPEC_DEAD_LETTER_FIELDS == set(letter)
        expected = {
            "source": "notification",
            "reason": "permanent failure",
            "channel": "hook",
            "notification_id": n.id,
            "attempts": "1",
            "last_error": "HTTP 400: bad signature for *** / ***",
        }
        assert expected == {k: letter[k] for k in expected}
        assert letter["at"].endswith("Z")
        assert n.alerts[0].labels == orjson.loads(letter["payload"])["alerts"][0]["labels"]
        assert [] == [k for k, v in letter.items() if SECRET in v or bare in v]

    async def test_retries_exhausted_is_a_dead_letter_too(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        retry = 'attempts = 3\ninitial_backoff = "10ms"\nmax_backoff = "20ms"\n'
        daemons.write(channels=webhook("hook", f"{receiver.url}/hook", retry=retry))
        await daemons.start()
        receiver.default = (503, {}, "maintenance")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(make_notification("hook"))

        letters = await wait_for(lambda: dead_letters(redis))
        assert ("retries exhausted", "3", "HTTP 503: maintenance") == (
            letters[0]["reason"],
            letters[0]["attempts"],
            letters[0]["last_error"],
        )
        assert 3 == len(receiver.received)


class FlakyChannel(Channel[ChannelConfig]):
    """A handler-style channel: fails with the given errors, then accepts."""

    channel_type = "flaky"
    config_model = ChannelConfig

    def __init__(self, errors: list[DeliveryError]) -> None:
        super().__init__("flaky", ChannelConfig(type="flaky"), ChannelContext())
        self.errors = errors
        self.sent = 0

    async def send(self, notification: Notification) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent += 1


class TestBackoffSchedule:
    """Waits between attempts grow with full jitter, within the channel's retry settings."""

    @staticmethod
    def retry(attempts: int = 6) -> RetryConfig:
        return RetryConfig(
            attempts=attempts,
            initial_backoff=timedelta(seconds=1),
            max_backoff=timedelta(seconds=4),
        )

    async def test_waits_stay_under_the_exponential_cap(self) -> None:
        errors = [DeliveryError("HTTP 503", retryable=True) for _ in range(5)]
        channel = FlakyChannel(errors)
        waits: list[float] = []
        outcomes: list[Outcome] = []

        async def sleep(s: float) -> None:
            waits.append(s)

        result = await deliver(
            channel,
            make_notification("flaky"),
            self.retry(),
            random.Random(3),
            outcomes.append,
            sleep,
        )
        assert (True, 6, 1) == (result.ok, result.attempts, channel.sent)
        assert [Outcome.RETRY] * 5 + [Outcome.OK] == outcomes
        caps = [1.0, 2.0, 4.0, 4.0, 4.0]
        assert [] == [(w, c) for w, c in zip(waits, caps, strict=True) if not 0 <= w <= c]

    async def test_retry_after_is_a_lower_bound_even_past_max_backoff(self) -> None:
        errors = [DeliveryError("HTTP 429", retryable=True, retry_after_s=30.0)]
        waits: list[float] = []

        async def sleep(s: float) -> None:
            waits.append(s)

        result = await deliver(
            FlakyChannel(errors), make_notification("flaky"), self.retry(), sleep=sleep
        )
        assert (True, [30.0]) == (result.ok, waits)

    async def test_attempts_bound_the_retries(self) -> None:
        errors = [DeliveryError("HTTP 503", retryable=True) for _ in range(10)]

        async def sleep(s: float) -> None:
            return None

        result = await deliver(
            FlakyChannel(errors), make_notification("flaky"), self.retry(3), sleep=sleep
        )
        assert (False, 3, False, "HTTP 503") == (
            result.ok,
            result.attempts,
            result.permanent,
            result.error,
        )


RULES = """
[[rules]]
name = "Over"
metric = "load"
group_by = ["series"]
critical = "> 100"
"""


@pytest.fixture
def silent_smtp() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung mail server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


class TestChannelIsolation:
    """A dead mail server never holds back the webhook of the same alert."""

    @pytest.mark.parametrize("smtp", ["closed", "silent"])
    async def test_webhook_delivered_while_email_still_retries(
        self,
        daemons: DaemonFactory,
        redis: aioredis.Redis,
        receiver: Receiver,
        silent_smtp: int,
        smtp: str,
    ) -> None:
        port = free_port() if smtp == "closed" else silent_smtp
        mail = (
            f'[channels.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {port}\n'
            'security = "none"\nfrom = "alertd@example.com"\nto = ["ops@example.com"]\n'
            '[channels.mail.retry]\nattempts = 20\ninitial_backoff = "100ms"\n'
            'max_backoff = "300ms"\ntimeout = "500ms"\n'
        )
        daemons.write(
            RULES,
            mail + webhook("hook", f"{receiver.url}/hook"),
            '\n[[routes]]\nchannels = ["mail", "hook"]\n',
        )
        app = await daemons.start()
        sent_at = time.monotonic()
        await redis.xadd("alertd:events", {"name": "load", "value": "500", "series": "x"})

        await wait_for(lambda: receiver.bodies("/hook"), timeout_s=2)
        assert time.monotonic() - sent_at < 2.0

        def mail_retries() -> float:
            labels = {"channel": "mail", "outcome": "retry"}
            value = app.metrics.registry.get_sample_value(
                "alertd_notification_attempts_total", labels
            )
            return value or 0.0

        await wait_for(lambda: mail_retries() >= 2, timeout_s=3)
        assert (1, 0, 1) == (
            await outbox_len(redis, "mail"),
            await outbox_len(redis, "hook"),
            app.workers.health["mail"].in_flight,
        )
        assert [] == await dead_letters(redis)


class TestFallback:
    """What a channel could not deliver goes through its fallback channel too."""

    async def test_refused_notification_reaches_the_fallback(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        channels = webhook("primary", f"{receiver.url}/primary", 'fallback = "backup"')
        channels += "\n" + webhook("backup", f"{receiver.url}/backup")
        daemons.write(channels=channels)
        await daemons.start()
        receiver.script = [(400, {}, "no such team")]
        n = make_notification("primary")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)

        backup = (await wait_for(lambda: receiver.bodies("/backup")))[0]
        primary = receiver.bodies("/primary")[0]
        assert ("primary", "backup") == (primary["receiver"], backup["receiver"])
        assert primary["alerts"] == backup["alerts"]
        assert ["primary"] == [d["channel"] for d in await dead_letters(redis)]

    async def test_a_failing_fallback_does_not_fall_back_again(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        channels = webhook("a", f"{receiver.url}/a", 'fallback = "b"')
        channels += "\n" + webhook("b", f"{receiver.url}/b", 'fallback = "a"')
        daemons.write(channels=channels)
        await daemons.start()
        receiver.default = (400, {}, "no")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(make_notification("a"))

        letters = await wait_for(dead_letters_at_least(redis, 2))
        await asyncio.sleep(0.3)
        assert ["a", "b"] == [d["channel"] for d in letters]
        assert ["/a", "/b"] == [r.path for r in receiver.received]


SLACK_RETRY = '[channels.slack.retry]\ninitial_backoff = "50ms"\nmax_backoff = "200ms"\n'


class TestSlackThroughTheDaemon:
    """Slack gets its message; its rate limits are waited out and its refusals dead-lettered."""

    def config(self, daemons: DaemonFactory, receiver: Receiver) -> None:
        url = f"{receiver.url}/services/T000/B000/XXXX"
        daemons.write(
            channels=f'[channels.slack]\ntype = "slack"\nwebhook_url = "{url}"\n' + SLACK_RETRY
        )

    async def test_ok_answer_delivers_a_block_kit_message(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        self.config(daemons, receiver)
        await daemons.start()
        page = make_notification("slack", severity="critical")  # through the urgent lane
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(page)

        body = (await wait_for(lambda: receiver.bodies()))[0]
        assert "[FIRING:1] DiskFull (critical)" == body["text"]
        assert "header" == body["attachments"][0]["blocks"][0]["type"]
        await wait_for(outbox_empty(redis, "slack"))

    async def test_rate_limited_then_ok(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        self.config(daemons, receiver)
        await daemons.start()
        receiver.script = [(429, {"Retry-After": "1"}, "rate_limited")]
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(make_notification("slack"))

        await wait_for(lambda: len(receiver.received) >= 2, timeout_s=5)
        await wait_for(outbox_empty(redis, "slack"))
        assert receiver.received[1].at - receiver.received[0].at >= 1.0
        assert [] == await dead_letters(redis)

    async def test_invalid_payload_is_dead_lettered_without_the_url(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        self.config(daemons, receiver)
        await daemons.start()
        receiver.script = [(400, {}, "invalid_payload")]
        n = make_notification("slack")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)

        letter = (await wait_for(lambda: dead_letters(redis)))[0]
        assert ("slack", n.id, "permanent failure", "HTTP 400: invalid_payload") == (
            letter["channel"],
            letter["notification_id"],
            letter["reason"],
            letter["last_error"],
        )
        assert [] == [k for k, v in letter.items() if "/services/" in v]
        assert 1 == len(receiver.received)


class TestReload:
    """Disabling a channel holds its notifications; enabling it again delivers them."""

    async def test_disabled_channel_keeps_its_queue_until_enabled(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=webhook("hook", f"{receiver.url}/hook"))
        app = await daemons.start()
        channel_file = daemons.dir / "channels" / "test.toml"
        channel_file.write_text(webhook("hook", f"{receiver.url}/hook", "enabled = false"))
        assert None is await app.reload()
        n = make_notification("hook")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)

        await asyncio.sleep(0.3)
        assert ([], 1) == (receiver.received, await outbox_len(redis, "hook"))
        channel_file.write_text(webhook("hook", f"{receiver.url}/hook"))
        assert None is await app.reload()
        await wait_for(lambda: receiver.bodies("/hook"))
        assert [n.id] == [b["id"] for b in receiver.bodies("/hook")]
