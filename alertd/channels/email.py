"""The `email` channel: one multipart (text + HTML) message per notification over SMTP.

Owns the subject template (a safe `{field}` formatter), the
message body, threading (a resolved message answers the firing one through
`In-Reply-To`/`References`, remembered in Redis) and the mapping of every SMTP
failure to a classified DeliveryError.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import os
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, ClassVar, Literal

import aiosmtplib
import structlog
from pydantic import Field, SecretStr, field_validator
from redis.exceptions import RedisError

from alertd.channels.base import Channel, ChannelConfig, ChannelContext
from alertd.errors import DeliveryError
from alertd.model import Alert, Notification, rfc3339
from alertd.notify.retry import Outcome, classify_smtp_code
from alertd.redact import MASK, redact
from alertd.templates import render_template, template_fields

log = structlog.get_logger("alertd.channels.email")

THREAD_TTL_S = 30 * 86400
_LOCAL_THREADS_MAX = 10_000
# Without Redis, firing Message-IDs live here: module-level so a reload, which
# builds new channel objects, keeps threading (a restart does not).
_local_threads: dict[str, tuple[str, float]] = {}


# --- config ---------------------------------------------------------------------------------


def _mailbox(value: str) -> str:
    """The address of `value` ("Name <a@b>" or "a@b"); ValueError when it is not one."""
    if "\r" in value or "\n" in value:
        raise ValueError("an address must be one line")
    _, addr = parseaddr(value)
    local, at, domain = addr.rpartition("@")
    if not (at and local and domain):
        raise ValueError(f"{value!r} is not an email address")
    return addr


class EmailConfig(ChannelConfig):
    template_form: ClassVar[str | None] = "email"

    type: Literal["email"] = "email"
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: SecretStr | None = None
    from_: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    subject: str = "[{status}] {alertname} ({count})"
    ca_file: str | None = None  # replaces the system CA bundle (self-signed servers)
    tls_verify: bool = True

    @field_validator("from_")
    @classmethod
    def _from_address(cls, v: str) -> str:
        _mailbox(v)
        return v

    @field_validator("to")
    @classmethod
    def _to_addresses(cls, v: list[str]) -> list[str]:
        for item in v:
            _mailbox(item)
        return v

    @field_validator("password")
    @classmethod
    def _empty_password(cls, v: SecretStr | None) -> SecretStr | None:
        # `password = "${SMTP_PASSWORD:-}"` expands to "" when unset: no password.
        return v if v is not None and v.get_secret_value() else None

    @field_validator("subject")
    @classmethod
    def _subject_template(cls, v: str) -> str:
        template_fields(v)  # ValueError unless plain {name} / {name:spec} fields
        return v

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, v: str | None) -> str | None:
        if v is not None and not os.path.isfile(v):
            raise ValueError(f"ca_file {v!r} is not a file")
        return v

    def secret_values(self) -> list[str]:
        return [self.password.get_secret_value()] if self.password else []

    @property
    def from_address(self) -> str:
        return _mailbox(self.from_)


# --- message --------------------------------------------------------------------------------


def format_value(value: float | None) -> str:
    return "" if value is None else format(value, ".12g")


def _status(alert: Alert) -> str:
    return "RESOLVED" if alert.state == "resolved" else "FIRING"


def _alert_rows(alert: Alert) -> list[tuple[str, str]]:
    """(name, text) lines describing one alert, shared by the text and HTML parts."""
    labels = ", ".join(f"{k}={alert.labels[k]}" for k in sorted(alert.labels))
    rows = [("Severity", alert.severity), ("Labels", labels)]
    if alert.value is not None:
        rows.append(("Value", format_value(alert.value)))
    rows.append(("Started", rfc3339(alert.starts_at)))
    if alert.state == "resolved":
        rows.append(("Ended", rfc3339(alert.ends_at)))
    for key in ("summary", "description"):
        if alert.annotations.get(key):
            rows.append((key.capitalize(), alert.annotations[key]))
    return rows


def _ordered(n: Notification) -> list[Alert]:
    return n.firing + n.resolved


def _intro(n: Notification) -> str:
    counts = [f"{len(n.firing)} firing"] if n.firing else []
    counts += [f"{len(n.resolved)} resolved"] if n.resolved else []
    group = ", ".join(f"{k}={v}" for k, v in sorted(n.group_labels.items()))
    return f"{', '.join(counts)} for {n.receiver}" + (f" (group {group})" if group else "")


def text_body(n: Notification, external_url: str = "") -> str:
    lines = [_intro(n), ""]
    for alert in _ordered(n):
        lines.append(f"[{_status(alert)}] {alert.alertname}")
        lines.extend(f"  {name}: {text}" for name, text in _alert_rows(alert))
        if alert.annotations.get("runbook_url"):
            lines.append(f"  Runbook: {alert.annotations['runbook_url']}")
        lines.append("")
    if external_url:
        lines += ["-- ", f"alertd {external_url}"]
    return "\n".join(lines) + "\n"


def _link(url: str) -> str:
    e = html.escape(url, quote=True)
    # Only web links become clickable: a `javascript:` runbook stays inert text.
    return f'<a href="{e}">{e}</a>' if url.startswith(("http://", "https://")) else e


_COLOR = {"FIRING": "#c0392b", "RESOLVED": "#27ae60"}


def html_body(n: Notification, external_url: str = "") -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><body style="font-family: sans-serif">',
        f"<p>{e(_intro(n))}</p>",
    ]
    for alert in _ordered(n):
        status = _status(alert)
        parts.append(
            f'<h3><span style="color: {_COLOR[status]}">[{status}]</span> {e(alert.alertname)}</h3>'
        )
        parts.append("<table>")
        rows = [(e(name), e(text)) for name, text in _alert_rows(alert)]
        if alert.annotations.get("runbook_url"):
            rows.append(("Runbook", _link(alert.annotations["runbook_url"])))
        parts.extend(f'<tr><th align="left">{name}</th><td>{cell}</td></tr>' for name, cell in rows)
        parts.append("</table>")
    if external_url:
        parts.append(f"<p><small>alertd {_link(external_url)}</small></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


# --- errors ---------------------------------------------------------------------------------


def _cert_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _classify(exc: BaseException) -> tuple[str, bool]:
    """(message, retryable) for one failed SMTP exchange."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients
        retryable = any(classify_smtp_code(r.code) is Outcome.RETRY for r in refused)
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
        return f"recipients refused: {detail}", retryable
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        auth = isinstance(exc, aiosmtplib.SMTPAuthenticationError)
        what = "authentication failed" if auth else "refused"
        retryable = classify_smtp_code(exc.code) is Outcome.RETRY
        return f"SMTP {exc.code} {what}: {exc.message}", retryable
    if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts, asyncio.timeout
        return "timed out", True
    if _cert_error(exc):
        # Retrying cannot fix a certificate: dead-letter now so the fallback runs.
        return "TLS certificate verification failed (see ca_file / tls_verify)", False
    if isinstance(exc, OSError):  # refused, reset, disconnected, TLS handshake
        return f"connection failed: {type(exc).__name__}: {exc}", True
    # STARTTLS or AUTH not offered, an address SMTP cannot carry: configuration.
    return f"{type(exc).__name__}: {exc}", False


