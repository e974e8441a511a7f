"""Stream entries and API bodies to validated Events (docs/publishing.md).

A fast hand-written validator: it runs once per event on the hot path, so no
pydantic model per event. Every failure is an EventError whose reason is one
line a producer can act on. The consumer hands over whole batches as Redis
replies them (`parse_entries`); the common valid event takes a shortcut that
accepts only what the full checks would, and leaves everything else to them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
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

# A stream entry as Redis replies it: (ID, [field, value, field, value, ...]).
RawEntry = tuple[bytes, list[bytes]]
# An entry that was not (wholly) valid: its index in the batch and what was wrong.
Rejected = tuple[int, list[EventError]]


# Names seen valid before skip the regex: producers repeat a few hundred names forever.
_GOOD_NAMES: set[str] = set()
_GOOD_LABELS: set[str] = set()
_CACHE_MAX = 50_000
_FLAT_RESERVED = frozenset(("name", "value", "ts"))
_NOT_JSON = object()


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise EventError("name is required and must be a non-empty string", code="invalid_name")
    if name in _GOOD_NAMES:
        return name
    if len(name) > MAX_NAME:
        raise EventError(f"name is longer than {MAX_NAME} characters", code="invalid_name")
    if not NAME_RE.fullmatch(name):
        raise EventError(
            f"name {name[:60]!r} must match [A-Za-z_:][A-Za-z0-9_:.-]*", code="invalid_name"
        )
    if len(_GOOD_NAMES) < _CACHE_MAX:
        _GOOD_NAMES.add(name)
    return name


def _check_value(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError("value must be a number", code="invalid_value")
    v = float(value)
    if not math.isfinite(v):
        raise EventError("value must be a finite number", code="invalid_value")
    return v


def _check_labels(labels: object) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise EventError("labels must be an object of string values", code="invalid_labels")
    if len(labels) > MAX_LABELS:
        raise EventError(f"at most {MAX_LABELS} labels (got {len(labels)})", code="invalid_labels")
    for k, v in labels.items():
        if k not in _GOOD_LABELS:
            if not LABEL_NAME_RE.fullmatch(k) or k.startswith("__"):
                raise EventError(
                    f"label name {k[:60]!r} must match [A-Za-z_][A-Za-z0-9_]* "
                    "and not start with __",
                    code="invalid_labels",
                )
            if len(_GOOD_LABELS) < _CACHE_MAX:
                _GOOD_LABELS.add(k)
        if v.__class__ is not str:
            raise EventError(f"label {k} must be a string", code="invalid_labels")
        if len(v) > MAX_LABEL_VALUE:
            raise EventError(
                f"label {k} is longer than {MAX_LABEL_VALUE} characters", code="invalid_labels"
            )
    return labels


def _check_ts(ts: object) -> float:
    if isinstance(ts, str):
        try:
            return parse_rfc3339(ts)
        except ValueError:
            raise EventError(
                f"ts {ts[:40]!r} is not unix seconds or an RFC 3339 time", code="invalid_ts"
            ) from None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        raise EventError("ts must be unix seconds or an RFC 3339 string", code="invalid_ts")
    if ts > 1e11:  # milliseconds by mistake would land in the year 5000
        raise EventError("ts must be in seconds, not milliseconds", code="invalid_ts")
    return float(ts)


def _common_event(obj: dict[str, Any], default_ts: float) -> Event | None:
    """The common valid event in a few checks, or None: then the full validator decides.

    Only what the full validator would accept as it stands passes here: a name and
    label names it has seen valid before (the caches), string label values within
    the limit, a finite number, a unix-seconds ts. Anything else, valid or not, takes
    the long way, which also words the errors.
    """
    name = obj.get("name")
    if name.__class__ is not str or name not in _GOOD_NAMES:
        return None
    unchecked = len(obj) - 1  # fields other than name; each one checked counts down
    value = obj.get("value")
    if value is None:  # absent (a null is left to the long way: the count stays up)
        value = 1.0
    elif value.__class__ is float and value - value == 0.0:  # not inf, not nan
        unchecked -= 1
    elif value.__class__ is int:
        value = float(value)
        unchecked -= 1
    else:
        return None
    labels = obj.get("labels")
    if labels is None:
        labels = {}
    elif labels.__class__ is dict and len(labels) <= MAX_LABELS and _GOOD_LABELS.issuperset(labels):
        for v in labels.values():
            if v.__class__ is not str or len(v) > MAX_LABEL_VALUE:
                return None
        unchecked -= 1
    else:
        return None
    ts = obj.get("ts")
    if ts is None:
        ts = default_ts
    elif (ts.__class__ is float or ts.__class__ is int) and 0 <= ts <= 1e11:  # not nan
        ts = float(ts)
        unchecked -= 1
    else:
        return None
    if unchecked:
        return None  # an unknown field, or a known one holding null
    return Event(name, value, labels, ts)


def event_from_object(obj: object, default_ts: float) -> Event:
    """One JSON event object to an Event."""
    if obj.__class__ is dict:
        event = _common_event(obj, default_ts)
        if event is not None:
            return event
    if not isinstance(obj, dict):
        raise EventError("an event must be a JSON object", code="invalid_form")
    if not obj.keys() <= _EVENT_KEYS:
        unknown = sorted(obj.keys() - _EVENT_KEYS)[0]
        raise EventError(
            f"unknown field {unknown[:60]!r} (allowed: name, value, labels, ts)",
            code="unknown_field",
        )
    name = _check_name(obj.get("name"))
    value = _check_value(obj["value"]) if "value" in obj else 1.0
    labels = _check_labels(obj["labels"]) if "labels" in obj else {}
    ts = _check_ts(obj["ts"]) if "ts" in obj else default_ts
    return Event(name, value, labels, ts)


def events_from_json(data: bytes | str, default_ts: float) -> tuple[list[Event], list[EventError]]:
    """A JSON object or array of up to 1000; each array element stands alone."""
    if len(data) > MAX_ENTRY_BYTES:
        return [], [EventError(f"entry is larger than {MAX_ENTRY_BYTES} bytes", code="too_large")]
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return [], [
            EventError(
                f"data is not valid JSON: {str(exc).splitlines()[0][:120]}", code="invalid_json"
            )
        ]
    return _events_of(parsed, default_ts)


def _events_of(parsed: object, default_ts: float) -> tuple[list[Event], list[EventError]]:
    """Decoded JSON data: one event object, or an array of them."""
    if isinstance(parsed, dict):
        try:
            return [event_from_object(parsed, default_ts)], []
        except EventError as exc:
            return [], [exc]
    if not isinstance(parsed, list):
        return [], [
            EventError("data must be a JSON object or an array of objects", code="invalid_form")
        ]
    if len(parsed) > MAX_ARRAY:
        return [], [
            EventError(
                f"an array holds at most {MAX_ARRAY} events (got {len(parsed)})", code="too_many"
            )
        ]
    events: list[Event] = []
    errors: list[EventError] = []
    for i, item in enumerate(parsed):
        try:
            events.append(event_from_object(item, default_ts))
        except EventError as exc:
            errors.append(EventError(exc.reason, code=exc.code, index=i))
    return events, errors


def event_from_flat(fields: Mapping[str, str], default_ts: float) -> Event:
    """The flat form (fields already decoded): name, optional value and ts, the rest labels."""
    name = _check_name(fields["name"])
    value = 1.0
    raw = fields.get("value")
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            raise EventError(
                f"value {raw.strip()[:40]!r} is not a number", code="invalid_value"
            ) from None
        if not math.isfinite(value):
            raise EventError("value must be a finite number", code="invalid_value")
    ts = default_ts
    raw_ts = fields.get("ts")
    if raw_ts is not None:
        raw_ts = raw_ts.strip()
        try:
            ts = _check_ts(float(raw_ts))
        except ValueError:
            ts = _check_ts(raw_ts)
    labels = {k: v for k, v in fields.items() if k not in _FLAT_RESERVED}
    return Event(name, value, _check_labels(labels), ts)


def stream_id_seconds(stream_id: str) -> float:
    """The time in a stream entry's ID: the default `ts` of its events."""
    return int(stream_id.partition("-")[0]) / 1000.0


