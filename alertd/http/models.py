"""Request and answer bodies of the HTTP API as pydantic models (SPEC 6).

The handlers validate requests with these and build answers from them, and
the OpenAPI document (openapi.py) is generated from them, so the document
cannot drift from what is served. The `/api/v2` models follow Alertmanager's
own API v2 document (`api/v2/openapi.yaml`), written here, not vendored.

Requests to `/api/v2` ignore fields they do not know, as Alertmanager does
(senders of newer versions add some); answers carry exactly these fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    WithJsonSchema,
    field_validator,
)

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
    model_config = ConfigDict(extra="forbid")


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