def smtp_failure(channel: str, exc: BaseException, secrets: list[str]) -> DeliveryError:
    """The classified DeliveryError for `exc`, one line, with no secret in it."""
    message, retryable = _classify(exc)
    message = redact(one_line(message, 300), secrets)
    for secret in secrets:
        if secret and secret in message:  # redact() leaves very short secrets alone
            message = message.replace(secret, MASK)
    return DeliveryError(one_line(message), channel=channel, retryable=retryable)


# --- channel --------------------------------------------------------------------------------


class EmailChannel(Channel[EmailConfig]):
    channel_type: ClassVar[str] = "email"
    config_model: ClassVar[type[ChannelConfig]] = EmailConfig

    def __init__(self, name: str, config: EmailConfig, ctx: ChannelContext) -> None:
        super().__init__(name, config, ctx)
        self._tls: ssl.SSLContext | None = None

    def thread_key(self, group_key: str) -> str:
        digest = hashlib.sha1(group_key.encode(), usedforsecurity=False).hexdigest()
        return f"{self.ctx.key_prefix}email:msgid:{self.name}:{digest}"

    def build_message(self, n: Notification, in_reply_to: str | None = None) -> EmailMessage:
        cfg = self.config
        domain = cfg.from_address.rpartition("@")[2]
        msg = EmailMessage()
        subject = self.rendered(n, "subject")
        if subject is None:
            subject = render_template(cfg.subject, n.template_fields())
        # Labels may hold newlines; a header must not (nor be split into two).
        msg["Subject"] = " ".join(subject.strip().splitlines())
        msg["From"] = cfg.from_
        msg["To"] = ", ".join(cfg.to)
        msg["Date"] = formatdate(self.ctx.now(), usegmt=True)
        msg["Message-ID"] = make_msgid(idstring=n.id, domain=domain)
        if in_reply_to:
            msg["In-Reply-To"] = in_reply_to
            msg["References"] = in_reply_to
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
        text = self.rendered(n, "text")
        html_part = self.rendered(n, "html", html=True)
        msg.set_content(text if text is not None else text_body(n, self.ctx.external_url))
        if html_part is None:
            html_part = html_body(n, self.ctx.external_url)
        msg.add_alternative(html_part, subtype="html")
        return msg

    async def send(self, notification: Notification) -> None:
        key = self.thread_key(notification.group_key)
        firing_id = await self._recall(key) if notification.status == "resolved" else None
        msg = self.build_message(notification, in_reply_to=firing_id)
        try:
            await self._deliver(msg)
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            # OSError covers TimeoutError and ssl.SSLError.
            raise smtp_failure(self.name, exc, self.secrets()) from None
        if notification.status == "firing":
            await self._remember(key, str(msg["Message-ID"]))

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            cfg = self.config
            try:
                context = ssl.create_default_context(cafile=cfg.ca_file)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise DeliveryError(
                    f"cannot load ca_file {cfg.ca_file!r}: {type(exc).__name__}",
                    channel=self.name,
                    retryable=False,
                ) from None
            if not cfg.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls

    async def _deliver(self, msg: EmailMessage) -> None:
        cfg = self.config
        timeout_s = cfg.retry.timeout.total_seconds()
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            timeout=timeout_s,
            tls_context=self._tls_context() if cfg.security != "none" else None,
        )
        try:
            # `timeout` bounds each SMTP command; this bounds the whole attempt.
            async with asyncio.timeout(timeout_s):
                await smtp.connect()
                if cfg.username:
                    password = cfg.password.get_secret_value() if cfg.password else ""
                    await smtp.login(cfg.username, password)
                refused, _ = await smtp.send_message(
                    msg, sender=cfg.from_address, recipients=cfg.to
                )
            if refused:
                # Others got it: a retry would send them a duplicate, so only say so.
                log.warning(
                    "email recipients refused",
                    channel=self.name,
                    refused={rcpt: reply.code for rcpt, reply in refused.items()},
                )
            # The message was accepted: a failed goodbye must not make the worker resend it.
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
        finally:
            smtp.close()

    async def _recall(self, key: str) -> str | None:
        """The Message-ID of the group's firing message, if one was sent and remembered."""
        redis = self.ctx.redis
        if redis is None:
            entry = _local_threads.get(key)
            return entry[0] if entry and entry[1] > time.monotonic() else None
        try:
            value = await redis.get(key)
        except RedisError as exc:
            # Threading is a nicety: deliver unthreaded rather than not at all.
            log.warning("email thread lookup failed", channel=self.name, error=type(exc).__name__)
            return None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _remember(self, key: str, message_id: str) -> None:
        redis = self.ctx.redis
        if redis is None:
            now = time.monotonic()
            if len(_local_threads) >= _LOCAL_THREADS_MAX:
                for k in [k for k, (_, exp) in _local_threads.items() if exp <= now]:
                    del _local_threads[k]
                if len(_local_threads) >= _LOCAL_THREADS_MAX:
                    del _local_threads[next(iter(_local_threads))]
            _local_threads[key] = (message_id, now + THREAD_TTL_S)
            return
        try:
            await redis.set(key, message_id, ex=THREAD_TTL_S)
        except RedisError as exc:
            # Sent already: failing here would make the worker send it again.
            log.warning("email thread not stored", channel=self.name, error=type(exc).__name__)

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **super().describe(),
            "host": cfg.host,
            "port": cfg.port,
            "security": cfg.security,
            "to": list(cfg.to),
        }
