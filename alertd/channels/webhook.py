"""The `webhook` channel: Alertmanager v4 JSON (a superset), signed per Standard Webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, SecretStr, field_validator

from alertd.channels.base import Channel, ChannelConfig
from alertd.channels.payload import webhook_payload
from alertd.errors import DeliveryError
from alertd.model import Notification
from alertd.redact import query_secrets

DEFAULT_MAX_ALERTS = 1000

__all__ = ["WebhookChannel", "WebhookConfig", "sign", "signing_key", "webhook_payload"]


class WebhookConfig(ChannelConfig):
    template_form: ClassVar[str | None] = "json"

    type: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # A group can hold thousands of alerts; receivers choke on bodies of tens of MB.
    max_alerts: int = Field(default=DEFAULT_MAX_ALERTS, ge=0)  # 0: all

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return v

    @field_validator("secret")
    @classmethod
    def _secret_decodes(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value():
            return None
        signing_key(v.get_secret_value())  # raises ValueError on a bad secret
        return v

    def secret_values(self) -> list[str]:
        # Header values (Authorization, X-Api-Key) and the URL's query (?api_key=) carry
        # credentials as often as the signing secret does.
        out = [*self.headers.values(), *query_secrets(self.url)]
        if self.secret is not None:
            # A receiver echoing the key may echo it without the `whsec_` prefix.
            value = self.secret.get_secret_value()
            out += [value, value.removeprefix("whsec_")]
        return out


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional `whsec_`."""
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except ValueError:
        raise ValueError("secret must be base64, optionally prefixed 'whsec_'") from None
    if not key:
        raise ValueError("secret is empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>`."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookChannel(Channel[WebhookConfig]):
    channel_type: ClassVar[str] = "webhook"
    config_model: ClassVar[type[ChannelConfig]] = WebhookConfig

    async def send(self, notification: Notification) -> None:
        cfg = self.config
        text = self.rendered(notification)
        if text is None:
            body = orjson.dumps(
                webhook_payload(notification, self.ctx.external_url, cfg.max_alerts)
            )
        else:
            body = text.encode()
            try:
                orjson.loads(body)
            except ValueError as exc:
                raise DeliveryError(
                    f"template {cfg.template} does not render JSON ({exc})",
                    channel=self.name,
                    retryable=False,
                ) from None
        headers = dict(cfg.headers)
        if cfg.secret is not None:
            ts = int(self.ctx.now())
            headers["webhook-id"] = notification.id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = sign(
                cfg.secret.get_secret_value(), notification.id, ts, body
            )
        await self.post_json(cfg.url, body, headers)

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {**super().describe(), "signed": cfg.secret is not None}
