"""The email channel against real aiosmtpd servers: plain, STARTTLS + AUTH, implicit TLS."""

# STYLE.md asks for `assert expected == actual`; ruff's SIM300 calls that a Yoda condition.

from __future__ import annotations

import asyncio
import email
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pydantic
import pytest
import redis.asyncio as aioredis
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from alertd.channels.base import ChannelContext
from alertd.channels.email import EmailChannel, EmailConfig
from alertd.errors import DeliveryError
from alertd.model import Alert, Notification, NotifyReason, fingerprint
from alertd.templates import render_template, template_fields
from tests.conftest import free_port, wait_for

USER = "alertd"
PASSWORD = "s3cret-Passw0rd"
GROUP_KEY = '{}:{alertname="HighErrorRate"}'


@dataclass
class Delivered:
    """One message a server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None


@dataclass
class Mailbox:
    """What the servers received, and how they answer the next RCPT / DATA."""

    delivered: list[Delivered] = field(default_factory=list)
    rcpt_reply: str | None = None
    data_reply: str | None = None
    unknown_users: set[str] = field(default_factory=set)

    def reset(self) -> None:
        self.delivered.clear()
        self.unknown_users.clear()
        self.rcpt_reply = None
        self.data_reply = None


class Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.box.rcpt_reply:
            return self.box.rcpt_reply
        if address in self.box.unknown_users:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.box.data_reply:
            return self.box.data_reply
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.box.delivered.append(
            Delivered(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                tls=session.ssl is not None,
                login=session.auth_data.login if session.authenticated else None,
            )
        )
        return "250 OK"


def authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    # handled=False: aiosmtpd itself answers 235 / 535.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass
class Servers:
    box: Mailbox
    plain_port: int
    starttls_port: int  # STARTTLS required; AUTH offered after it
    tls_port: int  # implicit TLS (SMTPS)
    ca_file: str


@pytest.fixture(scope="module")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_file = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    box = Mailbox()
    common: dict[str, Any] = {"hostname": "127.0.0.1", "server_hostname": "localhost"}
    controllers = [
        Controller(Handler(box), port=free_port(), **common),
        Controller(
            Handler(box),
            port=free_port(),
            tls_context=server_ctx,
            require_starttls=True,
            authenticator=authenticate,
            **common,
        ),
        Controller(Handler(box), port=free_port(), ssl_context=server_ctx, **common),
    ]
    started: list[Controller] = []
    try:
        for controller in controllers:
            controller.start()
            started.append(controller)
        plain, starttls, tls = controllers
        yield Servers(box, plain.port, starttls.port, tls.port, str(ca_file))
    finally:
        for controller in started:
            controller.stop()


@pytest.fixture
def servers(_servers: Servers) -> Iterator[Servers]:
    """The module's SMTP servers, with an empty mailbox and default answers."""
    _servers.box.reset()
    yield _servers
    _servers.box.reset()


def make_channel(
    port: int,
    *,
    name: str = "oncall-email",
    redis: aioredis.Redis | None = None,
    **overrides: Any,
) -> EmailChannel:
    raw: dict[str, Any] = {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "alertd <alertd@alerts.example.com>",
        "to": ["oncall@example.com", "lead@example.com"],
        "retry": {"timeout": "2s"},
    }
    raw.update(overrides)
    ctx = ChannelContext(redis=redis, external_url="http://alertd.example.com:9099")
    return EmailChannel(name, EmailConfig.model_validate(raw), ctx)


def make_alert(state: str = "firing", **labels: str) -> Alert:
    all_labels = {"alertname": "HighErrorRate", "severity": "critical", **labels}
    return Alert(
        fingerprint=fingerprint(all_labels),
        rule="HighErrorRate",
        labels=all_labels,
        annotations={
            "summary": "api: 7.30% of requests failed over 5m",
            "description": "Threshold 0.05 & rising",
            "runbook_url": "https://wiki.example.com/runbooks/errors?team=web&x=1",
        },
        state=state,  # type: ignore[arg-type]
        severity=all_labels["severity"],
        value=0.073,
        starts_at=1_795_456_800.0,
        ends_at=1_795_457_100.0 if state == "resolved" else None,
    )


def make_notification(
    status: str = "firing", alerts: list[Alert] | None = None, group_key: str = GROUP_KEY
) -> Notification:
    return Notification(
        id="01JD3X5Y0C9Q8V7N6M5K4J3H2G",
        receiver="oncall-email",
        status=status,  # type: ignore[arg-type]
        alerts=alerts if alerts is not None else [make_alert(status, service="api")],
        group_labels={"alertname": "HighErrorRate"},
        group_key=group_key,
        reason=NotifyReason.RESOLVED if status == "resolved" else NotifyReason.FIRST,
        created_at=1_795_456_860.0,
        changed_at=1_795_456_860.0,
    )


