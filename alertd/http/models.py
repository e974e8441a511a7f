"""Request and answer bodies of the HTTP API as pydantic models.

The handlers validate requests with these and build answers from them, and
the OpenAPI document (openapi.py) is generated from them, so the document
cannot drift from what is served. The `/api/v2` models follow Alertmanager's
own API v2 document (`api/v2/openapi.yaml`), written here, not vendored.

Requests to `/api/v2` ignore fields they do not know, as Alertmanager does
(senders of newer versions add some); those to `/api/v1` refuse them.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictFloat,
    WithJsonSchema,
    field_validator,
)

from alertd import events
from alertd.model import SEVERITIES, parse_rfc3339
from alertd.settings import LABEL_RE

MAX_POSTED_ALERTS = 1000  # per request; Prometheus sends at most 256
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 4096
MAX_ANNOTATIONS = 64
MAX_ANNOTATION_CHARS = 16_384

LabelSet = dict[str, str]
# An answer's time, already written as RFC 3339 UTC (alertd.model.rfc3339)
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Answer(BaseModel):
    # A reader of an answer must take fields it does not know: the document does not
    # forbid them (additionalProperties), so adding one later breaks no client.
    model_config = ConfigDict(extra="ignore")


# --- /api/v2: alerts ----------------------------------------------------------------


class PostableAlert(_Request):
    """One alert as Prometheus, Grafana, vmalert or amtool post it."""

    # Sizes are checked by the validators below, to word their errors for the sender.
    labels: LabelSet = Field(json_schema_extra={"minProperties": 1, "maxProperties": MAX_LABELS})
    annotations: LabelSet = Field(
        default_factory=dict, json_schema_extra={"maxProperties": MAX_ANNOTATIONS}
    )
    startsAt: AwareDatetime | None = None
    endsAt: AwareDatetime | None = None
    generatorURL: str = Field(default="", max_length=MAX_LABEL_VALUE_CHARS)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: LabelSet) -> LabelSet:
        if not v:
            raise ValueError("at least one label is required")
        _check_names(v, "label", MAX_LABELS, MAX_LABEL_VALUE_CHARS)
        if not any(v.values()):
            raise ValueError("at least one label must have a value")
        return v

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: LabelSet) -> LabelSet:
        _check_names(v, "annotation", MAX_ANNOTATIONS, MAX_ANNOTATION_CHARS)
        return v


def _check_names(pairs: LabelSet, kind: str, max_count: int, max_chars: int) -> None:
    if len(pairs) > max_count:
        raise ValueError(f"at most {max_count} {kind}s, got {len(pairs)}")
    for name, value in pairs.items():
        if not LABEL_RE.match(name) or len(name) > 200:
            raise ValueError(f"{kind} name {name[:60]!r} is not valid ([A-Za-z_][A-Za-z0-9_]*)")
        if len(value) > max_chars:
            raise ValueError(f"{kind} {name} is longer than {max_chars} characters")


class PostableAlerts(RootModel[list[PostableAlert]]):
    """The body of `POST /api/v2/alerts`: a list of alerts."""

    root: list[PostableAlert] = Field(max_length=MAX_POSTED_ALERTS)


class ReceiverReference(_Answer):
    name: str


class AlertStatus(_Answer):
    state: Literal["unprocessed", "active", "suppressed"]
    silencedBy: list[str]
    inhibitedBy: list[str]
    mutedBy: list[str]


class GettableAlert(_Answer):
    """A current alert (a rule's or a posted one) as Alertmanager shows it."""

    labels: LabelSet
    annotations: LabelSet
    receivers: list[ReceiverReference]
    fingerprint: str
    startsAt: Timestamp
    updatedAt: Timestamp
    endsAt: Timestamp
    generatorURL: str
    status: AlertStatus


class AlertGroup(_Answer):
    """Alerts as one channel of one group hears of them."""

    labels: LabelSet
    routeLabels: LabelSet
    receiver: ReceiverReference
    alerts: list[GettableAlert]


# --- /api/v2: silences --------------------------------------------------------------


class SilenceMatcher(BaseModel):
    """`isEqual: false` negates; `isRegex: true` makes `value` a full-match regex."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    value: str
    isRegex: bool
    isEqual: bool = True


class PostableSilence(_Request):
    """A new silence, or with `id` a change to an existing one."""

    id: str | None = None
    matchers: list[SilenceMatcher] = Field(min_length=1)
    startsAt: AwareDatetime
    endsAt: AwareDatetime
    createdBy: str
    comment: str


class SilenceStatus(_Answer):
    state: Literal["expired", "active", "pending"]


class GettableSilence(_Answer):
    id: str
    status: SilenceStatus
    updatedAt: Timestamp
    matchers: list[SilenceMatcher]
    startsAt: Timestamp
    endsAt: Timestamp
    createdBy: str
    comment: str
    # Newer Alertmanagers (0.28+) list silence annotations; alertd keeps none.
    annotations: LabelSet = Field(default_factory=dict)


class SilenceCreated(_Answer):
    silenceID: str


# --- /api/v2: status and receivers --------------------------------------------------


class ClusterStatus(_Answer):
    name: str
    status: Literal["ready", "settling", "disabled"]
    peers: list[dict[str, str]]


class VersionInfo(_Answer):
    version: str
    revision: str
    branch: str
    buildUser: str
    buildDate: str
    goVersion: str


class AlertmanagerConfig(_Answer):
    original: str


class AlertmanagerStatus(_Answer):
    cluster: ClusterStatus
    versionInfo: VersionInfo
    config: AlertmanagerConfig
    uptime: Timestamp


class Receiver(_Answer):
    name: str


# --- /api/v1 -------------------------------------------------------------------------


class _V1Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Error(_Answer):
    """Every error answer (4xx, 5xx)."""

    error: str
    details: list[str]


class Event(_V1Request):
    """One event. The API and the consumer validate events with the fast
    validator of alertd.events; this model states the same rules for the document
    (tests/test_models.py checks they agree)."""

    name: str = Field(max_length=events.MAX_NAME, pattern=r"^[A-Za-z_:][A-Za-z0-9_:.-]*$")
    value: StrictFloat = 1.0
    labels: dict[str, Annotated[str, Field(max_length=events.MAX_LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=events.MAX_LABELS
    )
    # Absent means now; a null is refused (as the fast validator does).
    ts: Annotated[
        StrictFloat | str | None,
        WithJsonSchema(
            {
                "description": "unix seconds or an RFC 3339 time; default: now",
                "oneOf": [
                    {"type": "number", "minimum": 0, "maximum": 1e11},
                    {"type": "string", "format": "date-time"},
                ],
            }
        ),
    ] = None

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("value must be a finite number")
        return v

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not LABEL_RE.match(name) or name.startswith("__"):
                raise ValueError(f"label name {name[:60]!r} is not valid")
        return v

    @field_validator("ts")
    @classmethod
    def _time(cls, v: float | str | None) -> float | str | None:
        if v is None:
            raise ValueError("ts must be unix seconds or an RFC 3339 time")
        if isinstance(v, str):
            parse_rfc3339(v)  # ValueError: not a time
        elif not (math.isfinite(v) and 0 <= v <= 1e11):
            raise ValueError("ts must be unix seconds (not milliseconds)")
        return v


class Events(RootModel[Event | list[Event]]):
    """The body of `POST /api/v1/events`: one event or an array of up to 1000."""

    root: Event | Annotated[list[Event], Field(max_length=events.MAX_ARRAY)]


class Accepted(_Answer):
    accepted: int


class AlertGroupRef(_Answer):
    """One aggregation group an alert is notified in, and what mutes it now."""

    groupKey: str
    groupLabels: LabelSet
    channels: list[str]
    mutedBy: list[str]


class V1Alert(_Answer):
    """A current alert in /api/v1 (a rule's or a posted one: `rule` empty)."""

    labels: LabelSet
    annotations: LabelSet
    state: Literal["pending", "firing"]
    severity: str = Field(description="a rule's level; a posted alert's severity label")
    value: float | None
    startsAt: Timestamp
    fingerprint: str
    rule: str
    silencedBy: list[str]
    inhibitedBy: list[str]
    mutedBy: list[str] = Field(
        default_factory=list, description="time intervals muting one of its routes now"
    )
    groups: list[AlertGroupRef] = Field(
        default_factory=list, description="the aggregation groups it is notified in"
    )


class V1Alerts(_Answer):
    alerts: list[V1Alert]
    next_cursor: str | None = Field(default=None, description="present when more alerts follow")


class Series(_Answer):
    fingerprint: str
    labels: LabelSet
    state: Literal["pending", "firing"]
    severity: str
    value: float | None


class V1Rule(_Answer):
    name: str
    file: str
    metric: str
    divide_by: str | None
    aggregate: str
    window: str = Field(examples=["5m"])
    for_: str = Field(alias="for", examples=["1m"])
    group_by: list[str]
    match: LabelSet
    levels: LabelSet = Field(examples=[{"warning": "> 0.01", "critical": "> 0.05"}])
    recovery: LabelSet
    labels: LabelSet
    channels: list[str] | None
    series: list[Series]


class V1Rules(_Answer):
    rules: list[V1Rule]


MatcherSpecs = dict[str, str | list[str]]


class SilenceRequest(_V1Request):
    """A new silence: matchers in the config's syntax (`~` regex, `!` negation), and how long."""

    matchers: LabelSet = Field(
        description="label -> value; '~' regex, '!' negation",
        examples=[{"service": "api", "env": "~prod.*"}],
    )
    duration: str | None = Field(default=None, examples=["2h"])
    startsAt: AwareDatetime | None = None
    endsAt: AwareDatetime | None = None
    createdBy: str
    comment: str | None = None


class V1Silence(_Answer):
    id: str
    matchers: MatcherSpecs = Field(
        description="label -> spec; a label matched more than once (made through /api/v2)"
        " has the list of its specs"
    )
    startsAt: Timestamp
    endsAt: Timestamp
    createdBy: str
    comment: str
    createdAt: Timestamp
    status: Literal["pending", "active", "expired"]


class V1Silences(_Answer):
    silences: list[V1Silence]


class SilenceId(_Answer):
    id: str


class SilenceExpired(_Answer):
    id: str
    status: Literal["expired"]


class TestAlertRequest(_V1Request):
    channel: str | Annotated[list[str], Field(min_length=1)] | None = Field(
        default=None, description="a channel name or a list of them; default every enabled one"
    )
    severity: Literal[SEVERITIES] = "critical"  # type: ignore[valid-type]


class DeliveryResult(_Answer):
    ok: bool
    attempts: int
    latency_ms: float
    error: str | None = None


class TestAlertResults(_Answer):
    results: dict[str, DeliveryResult]


class Reloaded(_Answer):
    status: Literal["reloaded"]
    rules: int
    channels: int


class DeadLetter(BaseModel):
    """A dead-letter entry; its other fields depend on its source."""

    model_config = ConfigDict(extra="allow")

    id: str
    source: Literal["event", "notification"]
    reason: str
    at: str


class DeadLetters(_Answer):
    dead_letters: list[DeadLetter]


class NotificationRecord(_Answer):
    """One notification in the history (GET /api/v1/notifications)."""

    id: str
    channel: str
    groupKey: str
    reason: str
    status: Literal["firing", "resolved"]
    alerts: int
    fingerprints: list[str]
    outcome: Literal["pending", "delivered", "dead-lettered", "held"]
    attempts: int
    last_error: str
    queued_at: Timestamp
    delivered_at: Timestamp | None
    digest: str | None = None


class Notifications(_Answer):
    notifications: list[NotificationRecord]


class ReplayRequest(_V1Request):
    ids: Annotated[list[str], Field(min_length=1)] | None = None


class ReplayFailure(_Answer):
    id: str
    error: str


class ReplayResult(_Answer):
    replayed: list[str]
    failed: list[ReplayFailure]
    not_found: list[str]


# --- probes ---------------------------------------------------------------------------


class RedisCheck(_Answer):
    status: Literal["ok", "down"]
    latency_ms: float | None = None
    writable: bool | None = None
    error: str | None = None


class ConsumerCheck(_Answer):
    lag: int | None
    pending: int | None
    joined: bool
    stalled_s: float | None = None


class RulesCheck(_Answer):
    loaded: int
    last_reload_error: str | None


class ChannelCheck(_Answer):
    status: Literal["ok", "degraded", "failing", "disabled"]
    consecutive_failures: int
    last_success: Timestamp | None
    last_error: str | None = None


class HealthChecks(_Answer):
    redis: RedisCheck
    consumer: ConsumerCheck
    rules: RulesCheck
    channels: dict[str, ChannelCheck]


class Health(_Answer):
    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: Timestamp
    version: str
    uptime_s: float
    checks: HealthChecks
    reason: str | None = None


class Ready(_Answer):
    status: Literal["ready", "not ready"]
    reason: str | None = None


class Live(_Answer):
    status: str


def dump(model: BaseModel) -> Any:
    """An answer model as JSON-ready data (aliases, no unset optional error fields)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=False)


class EmptyRequest(_V1Request):
    """A body with no fields (or none at all)."""