def parse_entry(
    stream_id: str, raw_fields: Mapping[bytes, bytes]
) -> tuple[list[Event], list[EventError]]:
    """One stream entry to its events and the errors of what was not valid."""
    default_ts = stream_id_seconds(stream_id)
    data = raw_fields.get(b"data")
    if data is not None and len(raw_fields) == 1:
        return events_from_json(data, default_ts)
    if sum(len(k) + len(v) for k, v in raw_fields.items()) > MAX_ENTRY_BYTES:
        return [], [EventError(f"entry is larger than {MAX_ENTRY_BYTES} bytes", code="too_large")]
    try:
        fields = {k.decode(): v.decode() for k, v in raw_fields.items()}
    except UnicodeDecodeError:
        return [], [_utf8_error(raw_fields)]
    if "name" in fields:
        try:
            return [event_from_flat(fields, default_ts)], []
        except EventError as exc:
            return [], [exc]
    if "data" in fields:
        other = sorted(k for k in fields if k != "data")[0]
        return [], [
            EventError(
                f"a JSON entry has only the field 'data' (found {other[:60]!r})",
                code="unknown_field",
            )
        ]
    return [], [
        EventError(
            "entry has neither 'name' (flat form) nor 'data' (JSON form)", code="invalid_form"
        )
    ]