def parts(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML bodies of a multipart/alternative message."""
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


async def delivered(box: Mailbox, count: int = 1) -> list[Delivered]:
    await wait_for(lambda: len(box.delivered) >= count, timeout_s=5)
    return list(box.delivered)


class TestPlainDelivery:
    """An operator gets one readable text + HTML email listing every alert."""

    async def test_multipart_alternative_with_text_and_html(self, servers: Servers) -> None:
        await make_channel(servers.plain_port).send(make_notification())
        (got,) = await delivered(servers.box)
        assert "multipart/alternative" == got.message.get_content_type()
        subtypes = [p.get_content_type() for p in got.message.iter_parts()]
        assert ["text/plain", "text/html"] == subtypes

    async def test_headers_and_envelope(self, servers: Servers) -> None:
        await make_channel(servers.plain_port).send(make_notification())
        (got,) = await delivered(servers.box)
        msg = got.message
        assert "[firing] HighErrorRate (1)" == msg["Subject"]
        assert "alertd <alertd@alerts.example.com>" == msg["From"]
        assert "oncall@example.com, lead@example.com" == msg["To"]
        assert msg["Message-ID"].endswith("@alerts.example.com>")
        assert msg["Date"]
        assert msg["In-Reply-To"] is None
        assert "auto-generated" == msg["Auto-Submitted"]
        assert "alertd@alerts.example.com" == got.mail_from
        assert ["oncall@example.com", "lead@example.com"] == got.rcpt_tos
        assert got.tls is False

    async def test_both_parts_list_labels_value_summary_runbook(self, servers: Servers) -> None:
        await make_channel(servers.plain_port).send(make_notification())
        (got,) = await delivered(servers.box)
        text, html = parts(got.message)
        assert "[FIRING] HighErrorRate" in text
        assert "Labels: alertname=HighErrorRate, service=api, severity=critical" in text
        assert "Value: 0.073" in text
        assert "Summary: api: 7.30% of requests failed over 5m" in text
        assert "Description: Threshold 0.05 & rising" in text
        assert "Runbook: https://wiki.example.com/runbooks/errors?team=web&x=1" in text
        assert "[FIRING]" in html
        assert "alertname=HighErrorRate, service=api, severity=critical" in html
        assert "<td>0.073</td>" in html
        assert "api: 7.30% of requests failed over 5m" in html
        assert "Threshold 0.05 &amp; rising" in html
        url = "https://wiki.example.com/runbooks/errors?team=web&amp;x=1"
        assert f'<a href="{url}">{url}</a>' in html

    async def test_html_escapes_every_value(self, servers: Servers) -> None:
        alert = make_alert(service="<script>alert(1)</script>")
        alert.annotations["runbook_url"] = "javascript:alert(1)"
        await make_channel(servers.plain_port).send(make_notification(alerts=[alert]))
        (got,) = await delivered(servers.box)
        text, html = parts(got.message)
        assert "<script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert '<a href="javascript:' not in html
        assert "service=<script>alert(1)</script>" in text

    async def test_resolved_and_firing_alerts_are_both_listed(self, servers: Servers) -> None:
        alerts = [make_alert("firing", service="api"), make_alert("resolved", service="db")]
        await make_channel(servers.plain_port).send(make_notification(alerts=alerts))
        (got,) = await delivered(servers.box)
        text, _ = parts(got.message)
        assert "1 firing, 1 resolved for oncall-email" in text
        assert text.index("[FIRING] HighErrorRate") < text.index("[RESOLVED] HighErrorRate")
        assert "Ended: 2026-11-23T18:05:00.000Z" in text

    async def test_custom_subject_with_format_spec_and_unknown_field(
        self, servers: Servers
    ) -> None:
        channel = make_channel(
            servers.plain_port, subject="[{status:>8}]|{service}|{nope}|{count:03d}"
        )
        await channel.send(make_notification())
        (got,) = await delivered(servers.box)
        assert "[  firing]|api||001" == got.message["Subject"]

    async def test_newline_in_a_label_does_not_break_the_subject(self, servers: Servers) -> None:
        alert = make_alert(service="api\r\nBcc: evil@example.com")
        await make_channel(servers.plain_port, subject="{service}").send(
            make_notification(alerts=[alert])
        )
        (got,) = await delivered(servers.box)
        assert "api Bcc: evil@example.com" == got.message["Subject"]
        assert got.message["Bcc"] is None


class TestTLS:
    """Mail goes out encrypted, trusting a private CA when told to."""

    async def test_starttls_with_private_ca(self, servers: Servers) -> None:
        channel = make_channel(servers.starttls_port, security="starttls", ca_file=servers.ca_file)
        await channel.send(make_notification())
        (got,) = await delivered(servers.box)
        assert got.tls is True

    async def test_implicit_tls_with_private_ca(self, servers: Servers) -> None:
        channel = make_channel(servers.tls_port, security="tls", ca_file=servers.ca_file)
        await channel.send(make_notification())
        (got,) = await delivered(servers.box)
        assert "[firing] HighErrorRate (1)" == got.message["Subject"]

    @pytest.mark.parametrize("security", ["starttls", "tls"])
    async def test_untrusted_certificate_is_permanent(
        self, servers: Servers, security: str
    ) -> None:
        port = servers.starttls_port if security == "starttls" else servers.tls_port
        channel = make_channel(port, security=security)
        with pytest.raises(DeliveryError) as info:
            await channel.send(make_notification())
        assert (False, "oncall-email") == (info.value.retryable, info.value.channel)
        assert "certificate" in str(info.value)
        assert [] == servers.box.delivered

    async def test_unreadable_ca_file_is_permanent(self, servers: Servers, tmp_path: Path) -> None:
        bad = tmp_path / "ca.pem"
        bad.write_text("not a certificate\n")
        channel = make_channel(servers.starttls_port, security="starttls", ca_file=str(bad))
        with pytest.raises(DeliveryError) as info:
            await channel.send(make_notification())
        assert False is info.value.retryable
        assert str(info.value).startswith("cannot load ca_file")

    async def test_tls_verify_false_accepts_any_certificate(self, servers: Servers) -> None:
        channel = make_channel(servers.starttls_port, security="starttls", tls_verify=False)
        await channel.send(make_notification())
        (got,) = await delivered(servers.box)
        assert got.tls is True


class TestAuth:
    """The channel logs in; a wrong password fails at once and is never shown."""

    async def test_login_then_delivery(self, servers: Servers) -> None:
        channel = make_channel(
            servers.starttls_port,
            security="starttls",
            ca_file=servers.ca_file,
            username=USER,
            password=PASSWORD,
        )
        await channel.send(make_notification())
        (got,) = await delivered(servers.box)
        assert USER.encode() == got.login

    async def test_wrong_password_is_permanent_and_secret(self, servers: Servers) -> None:
        wrong = "wr0ng-" + PASSWORD
        channel = make_channel(
            servers.starttls_port,
            security="starttls",
            ca_file=servers.ca_file,
            username=USER,
            password=wrong,
        )
        with pytest.raises(DeliveryError) as info:
            await channel.send(make_notification())
        err = info.value
        assert False is err.retryable
        assert "535" in str(err)
        assert wrong not in str(err)
        assert wrong not in repr(err.args)
        assert "\n" not in str(err)
        assert [wrong] == channel.secrets()
        assert wrong not in repr(channel.config)

    def test_empty_password_means_none(self) -> None:
        assert [] == make_channel(25, password="").secrets()


class TestThreading:
    """A resolved email shows up in the same thread as the firing one."""

    async def test_resolved_replies_to_firing_through_redis(
        self, servers: Servers, redis: aioredis.Redis
    ) -> None:
        await make_channel(servers.plain_port, redis=redis).send(make_notification("firing"))
        # A fresh channel object (a restart): the Message-ID can only come from Redis.
        await make_channel(servers.plain_port, redis=redis).send(make_notification("resolved"))
        firing, resolved = (d.message for d in await delivered(servers.box, 2))
        assert firing["Message-ID"] == resolved["In-Reply-To"]
        assert firing["Message-ID"] == resolved["References"]
        assert "[resolved] HighErrorRate (1)" == resolved["Subject"]
        (key,) = await redis.keys("alertd:email:msgid:oncall-email:*")
        assert 30 * 86400 - 5 <= await redis.ttl(key) <= 30 * 86400

    async def test_other_groups_are_not_threaded(
        self, servers: Servers, redis: aioredis.Redis
    ) -> None:
        channel = make_channel(servers.plain_port, redis=redis)
        await channel.send(make_notification("firing"))
        await channel.send(make_notification("resolved", group_key='{}:{alertname="Other"}'))
        _, resolved = (d.message for d in await delivered(servers.box, 2))
        assert resolved["In-Reply-To"] is None

    async def test_without_redis_threads_in_process(self, servers: Servers) -> None:
        channel = make_channel(servers.plain_port, name="no-redis-email")
        await channel.send(make_notification("firing"))
        await channel.send(make_notification("resolved"))
        firing, resolved = (d.message for d in await delivered(servers.box, 2))
        assert firing["Message-ID"] == resolved["In-Reply-To"]

    async def test_failed_firing_is_not_remembered(
        self, servers: Servers, redis: aioredis.Redis
    ) -> None:
        servers.box.data_reply = "554 5.6.0 rejected"
        with pytest.raises(DeliveryError):
            await make_channel(servers.plain_port, redis=redis).send(make_notification())
        assert [] == await redis.keys("*")


class TestFailures:
    """Temporary trouble is retried; a permanent refusal goes straight to dead letters."""

    @pytest.mark.parametrize(
        ("stage", "reply", "retryable"),
        [
            ("rcpt", "451 4.7.1 greylisted, try again later", True),
            ("rcpt", "550 5.1.1 no such user", False),
            ("data", "451 4.3.0 temporary failure", True),
            ("data", "552 5.3.4 message too big", False),
        ],
    )
    async def test_smtp_reply_codes(
        self, servers: Servers, stage: str, reply: str, retryable: bool
    ) -> None:
        setattr(servers.box, f"{stage}_reply", reply)
        with pytest.raises(DeliveryError) as info:
            await make_channel(servers.plain_port).send(make_notification())
        assert retryable == info.value.retryable
        assert reply.split()[0] in str(info.value)
        assert "oncall-email" == info.value.channel

    async def test_one_unknown_recipient_does_not_fail_the_others(self, servers: Servers) -> None:
        servers.box.unknown_users.add("lead@example.com")
        await make_channel(servers.plain_port).send(make_notification())
        (got,) = await delivered(servers.box)
        assert ["oncall@example.com"] == got.rcpt_tos

    async def test_closed_port_is_retryable(self) -> None:
        with pytest.raises(DeliveryError) as info:
            await make_channel(free_port()).send(make_notification())
        assert True is info.value.retryable
        assert str(info.value).startswith("connection failed")

    async def test_silent_server_times_out_retryably(self) -> None:
        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # never greets
            writer.close()

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            channel = make_channel(port, retry={"timeout": "200ms"})
            with pytest.raises(DeliveryError) as info:
                await channel.send(make_notification())
        finally:
            server.close()
            await server.wait_closed()
        assert (True, "timed out") == (info.value.retryable, str(info.value))


class TestConfig:
    """Mistakes in an email channel's config are reported when it is loaded."""

    @pytest.mark.parametrize(
        "subject", ["{a.b}", "{a[0]}", "{}", "{0}", "{status!r}", "{value:{width}}", "{status"]
    )
    def test_subject_template_rejected(self, subject: str) -> None:
        with pytest.raises(pydantic.ValidationError) as info:
            make_channel(25, subject=subject)
        assert "subject" in str(info.value)

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("to", []),
            ("to", ["not-an-address"]),
            ("from", "alertd"),
            ("port", 0),
            ("port", 65536),
            ("security", "ssl"),
            ("smtp_host", "x"),
            ("ca_file", "/nonexistent/ca.pem"),
        ],
    )
    def test_invalid_values_rejected(self, key: str, value: Any) -> None:
        raw = {"host": "smtp.example.com", "from": "a@example.com", "to": ["b@example.com"]}
        with pytest.raises(pydantic.ValidationError):
            EmailConfig.model_validate({**raw, key: value})

    def test_defaults(self) -> None:
        cfg = EmailConfig.model_validate(
            {"host": "smtp.example.com", "from": "a@example.com", "to": ["b@example.com"]}
        )
        assert (587, "starttls", "", None, True) == (
            cfg.port,
            cfg.security,
            cfg.username,
            cfg.password,
            cfg.tls_verify,
        )
        assert "[{status}] {alertname} ({count})" == cfg.subject


class TestTemplates:
    """Subject templates fill plain fields and never fail at send time."""

    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ("[{status}] {alertname} ({count})", "[firing] HighErrorRate (3)"),
            ("{missing}|{status}", "|firing"),
            ("{count:.1%}", "300.0%"),
            ("{alertname:.2f}", "HighErrorRate"),
            ("{{literal}} {count}", "{literal} 3"),
            ("{a.b}", ""),
        ],
    )
    def test_render(self, template: str, expected: str) -> None:
        fields = {"status": "firing", "alertname": "HighErrorRate", "count": 3}
        assert expected == render_template(template, fields)

    def test_fields_in_order_once(self) -> None:
        assert ["status", "alertname", "count"] == template_fields(
            "[{status}] {alertname} {status} ({count:d})"
        )
