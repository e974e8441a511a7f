"""Stream entries and API bodies to validated Events (SPEC section 2).

A fast hand-written validator: it runs once per event on the hot path, so no
pydantic model per event. Every failure is an EventError whose reason is one
line a producer can act on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from alertd.errors import EventError
from alertd.model import Event, parse_rfc3339

NAME_RE = re.compile(r"[A-Za-z_:][A-Za-z0-9_:.-]*")
LABEL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 200
MAX_LABELS = 32
MAX_LABEL_VALUE = 1024
MAX_ARRAY = 1000
MAX_ENTRY_BYTES = 1024 * 1024
_EVENT_KEYS = frozenset(("name", "value", "labels", "ts"))


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise EventError("name is required and must be a non-empty string")
    if len(name) > MAX_NAME:
        raise EventError(f"name is longer than {MAX_NAME} characters")
    if not NAME_RE.fullmatch(name):
        raise EventError(f"name {name[:60]!r} must match [A-Za-z_:][A-Za-z0-9_:.-]*")
    return name


def _check_value(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError("value must be a number")
    v = float(value)
    if not math.isfinite(v):
        raise EventError("value must be a finite number")
    return v


def _check_labels(labels: object) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise EventError("labels must be an object of string values")
    if len(labels) > MAX_LABELS:
        raise EventError(f"at most {MAX_LABELS} labels (got {len(labels)})")
    for k, v in labels.items():
        if not LABEL_NAME_RE.fullmatch(k) or k.startswith("__"):
            raise EventError(
                f"label name {k[:60]!r} must match [A-Za-z_][A-Za-z0-9_]* and not start with __"
            )
        if not isinstance(v, str):
            raise EventError(f"label {k} must be a string")
        if len(v) > MAX_LABEL_VALUE:
            raise EventError(f"label {k} is longer than {MAX_LABEL_VALUE} characters")
    return labels


def _check_ts(ts: object) -> float:
    if isinstance(ts, str):
        try:
            return parse_rfc3339(ts)
        except ValueError:
            raise EventError(f"ts {ts[:40]!r} is not unix seconds or an RFC 3339 time") from None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        raise EventError("ts must be unix seconds or an RFC 3339 string")
    if ts > 1e11:  # milliseconds by mistake would land in the year 5000
        raise EventError("ts must be in seconds, not milliseconds")
    return float(ts)


def event_from_object(obj: object, default_ts: float) -> Event:
    """One JSON event object to an Event."""
    if not isinstance(obj, dict):
        raise EventError("an event must be a JSON object")
    unknown = obj.keys() - _EVENT_KEYS
    if unknown:
        raise EventError(
            f"unknown field {sorted(unknown)[0][:60]!r} (allowed: name, value, labels, ts)"
        )
    name = _check_name(obj.get("name"))
    value = _check_value(obj["value"]) if "value" in obj else 1.0
    labels = _check_labels(obj["labels"]) if "labels" in obj else {}
    ts = _check_ts(obj["ts"]) if "ts" in obj else default_ts
    return Event(name, value, dict(labels), ts)


def events_from_json(data: bytes | str, default_ts: float) -> tuple[list[Event], list[EventError]]:
    """A JSON object or array of up to 1000; each array element stands alone."""
    if len(data) > MAX_ENTRY_BYTES:
        return [], [EventError(f"entry is larger than {MAX_ENTRY_BYTES} bytes")]
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return [], [EventError(f"data is not valid JSON: {str(exc).splitlines()[0][:120]}")]
    if isinstance(parsed, dict):
        try:
            return [event_from_object(parsed, default_ts)], []
        except EventError as exc:
            return [], [exc]
    if not isinstance(parsed, list):
        return [], [EventError("data must be a JSON object or an array of objects")]
    if len(parsed) > MAX_ARRAY:
        return [], [EventError(f"an array holds at most {MAX_ARRAY} events (got {len(parsed)})")]
    events: list[Event] = []
    errors: list[EventError] = []
    for i, item in enumerate(parsed):
        try:
            events.append(event_from_object(item, default_ts))
        except EventError as exc:
            errors.append(EventError(exc.reason, index=i))
    return events, errors


def _text(raw: bytes, field: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError(f"field {field[:60]!r} is not valid UTF-8") from None


def event_from_flat(fields: Mapping[str, bytes], default_ts: float) -> Event:
    """The flat form: name, optional value and ts, every other field a label."""
    name = _check_name(_text(fields["name"], "name"))
    value = 1.0
    if "value" in fields:
        raw = _text(fields["value"], "value").strip()
        try:
            value = float(raw)
        except ValueError:
            raise EventError(f"value {raw[:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise EventError("value must be a finite number")
    ts = default_ts
    if "ts" in fields:
        raw_ts = _text(fields["ts"], "ts").strip()
        try:
            ts = _check_ts(float(raw_ts))
        except ValueError:
            ts = _check_ts(raw_ts)
    labels = {k: _text(v, k) for k, v in fields.items() if k not in ("name", "value", "ts")}
    return Event(name, value, _check_labels(labels), ts)


def stream_id_seconds(stream_id: str) -> float:
    return int(stream_id.split("-", 1)[0]) / 1000.0


def parse_entry(
    stream_id: str, raw_fields: Mapping[bytes, bytes]
) -> tuple[list[Event], list[EventError]]:
    """One stream entry to its events and the errors of what was not valid."""
    default_ts = stream_id_seconds(stream_id)
    size = sum(len(k) + len(v) for k, v in raw_fields.items())
    if size > MAX_ENTRY_BYTES:
        return [], [EventError(f"entry is larger than {MAX_ENTRY_BYTES} bytes")]
    try:
        fields = {_text(k, "field name"): v for k, v in raw_fields.items()}
    except EventError as exc:
        return [], [exc]
    if "name" in fields:
        try:
            return [event_from_flat(fields, default_ts)], []
        except EventError as exc:
            return [], [exc]
    if "data" in fields:
        if len(fields) > 1:
            other = sorted(k for k in fields if k != "data")[0]
            return [], [
                EventError(f"a JSON entry has only the field 'data' (found {other[:60]!r})")
            ]
        return events_from_json(fields["data"], default_ts)
    return [], [EventError("entry has neither 'name' (flat form) nor 'data' (JSON form)")]


def dead_letter_payload(raw_fields: Mapping[bytes, bytes], limit: int = 64 * 1024) -> str:
    """The raw entry as JSON text for a dead letter, at most `limit` bytes."""
    shown: dict[str, Any] = {
        k.decode("utf-8", "replace")[:200]: v.decode("utf-8", "replace")
        for k, v in raw_fields.items()
    }
    text = orjson.dumps(shown).decode()
    if len(text.encode()) > limit:
        text = text.encode()[: limit - 20].decode("utf-8", "ignore") + "...(truncated)"
    return text
