"""The webhook channel: Alertmanager v4 JSON to a real receiver, signed per Standard Webhooks."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook
from standardwebhooks.exceptions import WebhookVerificationError

from alertd import __version__
from alertd.channels.base import ChannelContext
from alertd.channels.webhook import WebhookChannel, WebhookConfig
from alertd.errors import DeliveryError
from alertd.model import Alert, Notification, NotifyReason, fingerprint
from tests.conftest import Received, Receiver

T0 = 1_795_456_800.25  # 2026-11-23T18:00:00.250Z
EXTERNAL_URL = "http://alertd.example.com:9099"
SECRET = "whsec_" + base64.b64encode(bytes(range(24))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 124))).decode()
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

ALERT_KEYS = {
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
    "value",
}
PAYLOAD_KEYS = {
    "version",
    "id",
    "receiver",
    "status",
    "alerts",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "groupKey",
    "truncatedAlerts",
}


def make_alert(i: int = 0, *, state: str = "firing", value: float | None = 0.073) -> Alert:
    labels = {"alertname": "HighErrorRate", "service": "api", "severity": "critical"}
    if i:
        labels["instance"] = f"api-{i}"
    return Alert(
        fingerprint=fingerprint(labels),
        rule="HighErrorRate",
        labels=labels,
        annotations={"summary": "api: 7.30% of requests failed over 5m"},
        state=state,  # type: ignore[arg-type]
        severity="critical",
        value=value,
        starts_at=T0,
        ends_at=T0 + 300 if state == "resolved" else None,
    )


def make_notification(alerts: list[Alert]) -> Notification:
    firing = any(a.state != "resolved" for a in alerts)
    return Notification(
        id="01JD3X5Y0C9Q8V7N6M5K4J3H2G",
        receiver="ops-hook",
        status="firing" if firing else "resolved",
        alerts=alerts,
        group_labels={"alertname": "HighErrorRate"},
        group_key='{}:{alertname="HighErrorRate"}',
        reason=NotifyReason.FIRST,
        created_at=T0,
        changed_at=T0,
    )


def header(request: Received, name: str) -> str | None:
    """A request header, whatever case the sender wrote it in."""
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), None)


@pytest.fixture
async def ctx() -> AsyncIterator[ChannelContext]:
    session = aiohttp.ClientSession()
    yield ChannelContext(http=session, external_url=EXTERNAL_URL)
    await session.close()


async def deliver(
    receiver: Receiver, ctx: ChannelContext, n: Notification, **config: Any
) -> Received:
    channel = WebhookChannel("ops-hook", WebhookConfig(url=f"{receiver.url}/hook", **config), ctx)
    await channel.send(n)
    return receiver.received[-1]


class TestPayload:
    """Receivers written for Alertmanager's webhook read alertd's body unchanged."""

    async def test_body_has_exactly_the_spec_keys(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """The body carries the SPEC section 5 keys, no more and no fewer."""
        body = (await deliver(receiver, ctx, make_notification([make_alert()]))).json()

        assert PAYLOAD_KEYS == set(body)
        assert [ALERT_KEYS] == [set(a) for a in body["alerts"]]

    async def test_body_matches_the_spec_example(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """A one-alert group arrives as in the SPEC's example payload."""
        body = (await deliver(receiver, ctx, make_notification([make_alert()]))).json()

        expected = {
            "version": "4",
            "id": "01JD3X5Y0C9Q8V7N6M5K4J3H2G",
            "receiver": "ops-hook",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "HighErrorRate",
                        "service": "api",
                        "severity": "critical",
                    },
                    "annotations": {"summary": "api: 7.30% of requests failed over 5m"},
                    "startsAt": "2026-11-23T18:00:00.250Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": make_alert().fingerprint,
                    "value": 0.073,
                }
            ],
            "groupLabels": {"alertname": "HighErrorRate"},
            "commonLabels": {
                "alertname": "HighErrorRate",
                "service": "api",
                "severity": "critical",
            },
            "commonAnnotations": {"summary": "api: 7.30% of requests failed over 5m"},
            "externalURL": EXTERNAL_URL,
            "groupKey": '{}:{alertname="HighErrorRate"}',
            "truncatedAlerts": 0,
        }
        assert expected == body

    async def test_times_are_rfc3339_with_milliseconds(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """startsAt has milliseconds and Z; endsAt is the zero time until the alert resolves."""
        alerts = [make_alert(1), make_alert(2, state="resolved")]
        body = (await deliver(receiver, ctx, make_notification(alerts))).json()

        firing, resolved = body["alerts"]
        assert RFC3339_MS.match(firing["startsAt"]) is not None
        assert ("firing", "0001-01-01T00:00:00Z") == (firing["status"], firing["endsAt"])
        assert ("resolved", "2026-11-23T18:05:00.250Z") == (
            resolved["status"],
            resolved["endsAt"],
        )

    async def test_large_groups_are_truncated_and_say_so(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """With max_alerts = 2, a group of 5 sends 2 alerts and truncatedAlerts = 3."""
        n = make_notification([make_alert(i) for i in range(1, 6)])
        body = (await deliver(receiver, ctx, n, max_alerts=2)).json()

        assert (2, 3) == (len(body["alerts"]), body["truncatedAlerts"])
        assert [a.fingerprint for a in n.alerts[:2]] == [a["fingerprint"] for a in body["alerts"]]

    async def test_no_max_alerts_sends_the_whole_group(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """With max_alerts = 0 every alert of the group is sent."""
        n = make_notification([make_alert(i) for i in range(1, 6)])
        body = (await deliver(receiver, ctx, n, max_alerts=0)).json()

        assert (5, 0) == (len(body["alerts"]), body["truncatedAlerts"])

    async def test_default_bound_cuts_a_huge_group(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """By default a group of 1,200 alerts is sent as its first 1,000, and says so."""
        n = make_notification([make_alert(i) for i in range(1, 1201)])
        body = (await deliver(receiver, ctx, n)).json()

        assert (1000, 200) == (len(body["alerts"]), body["truncatedAlerts"])


class TestHeaders:
    """The request says what it is and carries the operator's own headers."""

    async def test_content_type_user_agent_and_custom_headers(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """JSON, alertd/<version> and every configured header reach the receiver."""
        request = await deliver(
            receiver, ctx, make_notification([make_alert()]), headers={"X-Team": "ops"}
        )

        assert "/hook" == request.path
        assert ("application/json", f"alertd/{__version__}", "ops") == (
            header(request, "Content-Type"),
            header(request, "User-Agent"),
            header(request, "X-Team"),
        )

    async def test_unsigned_without_a_secret(self, receiver: Receiver, ctx: ChannelContext) -> None:
        """Without a secret (or with an empty one) no signature headers are sent."""
        request = await deliver(receiver, ctx, make_notification([make_alert()]), secret="")

        assert [] == [k for k in request.headers if k.lower().startswith("webhook-")]


class TestSigning:
    """With a whsec_ secret, Standard Webhooks libraries verify every request."""

    async def test_standardwebhooks_verifies_the_request(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """The receiver's standardwebhooks library accepts the body and signature."""
        n = make_notification([make_alert()])
        request = await deliver(receiver, ctx, n, secret=SECRET)

        verified = Webhook(SECRET).verify(request.body, request.headers)

        assert orjson.loads(request.body) == verified
        assert (n.id, n.id) == (header(request, "webhook-id"), verified["id"])

    async def test_a_retry_keeps_the_webhook_id(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """Sending the same notification again reuses its id, so receivers can deduplicate."""
        n = make_notification([make_alert()])
        first = await deliver(receiver, ctx, n, secret=SECRET)
        second = await deliver(receiver, ctx, n, secret=SECRET)

        assert header(first, "webhook-id") == header(second, "webhook-id")
        Webhook(SECRET).verify(second.body, second.headers)

    async def test_wrong_secret_fails_verification(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """A receiver holding another secret rejects the request."""
        request = await deliver(receiver, ctx, make_notification([make_alert()]), secret=SECRET)

        with pytest.raises(WebhookVerificationError):
            Webhook(OTHER_SECRET).verify(request.body, request.headers)

    async def test_tampered_body_fails_verification(
        self, receiver: Receiver, ctx: ChannelContext
    ) -> None:
        """A body changed on the way no longer matches its signature."""
        request = await deliver(receiver, ctx, make_notification([make_alert()]), secret=SECRET)

        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(request.body.replace(b"0.073", b"0.001"), request.headers)

    @pytest.mark.parametrize("secret", ["whsec_not base64!", "plain text secret", "whsec_%%%%"])
    def test_bad_secret_is_a_config_error(self, secret: str) -> None:
        """A secret that is not base64 is refused when the config loads."""
        with pytest.raises(ValidationError):
            WebhookConfig(url="https://hooks.example.com/alertd", secret=secret)

    def test_url_must_be_http(self) -> None:
        """A URL without http:// or https:// is refused when the config loads."""
        with pytest.raises(ValidationError):
            WebhookConfig(url="hooks.example.com/alertd")


class TestAnswers:
    """Any 2xx is accepted; other answers follow the shared retry classifier."""

    @pytest.mark.parametrize("status", [200, 201, 202, 204])
    async def test_any_2xx_is_accepted(
        self, receiver: Receiver, ctx: ChannelContext, status: int
    ) -> None:
        """A receiver answering 2xx has the notification."""
        receiver.script.append((status, {}, ""))

        await deliver(receiver, ctx, make_notification([make_alert()]))

        assert 1 == len(receiver.received)

    @pytest.mark.parametrize(
        ("status", "headers", "retryable", "retry_after_s"),
        [
            (503, {"Retry-After": "7"}, True, 7.0),
            (500, {}, True, None),
            (400, {}, False, None),
            (410, {}, False, None),
        ],
    )
    async def test_failures_are_classified(
        self,
        receiver: Receiver,
        ctx: ChannelContext,
        status: int,
        headers: dict[str, str],
        retryable: bool,
        retry_after_s: float | None,
    ) -> None:
        """5xx is retried (after Retry-After when given); other 4xx goes to the dead letters."""
        receiver.script.append((status, headers, "nope"))

        with pytest.raises(DeliveryError) as info:
            await deliver(receiver, ctx, make_notification([make_alert()]))

        assert (retryable, retry_after_s, f"HTTP {status}: nope", "ops-hook") == (
            info.value.retryable,
            info.value.retry_after_s,
            str(info.value),
            info.value.channel,
        )
