"""The channel interface: one class per channel type, its config model beside it.

A channel turns a Notification into one delivery attempt. It raises
DeliveryError (classified by alertd.notify.retry) on failure and never
retries by itself: retries, backoff, dead letters and fallbacks belong to the
delivery worker, so every channel behaves the same.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from redis.asyncio import Redis

from alertd import __version__
from alertd.channels.payload import template_data
from alertd.channels.templating import (
    ESCAPED_FORMS,
    ChannelTemplate,
    TemplateFailure,
    load_template,
)
from alertd.durations import Duration, format_duration
from alertd.errors import DeliveryError
from alertd.model import Notification
from alertd.notify.retry import http_failure
from alertd.redact import redact


def http_url(value: str, key: str) -> str:
    """`value` when it is an http(s) URL; ValueError naming `key` (never the value: it
    may be a credential) otherwise."""
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{key} must start with http:// or https://")
    return value


class StrictModel(BaseModel):
    """Config models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True
    )


class RetryConfig(StrictModel):
    attempts: int = Field(default=6, ge=1, le=100)
    initial_backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(seconds=60)
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _order(self) -> RetryConfig:
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must be at least initial_backoff")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        return self


class RateLimit(StrictModel):
    """`rate_limit = "20/1m"`: at most `count` notifications per `period`."""

    count: int = Field(ge=1, le=100_000)
    period: Duration

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        count, sep, period = value.partition("/")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"rate_limit {value!r} must be COUNT/DURATION, e.g. '20/1m'")
        return {"count": int(count), "period": period.strip()}

    @model_validator(mode="after")
    def _positive(self) -> RateLimit:
        if self.period <= timedelta(0):
            raise ValueError("rate_limit period must be positive")
        return self

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.period)}"


class ChannelConfig(StrictModel):
    """Keys every channel type takes (docs/channels.md)."""

    # How this type uses a `template` (alertd.channels.templating.FORMS); None: it takes none.
    template_form: ClassVar[str | None] = None

    type: str
    enabled: bool = True
    send_resolved: bool | None = None  # None: the route's send_resolved
    fallback: str | None = None
    retry: RetryConfig = RetryConfig()
    template: str | None = None  # as written: relative to the config file's folder
    rate_limit: RateLimit | None = None  # over it: held, then sent as one digest
    # The file, found by `settings` (which knows the folder), and its mtime: an edited
    # template makes the config differ, so a reload rebuilds the channel with it.
    _template_file: tuple[str, float] | None = PrivateAttr(default=None)

    def with_template_file(self, path: str, mtime: float) -> ChannelConfig:
        copy = self.model_copy()
        copy._template_file = (path, mtime)
        return copy

    @model_validator(mode="after")
    def _takes_template(self) -> ChannelConfig:
        if self.template is not None and self.template_form is None:
            raise ValueError(f"a channel of type '{self.type}' takes no template")
        return self

    def secret_values(self) -> list[str]:
        """Plain values of this config's secrets, to scrub from errors and logs."""
        return []


@dataclass
class ChannelContext:
    """What channels share: one HTTP session, Redis, identity, the clock."""

    http: aiohttp.ClientSession | None = None
    redis: Redis | None = None
    key_prefix: str = "alertd:"
    external_url: str = ""
    user_agent: str = f"alertd/{__version__}"
    now: Callable[[], float] = field(default=lambda: __import__("time").time())

    def session(self) -> aiohttp.ClientSession:
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession()
        return self.http


C = TypeVar("C", bound=ChannelConfig)


class Channel(abc.ABC, Generic[C]):
    """One configured channel. Subclasses set `channel_type` and `config_model`."""

    channel_type: ClassVar[str]
    config_model: ClassVar[type[ChannelConfig]]

    def __init__(self, name: str, config: C, ctx: ChannelContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        self._template: ChannelTemplate | None = None

    def rendered(self, n: Notification, block: str | None = None, html: bool = False) -> str | None:
        """The channel's template rendered for `n` (one `block` of it, or the whole), or
        None without a template. A template that fails is a permanent DeliveryError: it
        fails the same way on every attempt."""
        cfg = self.config
        if cfg.template is None:
            return None
        try:
            if self._template is None:
                path = Path(cfg._template_file[0] if cfg._template_file else cfg.template)
                escaped = cfg.template_form in ESCAPED_FORMS
                self._template = load_template(path, cfg.template, escaped=escaped)
            if block is not None and block not in self._template.blocks:
                return None
            data = template_data(n, self.ctx.external_url)
            # Template lines leave blank lines and indentation at the edges: not content.
            return self._template.render(data, block, html).strip()
        except TemplateFailure as exc:
            raise DeliveryError(f"template {exc}", channel=self.name, retryable=False) from None

    @abc.abstractmethod
    async def send(self, notification: Notification) -> None:
        """Deliver once; raise DeliveryError when the receiver did not accept it."""

    async def close(self) -> None:
        """Release what the channel holds (connections, tasks)."""

    def secrets(self) -> list[str]:
        return self.config.secret_values()

    async def post_json(
        self, url: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """POST a JSON body once; DeliveryError (classified) on anything but 2xx."""
        all_headers = {"Content-Type": "application/json", "User-Agent": self.ctx.user_agent}
        all_headers.update(headers or {})
        timeout = aiohttp.ClientTimeout(total=self.config.retry.timeout.total_seconds())
        try:
            async with self.ctx.session().post(
                url, data=body, headers=all_headers, timeout=timeout, allow_redirects=False
            ) as resp:
                text = await resp.text(errors="replace")
                if not 200 <= resp.status < 300:
                    raise self.rejected(resp.status, text, resp.headers.get("Retry-After"))
                return resp.status, text
        except TimeoutError:
            raise DeliveryError("timed out", channel=self.name, retryable=True) from None
        except aiohttp.ClientError as exc:
            # The message of a connection error can carry the URL: keep only its kind.
            raise DeliveryError(
                f"connection failed: {type(exc).__name__}", channel=self.name, retryable=True
            ) from None

    def rejected(self, status: int, text: str, retry_after: str | None) -> DeliveryError:
        """The classified error for a non-2xx answer, with the service's own reason and
        retry hint (see `reason`, `retry_after_s`) and no secret in it."""
        hint = self.retry_after_s(status, text)
        # Redacted whole, before the error cuts it: a cut secret no longer matches.
        exc = http_failure(
            self.name, status, redact(self.reason(text), self.secrets()), retry_after
        )
        return DeliveryError(
            redact(exc.message, self.secrets()),
            channel=self.name,
            retryable=exc.retryable,
            retry_after_s=hint if hint is not None else exc.retry_after_s,
        )

    def reason(self, text: str) -> str:
        """The service's reason in an error answer's body; the body itself by default."""
        return text

    def retry_after_s(self, status: int, text: str) -> float | None:
        """A retry hint the service puts in the body (Discord, Telegram); None: the header's."""
        return None

    def describe(self) -> dict[str, Any]:
        """A secret-free summary for the API and `alertd check`."""
        return {"type": self.channel_type, "enabled": self.config.enabled}
