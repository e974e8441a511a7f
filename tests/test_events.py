"""Stream entries to events: a batch is judged exactly as each of its entries alone."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import strategies as st

from alertd import events as events_module
from alertd.events import MAX_LABEL_VALUE, MAX_LABELS, RawEntry, parse_entries, parse_entry
from alertd.model import Event
from tests.test_barrage import BAD_JSON_EVENT, RAW_ENTRY, draw, fixed_bad_entries

GOOD_EVENT = st.fixed_dictionaries(
    {"name": st.sampled_from(["load", "cpu:used.percent", "fresh_name_1"])},
    optional={
        "value": st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False),
        "labels": st.dictionaries(
            st.sampled_from(["series", "host", "a_new_label"]), st.text(max_size=8), max_size=4
        ),
        "ts": st.floats(0, 1e11) | st.integers(0, 10**11) | st.just("2026-11-23T18:00:00Z"),
    },
)
# Valid events, then each with one field at or past an edge: absent, null, of the wrong
# type, at or over a limit; and an unknown field.
BASES: list[dict[str, Any]] = [
    {"name": "load"},
    {"name": "load", "value": 3, "labels": {"series": "a"}},
    {"name": "cpu:used.percent", "value": 0.5, "labels": {"host": "h", "env": ""}, "ts": 1.7e9},
]
EDGES: dict[str, list[Any]] = {
    "name": ["", "x" * 200, "x" * 201, "9x", "a b", "fresh_name_2", 7, None, True, ["load"]],
    "value": [0, -0.0, 1e308, 2**64 - 1, -(2**63), None, True, "1", [1], {"v": 1}],
    "labels": [
        {},
        {"series": ""},
        {"series": "x" * MAX_LABEL_VALUE},
        {"series": "x" * (MAX_LABEL_VALUE + 1)},
        {"a": "x" * 600, "b": "x" * 600},
        {f"l{i}": "v" for i in range(MAX_LABELS)},
        {f"l{MAX_LABELS}": "v"},  # now every label name of the next one is known good
        {f"l{i}": "v" for i in range(MAX_LABELS + 1)},
        {"__reserved": "x"},
        {"9x": "x"},
        {"a-b": "x"},
        {"fresh_label_2": "x"},
        {"series": 1},
        {"series": None},
        {"series": True},
        {"series": ["a"]},
        None,
        [],
        "series=a",
    ],
    "ts": [
        *(0, 0.0, 1.7e9, 1e11, 1e11 + 1, 1e12, -1, -0.5, 2**64 - 1),
        *("2026-11-23T18:00:00Z", "", "soon", None, True, [1]),
    ],
    "extra": [None, 1, "x"],
}
EDGE_EVENTS = [
    {**base, field: value} for base in BASES for field, values in EDGES.items() for value in values
] + [{k: v for k, v in base.items() if k != field} for base in BASES for field in base]


def pairs_of(fields: dict[bytes, bytes]) -> list[bytes]:
    return [part for item in fields.items() for part in item]


def entries_of(fields: list[dict[bytes, bytes]]) -> list[RawEntry]:
    """Entries as Redis replies them; IDs in a few distinct milliseconds."""
    return [
        (f"{1_700_000_000_000 + i // 3}-{i % 3}".encode(), pairs_of(f))
        for i, f in enumerate(fields)
    ]


# events; rejected entries and why; events per entry, where not one
Outcome = tuple[list[Event], list[tuple[int, list[str]]], dict[int, int]]


def one_by_one(entries: list[RawEntry]) -> Outcome:
    """`parse_entry` on each entry."""
    events: list[Event] = []
    rejected = []
    irregular = {}
    for i, (entry_id, pairs) in enumerate(entries):
        it = iter(pairs)
        good, errors = parse_entry(entry_id.decode(), dict(zip(it, it, strict=True)))
        events.extend(good)
        if len(good) != 1:
            irregular[i] = len(good)
        if errors:
            rejected.append((i, [str(e) for e in errors]))
    return events, rejected, irregular


def batch(entries: list[RawEntry]) -> Outcome:
    events, rejected, irregular = parse_entries(entries)
    return events, [(i, [str(e) for e in errors]) for i, errors in rejected], irregular


def data(obj: Any) -> dict[bytes, bytes]:
    return {b"data": orjson.dumps(obj)}


def judged_in_full(entries: list[RawEntry], monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """What the full validator says, without the shortcut for the common event."""
    with monkeypatch.context() as m:
        m.setattr(events_module, "_common_event", lambda obj, default_ts: None)
        return one_by_one(entries)


class TestBatchParsing:
    """Entries yield the same events and error reasons, one by one or in a batch, by the
    shortcut for the common event or in full."""

    def test_edges_of_the_common_event(self, monkeypatch: pytest.MonkeyPatch) -> None:
        objects = EDGE_EVENTS + draw(GOOD_EVENT, 300)
        arrays = [objects[i : i + 3] for i in range(0, len(objects), 45)]
        entries = entries_of([data(o) for o in objects] + [data(a) for a in arrays])
        expected = judged_in_full(entries, monkeypatch)  # also meets every valid name once
        assert expected == batch(entries)
        assert expected == one_by_one(entries)
        events, rejected, irregular = expected
        assert 300 < len(events) and 100 < len(rejected), "too one-sided to say anything"
        assert any(n > 1 for n in irregular.values()), "no entry of several events"

    def test_invalid_and_arbitrary_entries(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fields = draw(BAD_JSON_EVENT, 150) + draw(RAW_ENTRY, 150) + fixed_bad_entries()
        entries = entries_of(fields)
        # A field given twice: Redis keeps both, the last one counts.
        entries.append((b"1-0", [b"data", b"{}", b"data", orjson.dumps({"name": "load"})]))
        expected = judged_in_full(entries, monkeypatch)
        assert expected == batch(entries)
        assert expected == one_by_one(entries)

    def test_default_time_is_the_entry_id(self) -> None:
        entries = [
            (entry_id, pairs_of(data({"name": "load"})))
            for entry_id in (b"5-0", b"5-1", b"50-0", b"1700000000123-7", b"1700000000124-0")
        ]
        events, _, _ = parse_entries(entries)
        assert [0.005, 0.005, 0.05, 1700000000.123, 1700000000.124] == [e.ts for e in events]

    def test_a_bug_costs_its_entry_only(self) -> None:
        class Exploding(bytes):
            def decode(self, *args: object, **kwargs: object) -> str:
                raise ZeroDivisionError("a bug")

        entries: list[RawEntry] = [
            (b"1-0", pairs_of(data({"name": "load", "labels": {"n": "1"}}))),
            (Exploding(b"1-1"), [b"name", b"load"]),  # the flat form decodes its ID
            (b"1-2", pairs_of(data({"name": "load", "labels": {"n": "2"}}))),
        ]
        events, rejected, irregular = parse_entries(entries)
        assert {1: 0} == irregular  # the entry that broke gave no event
        assert ["1", "2"] == [e.labels["n"] for e in events]
        ((index, (error,)),) = rejected
        assert (1, "internal error: ZeroDivisionError") == (index, str(error))
        assert isinstance(error.__cause__, ZeroDivisionError)
