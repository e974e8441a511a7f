"""Bad-input barrage: whatever producers, API clients and operators throw at alertd,
each bad input gets its one clear error, good inputs around it still work, and the
daemon never stops.

Inputs are drawn by hypothesis (bounded, derandomized: the same examples every run)
and sent in bulk to one running App, because a daemon is checked best by what it does
with a stream of inputs, not one input per restart:

- stream entries (XADD raw): each invalid entry gets exactly one dead letter with a
  one-line reason and is acknowledged; each good event interleaved fires its alert;
- API bodies: never a 5xx, every 4xx is JSON `{"error", "details"}`;
- configuration and rule files: `load_config` succeeds or raises ConfigErrors (one
  line per error), never another exception; `alertd check` prints those lines, exit 1.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from alertd.errors import ConfigErrors
from alertd.events import parse_entry
from alertd.model import fingerprint
from alertd.settings import load_config
from tests.conftest import DaemonFactory, stored_alerts, wait_for

T = TypeVar("T")
STREAM = "alertd:events"

RULES = """
[[rules]]
name = "Over"
metric = "load"
group_by = ["series"]
critical = "> 100"
"""


def draw(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    """`n` examples of `strategy`, the same ones every run (no database, derandomized)."""
    out: list[T] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        out.append(value)

    collect()
    return out


# --- strategies ---------------------------------------------------------------------------

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
NOT_A_NUMBER = (
    st.none()
    | st.booleans()
    | st.text(max_size=20)
    | st.lists(JSON_LEAF, max_size=3)
    | st.dictionaries(st.text(max_size=5), JSON_LEAF, max_size=3)
)
NOT_A_STRING = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.lists(JSON_LEAF, max_size=3)
)

BAD_TS = (
    st.booleans()
    | st.none()
    | st.lists(JSON_LEAF, max_size=2)
    | st.floats(max_value=-1e-9)
    | st.floats(min_value=1.01e11, allow_nan=False)
    | st.sampled_from(["", "yesterday", "soon", "12:00", "-5", "1e400", "2026-13-45T00:00:00Z"])
)

# Anything at all: the validator itself says what is valid.
RAW_ENTRY = st.dictionaries(
    st.sampled_from([b"name", b"value", b"ts", b"data", b"series"])
    | st.binary(min_size=1, max_size=12),
    st.binary(max_size=64),
    min_size=1,
    max_size=6,
)
# Invalid by construction, whatever the validator says.
BAD_FLAT_VALUE = st.sampled_from(
    [
        b"nan",
        b"NaN",
        b"-nan",
        b"inf",
        b"-inf",
        b"Infinity",
        b"1e400",
        b"-1e999",
        b"abc",
        b"0x10",
        b"1,5",
        b"",
        b" ",
    ]
).map(lambda v: {b"name": b"load", b"value": v, b"series": b"bad-flat"})
BAD_JSON_EVENT = st.one_of(
    NOT_A_NUMBER.map(lambda v: {"name": "load", "value": v, "labels": {"series": "bad-json"}}),
    NOT_A_STRING.map(lambda n: {"name": n, "value": 1}),
    st.text(max_size=40)
    .filter(lambda s: not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:.-]*", s))
    .map(lambda n: {"name": n, "value": 1}),
    (NOT_A_STRING | st.lists(st.text(max_size=3), max_size=3)).map(
        lambda labels: {"name": "load", "labels": labels}
    ),
    st.dictionaries(st.text(max_size=5), NOT_A_STRING, min_size=1, max_size=3).map(
        lambda labels: {"name": "load", "labels": labels}
    ),
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(
            lambda k: k not in {"name", "value", "labels", "ts"}
        ),
        JSON_LEAF,
        min_size=1,
        max_size=2,
    ).map(lambda extra: {"name": "load", "value": 1, **extra}),
    BAD_TS.map(lambda ts: {"name": "load", "ts": ts}),
).map(lambda obj: {b"data": orjson.dumps(obj)})


def fixed_bad_entries() -> list[dict[bytes, bytes]]:
    """The extremes: NaN/inf, huge and deep values, invalid UTF-8, 10k labels, 2 MB values."""
    big = b"x" * (2 * 1024 * 1024)
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_labels = b'{"name": "load", "labels": ' + b'{"a": ' * 2000 + b'"v"' + b"}" * 2000 + b"}"
    many = {f"l{i}".encode(): b"v" for i in range(10_000)}
    return [
        {b"data": b'{"name": "load", "value": NaN}'},
        {b"data": b'{"name": "load", "value": Infinity}'},
        {b"data": b'{"name": "load", "value": -Infinity}'},
        {b"data": b'{"name": "load", "value": 1e999}'},
        {b"data": deep},
        {b"data": deep_labels},
        {b"name": b"load", b"value": b"1", **many},
        {b"data": orjson.dumps({"name": "load", "labels": {f"l{i}": "v" for i in range(10_000)}})},
        {b"name": b"load", b"value": b"1", b"series": big},
        {b"data": b'{"name": "load", "labels": {"series": "' + big + b'"}}'},
        {b"name": b"load", b"value": big},
        {b"name": b"lo\xffad", b"value": b"1"},
        {b"name": b"load", b"value": b"1", b"ser\xc3\x28ies": b"x"},
        {b"name": b"load", b"value": b"1", b"series": b"\xed\xa0\x80"},
        {b"data": b'{"name": "load", "labels": {"series": "\xff"}}'},
        {b"data": b"\xfe\xff"},
        {b"data": orjson.dumps([{"name": "load", "value": 1}] * 1001)},
        {b"data": b""},
        {b"data": b"null"},
        {b"data": b"42"},
        {b"data": b'"load"'},
        {b"": b""},
        {b"data": b"{}", b"name": b""},
        {b"data": b'{"name": "load"}', b"extra": b"1"},
        {b"name": b"load", b"ts": b"-5"},
        {b"name": b"load", b"ts": b"1700000000000"},
        {b"name": b"load", b"ts": b"yesterday"},
        {b"name": b"load", b"__reserved": b"x"},
        {b"name": b"load", b"bad-label": b"x"},
        {b"name": b"x" * 201},
    ]


# --- stream entries ------------------------------------------------------------------------


def good_event(series: str) -> dict[bytes, bytes]:
    return {b"name": b"load", b"value": b"500", b"series": series.encode()}


def firing_fp(series: str) -> str:
    return fingerprint({"alertname": "Over", "series": series})


class TestStreamBarrage:
    """Garbage on the stream is dead-lettered one entry at a time; good events still fire."""

    async def test_every_bad_entry_is_dead_lettered_and_good_ones_fire(
        self, daemons: DaemonFactory, redis: aioredis.Redis
    ) -> None:
        daemons.write(RULES)
        app = await daemons.start()
        bad_by_construction = (
            draw(BAD_FLAT_VALUE, 13) + draw(BAD_JSON_EVENT, 150) + fixed_bad_entries()
        )
        anything = draw(RAW_ENTRY, 150)
        entries: list[tuple[dict[bytes, bytes], bool]] = [(e, True) for e in bad_by_construction]
        entries += [(e, False) for e in anything]
        # A mixed array: its good element is processed, its bad ones dead-lettered (one letter).
        mixed = [
            {"name": "load", "value": 500, "labels": {"series": "good-in-array"}},
            {"name": "load", "value": "high"},
            {"name": 7},
        ]
        entries.append(({b"data": orjson.dumps(mixed)}, True))

        published: list[tuple[str, dict[bytes, bytes], bool]] = []
        good: list[str] = ["good-in-array"]
        for i, (fields, known_bad) in enumerate(entries):
            eid = (await redis.xadd(STREAM, fields)).decode()
            published.append((eid, fields, known_bad))
            if i % 10 == 0:  # a good event in the middle of the garbage
                series = f"good-{i}"
                await redis.xadd(STREAM, good_event(series))
                good.append(series)

        async def consumed() -> bool:
            pending = (await redis.xpending(STREAM, "alertd"))["pending"]
            groups = await redis.xinfo_groups(STREAM)
            last = (await redis.xinfo_stream(STREAM))["last-generated-id"]
            return pending == 0 and groups[0]["last-delivered-id"] == last

        await wait_for(consumed, timeout_s=20)
        assert not any(t.done() for t in app._tasks), "a daemon task stopped"

        letters: dict[str, list[dict[str, str]]] = {}
        for _, f in await redis.xrange("alertd:dead"):
            fields = {k.decode(): v.decode("utf-8", "replace") for k, v in f.items()}
            letters.setdefault(fields["stream_id"], []).append(fields)

        problems = []
        for eid, fields, known_bad in published:
            _, errors = parse_entry(eid, fields)
            got = letters.get(eid, [])
            shown = repr(fields)[:160]
            if known_bad and not errors:
                problems.append(f"accepted an invalid entry: {shown}")
            if errors and len(got) != 1:
                problems.append(f"{len(got)} dead letters for invalid entry {shown}")
            if not errors and got:
                problems.append(f"valid entry dead-lettered ({got[0]['reason']}): {shown}")
            for letter in got:
                reason = letter["reason"]
                if not reason or "\n" in reason or "Traceback" in reason:
                    problems.append(f"unclear reason {reason!r} for {shown}")
                if letter["source"] != "event" or len(letter["payload"].encode()) > 64 * 1024:
                    problems.append(f"bad dead letter shape {sorted(letter)} for {shown}")
        assert [] == problems
        n_letters = sum(len(v) for v in letters.values())
        print(
            f"stream barrage: {len(published)} entries ({len(bad_by_construction) + 1} invalid by "
            f"construction, {len(anything)} arbitrary), {n_letters} dead letters, "
            f"{len(good)} good events"
        )
        assert len(bad_by_construction) + 1 <= n_letters

        async def all_good_fired() -> bool:
            stored = await stored_alerts(redis)
            return all(stored.get(firing_fp(s), {}).get("state") == "firing" for s in good)

        await wait_for(all_good_fired, timeout_s=10)
        assert not any(t.done() for t in app._tasks)


# --- API bodies ----------------------------------------------------------------------------

BODY = st.one_of(
    st.binary(max_size=200),
    JSON.map(orjson.dumps),
    BAD_JSON_EVENT.map(lambda f: f[b"data"]),
    st.lists(BAD_JSON_EVENT.map(lambda f: orjson.loads(f[b"data"])), min_size=1, max_size=5).map(
        orjson.dumps
    ),
)
SILENCE_BODY = st.one_of(
    st.binary(max_size=100),
    JSON.map(orjson.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "matchers": st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3)
            | NOT_A_STRING,
            "duration": st.sampled_from(["2h", "0s", "-1m", "forever", "", "1d"]) | NOT_A_STRING,
            "startsAt": st.text(max_size=30) | NOT_A_STRING,
            "endsAt": st.text(max_size=30) | NOT_A_STRING,
            "createdBy": st.text(max_size=10) | NOT_A_STRING,
            "comment": st.text(max_size=10) | NOT_A_STRING,
        },
    ).map(orjson.dumps),
)
QUERY = st.dictionaries(
    st.sampled_from(["state", "severity", "filter", "x"]), st.text(max_size=15), max_size=3
)


class TestApiBarrage:
    """No body makes the API answer 5xx; every refusal is JSON saying what was wrong."""

    async def test_api_answers_4xx_json_never_5xx(
        self, daemons: DaemonFactory, redis: aioredis.Redis
    ) -> None:
        daemons.write(RULES)
        app = await daemons.start(http=True)
        base = f"http://127.0.0.1:{app.config.settings.http.port}/api/v1"
        requests: list[tuple[str, str, bytes, dict[str, str]]] = []
        for body in draw(BODY, 150):
            requests.append(("POST", "/events", body, {}))
        for body in draw(SILENCE_BODY, 60):
            requests.append(("POST", "/silences", body, {}))
        for body in draw(JSON.map(orjson.dumps), 20):
            requests.append(("POST", "/dead-letters/replay", body, {}))
        for query in draw(QUERY, 30):
            requests.append(("GET", "/alerts", b"", query))
        for sid in draw(st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s), 10):
            requests.append(("DELETE", "/silences/" + quote(sid, safe=""), b"", {}))
        requests += [
            ("POST", "/events", b"[" * 100_000 + b"]" * 100_000, {}),
            ("POST", "/events", b"x" * (2 * 1024 * 1024), {}),
            ("POST", "/events", orjson.dumps([{"name": "load", "value": 1}] * 1001), {}),
            ("POST", "/events", b'{"name": "load", "value": NaN}', {}),
            ("POST", "/events", b'{"name": "load", "labels": {"s": "\xff"}}', {}),
            ("POST", "/events", b"", {}),
        ]

        problems: list[str] = []
        good: list[str] = []
        statuses: Counter[int] = Counter()
        async with aiohttp.ClientSession() as http:
            for i, (method, path, body, query) in enumerate(requests):
                headers = {"Content-Type": "application/json"}
                # aiohttp warns about large raw bytes bodies: hand it a file-like object.
                data = io.BytesIO(body) if len(body) > 64 * 1024 else (body or None)
                async with http.request(
                    method, base + path, data=data, params=query, headers=headers
                ) as resp:
                    text = await resp.read()
                    statuses[resp.status] += 1
                    shown = f"{method} {path} {query or ''} {body[:100]!r}"
                    if resp.status >= 500:
                        problems.append(f"{resp.status} for {shown}: {text[:200]!r}")
                    elif resp.status >= 400:
                        try:
                            answer = orjson.loads(text)
                        except orjson.JSONDecodeError:
                            problems.append(f"{resp.status} not JSON for {shown}: {text[:100]!r}")
                            continue
                        if not isinstance(answer.get("error"), str) or not isinstance(
                            answer.get("details", []), list
                        ):
                            problems.append(f"{resp.status} without error/details for {shown}")
                if i % 15 == 0:  # a good event between the bad ones
                    series = f"api-good-{i}"
                    event = {"name": "load", "value": 500, "labels": {"series": series}}
                    async with http.post(base + "/events", json=event) as resp:
                        if resp.status != 202:
                            problems.append(f"good event refused: {resp.status}")
                    good.append(series)
        assert [] == problems
        print(f"API barrage: {len(requests)} requests, answers {dict(sorted(statuses.items()))}")
        assert {400, 413} <= set(statuses), statuses  # the barrage reached the checks
        assert not any(t.done() for t in app._tasks)

        async def all_good_fired() -> bool:
            stored = await stored_alerts(redis)
            return all(stored.get(firing_fp(s), {}).get("state") == "firing" for s in good)

        await wait_for(all_good_fired, timeout_s=10)


# --- configuration and rule files ----------------------------------------------------------

# Config text: any character, newlines and control characters included.
NAME_TEXT = st.text(max_size=20)

RULE_KEYS = [
    "name", "metric", "divide_by", "min_denominator", "window", "group_by", "match", "for",
    "keep_firing_for", "aggregate", "info", "warning", "critical", "info_recovery",
    "warning_recovery", "critical_recovery", "labels", "summary", "description",
    "runbook_url", "channels", "threshhold",
]  # fmt: skip
PLAUSIBLE = st.one_of(
    st.sampled_from(
        ["> 1", ">= -3", "< 0.05", "== 1e12", "!= 0", "> ", "above 1", ">> 1", "> nan"]
    ),
    st.sampled_from(["5m", "0s", "1d", "-1m", "500ms", "5 minutes", "1e9h", "", "9999999999d"]),
    st.sampled_from(["last", "p99", "rate", "age", "p101", "median", "LAST"]),
    st.sampled_from(["{value:.2%}", "{labels.x}", "{0}", "{value!r}", "{", "}", "{value:{x}}"]),
    st.sampled_from(["~[", "!~(", "~.*", "!prod", "~a|b"]).map(lambda v: {"service": v}),
    st.lists(st.sampled_from(["service", "__x", "a-b", "", "host"]), max_size=3),
    st.dictionaries(NAME_TEXT, NAME_TEXT, max_size=3),
)
TOML_VALUE = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | NAME_TEXT
    | PLAUSIBLE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAME_TEXT, inner, max_size=3),
    max_leaves=8,
)
RULE = st.dictionaries(st.sampled_from(RULE_KEYS), TOML_VALUE, max_size=8)
RULES_DOC = st.one_of(
    st.fixed_dictionaries({"rules": st.lists(RULE, max_size=3)}),
    st.dictionaries(st.sampled_from(["rules", "rule", "x"]), TOML_VALUE, max_size=2),
)
SECTIONS = {
    "redis": ["url", "stream", "group", "key_prefix", "dead_letter_stream", "group_start"],
    "daemon": [
        "consumer",
        "batch_size",
        "block",
        "eval_interval",
        "claim_idle",
        "shutdown_timeout",
    ],
    "http": ["listen", "token", "external_url"],
    "notify": ["group_by", "group_wait", "group_interval", "repeat_interval", "send_resolved"],
    "logging": ["level", "format"],
    "paths": ["rules", "channels"],
}
LIST_ITEM_KEYS = [
    "match", "channels", "continue", "group_by", "mute_during", "source", "target", "equal",
    "name", "weekdays", "times", "timezone", "type", "url",
]  # fmt: skip
CHANNEL_KEYS = [
    "type", "url", "host", "port", "to", "from", "secret", "webhook_url", "retry", "fallback",
    "enabled", "security", "subject", "headers",
]  # fmt: skip
MAIN_DOC = st.dictionaries(
    st.sampled_from([*SECTIONS, "routes", "inhibit", "time_intervals", "channels", "bogus"]),
    st.one_of(
        st.dictionaries(
            st.sampled_from(sorted({k for ks in SECTIONS.values() for k in ks} | {"typo"})),
            TOML_VALUE,
            max_size=4,
        ),
        st.lists(
            st.dictionaries(
                st.sampled_from(LIST_ITEM_KEYS),
                TOML_VALUE,
                max_size=4,
            ),
            max_size=2,
        ),
        TOML_VALUE,
    ),
    max_size=4,
)
CHANNEL_DOC = st.fixed_dictionaries(
    {
        "channels": st.dictionaries(
            NAME_TEXT.filter(bool),
            st.dictionaries(
                st.sampled_from(CHANNEL_KEYS),
                st.sampled_from(["webhook", "email", "slack", "log", "sms"]) | TOML_VALUE,
                max_size=5,
            ),
            max_size=2,
        )
    }
)
TOML_FRAGMENTS = st.lists(
    st.sampled_from(
        ['[[rules]]', '[rules', 'name = "R"', 'name = "R2"', 'metric = "m"', 'critical = "> 1"',
         'window = "5m"', 'for = "1x"', 'group_by = ["a", 1]', 'match = { a = "~[" }',
         'labels = { a = 1 }', 'x = ', '"unterminated', 'summary = "{value:.2f}"',
         'aggregate = "p99"', 'divide_by = "d"', 'critical = 5', 'critical = "> inf"',
         "a.b.c = 1", "[rules.x]", "rules = 3", "\x00", "name = '''", 'key = """\n',
         "\ufeff", "= 1", "1 = 2", "channels = []", 'channels = ["nope"]']
    ),
    max_size=12,
).map("\n".join)  # fmt: skip


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("-inf" if v < 0 else "inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML document: top-level tables and arrays of tables, the rest inline."""
    lines: list[str] = []
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{toml_key(k)}]")
            lines += [f"{toml_key(ik)} = {toml_value(iv)}" for ik, iv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines.append(f"[[{toml_key(k)}]]")
                lines += [f"{toml_key(ik)} = {toml_value(iv)}" for ik, iv in item.items()]
        else:
            lines.insert(0, f"{toml_key(k)} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("barrage-config")
    (d / "rules").mkdir()
    (d / "channels").mkdir()
    return d


def outcome_of(load: Callable[[], object]) -> str | None:
    """None when the load passed or failed as it should; else what went wrong."""
    try:
        load()
    except ConfigErrors as exc:
        if not exc.errors:
            return "ConfigErrors with no error in it"
        for err in exc.errors:
            line = str(err)
            if not line.strip() or "\n" in line or "Traceback" in line:
                return f"an error that is not one clear line: {line!r}"
    except Exception as exc:  # anything else is the bug this test looks for
        return f"{type(exc).__name__}: {exc}"
    return None


def writer(
    config_dir: Path, main: str = "", rules: str = "", channels: str = ""
) -> Callable[[], object]:
    (config_dir / "alertd.toml").write_text(main, encoding="utf-8", errors="surrogatepass")
    (config_dir / "rules" / "r.toml").write_text(rules, encoding="utf-8", errors="surrogatepass")
    (config_dir / "channels" / "c.toml").write_text(
        channels, encoding="utf-8", errors="surrogatepass"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    return lambda: load_config(config_dir / "alertd.toml", env=env)


BOUNDED = settings(
    max_examples=150,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class TestConfigBarrage:
    """Any file an operator could write is loaded or refused with ConfigErrors, nothing else."""

    @BOUNDED
    @given(text=st.one_of(TOML_FRAGMENTS, st.text(max_size=200)))
    def test_rule_file_text(self, config_dir: Path, text: str) -> None:
        assert None is outcome_of(writer(config_dir, rules=text))

    @BOUNDED
    @given(doc=RULES_DOC)
    def test_rule_file_valid_toml(self, config_dir: Path, doc: dict[str, Any]) -> None:
        assert None is outcome_of(writer(config_dir, rules=to_toml(doc)))

    @BOUNDED
    @given(doc=MAIN_DOC)
    def test_main_config_valid_toml(self, config_dir: Path, doc: dict[str, Any]) -> None:
        assert None is outcome_of(writer(config_dir, main=to_toml(doc)))

    @BOUNDED
    @given(doc=CHANNEL_DOC)
    def test_channel_file_valid_toml(self, config_dir: Path, doc: dict[str, Any]) -> None:
        assert None is outcome_of(writer(config_dir, channels=to_toml(doc)))

    def test_alertd_check_prints_one_line_per_error(self, tmp_path: Path) -> None:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "a.toml").write_text('[[rules]]\nname = "R"\nmetric = "m"\n')
        (tmp_path / "rules" / "b.toml").write_text('[[rules]\nname = "R"\n')
        (tmp_path / "alertd.toml").write_text('[daemon]\nblock = "soon"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
        result = subprocess.run(
            [sys.executable, "-m", "alertd", "check", "--config", str(tmp_path / "alertd.toml")],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert 1 == result.returncode
        lines = result.stderr.splitlines()
        assert lines and all(line.startswith("alertd: ") for line in lines), result.stderr
        assert "Traceback" not in result.stderr

        (tmp_path / "alertd.toml").write_text("")
        result = subprocess.run(
            [sys.executable, "-m", "alertd", "check", "--config", str(tmp_path / "alertd.toml")],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert 1 == result.returncode
        lines = result.stderr.splitlines()
        assert 2 <= len(lines), result.stderr  # one per broken rule file
        assert any("rules/a.toml" in line for line in lines)
        assert any("rules/b.toml" in line for line in lines)


class TestConfigErrorLines:
    """A name holding a newline still gets its error on one line."""

    @pytest.mark.parametrize(
        "rules, channels",
        [
            ('[[rules]]\nname = "a\\nb"\nmetric = "m"\nbogus = 1\ncritical = "> 1"\n', ""),
            ("", '[channels."x\\ny"]\ntype = "webhook"\nurl = "ftp://x"\n'),
        ],
    )
    def test_names_with_newlines_stay_on_one_line(
        self, tmp_path: Path, rules: str, channels: str
    ) -> None:
        (tmp_path / "rules").mkdir()
        (tmp_path / "channels").mkdir()
        assert None is outcome_of(writer(tmp_path, rules=rules, channels=channels))
