"""The API's pydantic models say what the server does: the documented event is the one
the fast validator accepts, and the document is generated from the models."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from alertd.errors import EventError
from alertd.events import event_from_object
from alertd.http.models import Event, PostableAlert
from alertd.http.openapi import openapi_document

LONG = "x" * 1025
CASES: list[Any] = [
    {"name": "cpu"},
    {"name": "http_errors_total", "value": 3, "labels": {"service": "api"}},
    {"name": "ns:metric.rate-5m", "value": -1.5e3, "ts": 1_800_000_000},
    {"name": "a", "ts": "2026-11-23T18:00:00.123Z"},
    {"name": "a", "ts": "2026-11-23T18:00:00+02:00"},
    {"name": "a", "labels": {f"l{i}": "v" for i in range(32)}},
    {"name": "a", "labels": {"l": "v" * 1024}},
    {"name": ""},
    {"name": "9lives"},
    {"name": "a b"},
    {"name": "n" * 201},
    {"value": 1},
    {"name": 5},
    {"name": "a", "value": "1"},
    {"name": "a", "value": True},
    {"name": "a", "value": None},
    {"name": "a", "labels": {"__reserved": "v"}},
    {"name": "a", "labels": {"bad-name": "v"}},
    {"name": "a", "labels": {"l": 1}},
    {"name": "a", "labels": {"l": LONG}},
    {"name": "a", "labels": {f"l{i}": "v" for i in range(33)}},
    {"name": "a", "labels": ["l"]},
    {"name": "a", "ts": "yesterday"},
    {"name": "a", "ts": "2026-11-23T18:00:00"},
    {"name": "a", "ts": -1},
    {"name": "a", "ts": 1_800_000_000_000},
    {"name": "a", "ts": None},
    {"name": "a", "ts": True},
    {"name": "a", "extra": 1},
    ["not", "an", "object"],
]


def fast_accepts(obj: Any) -> bool:
    try:
        event_from_object(obj, 0.0)
    except EventError:
        return False
    return True


def model_accepts(obj: Any) -> bool:
    try:
        Event.model_validate(obj)
    except ValidationError:
        return False
    return True


class TestEventModelAgrees:
    """The documented event and the one the daemon accepts are the same."""

    @pytest.mark.parametrize("obj", CASES, ids=[str(c)[:50] for c in CASES])
    def test_same_verdict(self, obj: Any) -> None:
        assert fast_accepts(obj) == model_accepts(obj)

    def test_both_accept_and_refuse_some(self) -> None:
        verdicts = {fast_accepts(c) for c in CASES}
        assert {True, False} == verdicts


class TestGeneratedDocument:
    """The document's bodies are the models' schemas."""

    def test_event_schema_is_the_models(self) -> None:
        schema = openapi_document()["components"]["schemas"]["Event"]
        assert Event.model_json_schema()["required"] == schema["required"]
        assert schema["additionalProperties"] is False

    def test_postable_alert_documents_its_limits(self) -> None:
        labels = openapi_document()["components"]["schemas"]["PostableAlert"]["properties"]
        assert 1 == labels["labels"]["minProperties"]
        assert {"labels"} == set(PostableAlert.model_json_schema()["required"])