def fields_of(pairs: list[bytes]) -> dict[bytes, bytes]:
    """An entry's [field, value, ...] as Redis replies them, as a mapping (last one wins)."""
    it = iter(pairs)
    return dict(zip(it, it, strict=False))


def parse_entries(
    entries: Iterable[RawEntry],
) -> tuple[list[Event], list[Rejected], dict[int, int]]:
    """A batch of entries as Redis replies them: the events of all, in order; what was
    not valid, by index; and how many events each entry gave, by index, where that is
    not one. Decides exactly as `parse_entry` on each, the common entry (one valid JSON
    event) in a few steps.

    An exception out of the validator (a bug) costs its entry only: it is rejected as an
    internal error whose `__cause__` is the exception.
    """
    events: list[Event] = []
    append = events.append
    rejected: list[Rejected] = []
    irregular: dict[int, int] = {}
    loads = orjson.loads
    prefix = b"-"  # the milliseconds of the last ID and its dash (this one matches none)
    default_ts = 0.0
    for i, (entry_id, pairs) in enumerate(entries):
        try:
            if not entry_id.startswith(prefix):  # a batch holds few distinct milliseconds
                ms = entry_id.partition(b"-")[0]
                default_ts = int(ms) / 1000.0
                prefix = ms + b"-"
            obj: object = _NOT_JSON
            if len(pairs) == 2 and pairs[0] == b"data" and len(pairs[1]) <= MAX_ENTRY_BYTES:
                try:
                    obj = loads(pairs[1])
                except orjson.JSONDecodeError:
                    obj = _NOT_JSON
                if obj.__class__ is dict:
                    event = _common_event(obj, default_ts)
                    if event is not None:
                        append(event)
                        continue
            if obj is _NOT_JSON:  # not the JSON form, or not JSON: parse_entry says which
                good, errors = parse_entry(entry_id.decode(), fields_of(pairs))
            else:  # JSON data, decoded already
                good, errors = _events_of(obj, default_ts)
        except Exception as exc:
            error = EventError(f"internal error: {type(exc).__name__}", code="internal")
            error.__cause__ = exc
            good, errors = [], [error]
        events.extend(good)
        if len(good) != 1:
            irregular[i] = len(good)
        if errors:
            rejected.append((i, errors))
    return events, rejected, irregular


def _utf8_error(raw_fields: Mapping[bytes, bytes]) -> EventError:
    """Which field of an entry is not UTF-8."""
    for k, v in raw_fields.items():
        name = k.decode("utf-8", "replace")[:60]
        for raw, what in ((k, "field name"), (v, name)):
            try:
                raw.decode()
            except UnicodeDecodeError:
                return EventError(f"field {what!r} is not valid UTF-8", code="invalid_utf8")
    return EventError("entry is not valid UTF-8", code="invalid_utf8")


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
