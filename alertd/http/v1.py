"""`/api/v1`: alerts, rules, events, silences, test alerts, reload, dead letters."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from alertd import ops
from alertd.durations import format_duration
from alertd.errors import EventError, NotFoundError
from alertd.events import MAX_ARRAY, event_from_object
from alertd.http.common import ApiError, app_of, read_json, read_object, reply
from alertd.http.models import EmptyRequest, ReplayRequest, TestAlertRequest, V1Silences, dump
from alertd.http.paging import page_params, paginate, with_next
from alertd.model import SEVERITIES, Event
from alertd.notify.history import OUTCOMES, parse_since
from alertd.silences import silence_from_request

if TYPE_CHECKING:
    from alertd.app import App
    from alertd.settings import Rule

ALERT_STATES = ("pending", "firing")
SILENCE_STATES = ("pending", "active", "expired")
DEAD_SOURCES = ("event", "notification")
MAX_DEAD_LIMIT = 10_000
_STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise ApiError(400, f"invalid {name}", [f"{name} must be one of {', '.join(allowed)}"])
    return value


# --- alerts and rules ------------------------------------------------------------


def _label_filters(request: web.Request) -> dict[str, str] | None:
    """label -> value, every one must hold; None when two ask one label for different values."""
    filters: dict[str, str] = {}
    conflict = False
    for item in request.query.getall("filter", []):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ApiError(400, "invalid filter", [f"filter {item!r} must be label=value"])
        try:
            ops.parse_filters([item])
        except ValueError as exc:
            raise ApiError(400, "invalid filter", [str(exc)]) from None
        conflict = conflict or filters.setdefault(name, value) != value
    return None if conflict else filters


def _alert_order(view: dict[str, Any]) -> tuple[str, ...]:
    return (view["rule"], view["startsAt"], view["fingerprint"])


async def list_alerts(request: web.Request) -> web.Response:
    app = app_of(request)
    state = _choice(request, "state", ALERT_STATES)
    severity = _choice(request, "severity", SEVERITIES)
    filters = _label_filters(request)
    limit, after = page_params(request)
    if filters is None:
        return reply({"alerts": []})
    alerts = await ops.list_alerts(
        app.partitions, app.config, app.clock(), state, severity, filters
    )
    page, next_cursor = paginate(alerts, _alert_order, limit, after)
    return reply(with_next({"alerts": page}, next_cursor))


def rule_view(rule: Rule, series: list[dict[str, Any]]) -> dict[str, Any]:
    spec = rule.spec
    return {
        "name": rule.name,
        "file": rule.file,
        "metric": spec.metric,
        "divide_by": spec.divide_by,
        "aggregate": spec.aggregate_kind,
        "window": format_duration(spec.window),
        "for": format_duration(spec.for_),
        "group_by": list(spec.group_by),
        "match": dict(spec.match),
        "levels": {sev: str(cond) for sev, cond, _ in rule.levels()},
        "recovery": {sev: str(rec) for sev, _, rec in rule.levels() if rec is not None},
        "labels": dict(spec.labels),
        "channels": spec.channels,
        "series": series,
    }


async def list_rules(request: web.Request) -> web.Response:
    app = app_of(request)
    series: dict[str, list[dict[str, Any]]] = {}
    for a in sorted(await app.store.all(), key=lambda a: (a.rule, a.starts_at)):
        if a.state == "resolved":
            continue
        series.setdefault(a.rule, []).append(
            {
                "fingerprint": a.fingerprint,
                "labels": a.labels,
                "state": a.state,
                "severity": a.severity,
                "value": a.value,
            }
        )
    rules = app.config.rules
    return reply({"rules": [rule_view(r, series.get(r.name, [])) for r in rules]})


# --- events ----------------------------------------------------------------------


def parse_events(body: object, now: float) -> list[Event]:
    """Every event of a body, or ApiError listing every invalid one (nothing is added)."""
    if isinstance(body, dict):
        try:
            return [event_from_object(body, now)]
        except EventError as exc:
            raise ApiError(400, "invalid events", [exc.reason]) from None
    if not isinstance(body, list):
        raise ApiError(
            400, "invalid events", ["the body must be an event object or an array of them"]
        )
    if len(body) > MAX_ARRAY:
        raise ApiError(
            400, "invalid events", [f"an array holds at most {MAX_ARRAY} events (got {len(body)})"]
        )
    events: list[Event] = []
    details: list[str] = []
    for i, item in enumerate(body):
        try:
            events.append(event_from_object(item, now))
        except EventError as exc:
            details.append(f"[{i}] {exc.reason}")
    if details:
        raise ApiError(400, "invalid events", details)
    return events


async def post_events(request: web.Request) -> web.Response:
    app = app_of(request)
    events = parse_events(await read_json(request, required=True), time.time())
    if events:
        await ops.publish(app.routed, app.config.settings.redis.stream, events)
    return reply({"accepted": len(events)}, status=202)


# --- silences --------------------------------------------------------------------


async def list_silences(request: web.Request) -> web.Response:
    app = app_of(request)
    status = _choice(request, "status", SILENCE_STATES)
    now = app.clock()
    views = [s.to_api(now) for s in await app.silences.list(now)]
    if status:
        views = [v for v in views if v["status"] == status]
    return reply(dump(V1Silences.model_validate({"silences": views})))


async def create_silence(request: web.Request) -> web.Response:
    app = app_of(request)
    body = await read_json(request, required=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid silence", ["the body must be a JSON object"])
    try:
        silence = silence_from_request(body, app.clock())
    except ValueError as exc:
        raise ApiError(400, "invalid silence", str(exc).split("; ")) from None
    sid = await app.silences.create(silence)
    return reply({"id": sid}, status=201, headers={"Location": f"/api/v1/silences/{sid}"})


async def expire_silence(request: web.Request) -> web.Response:
    app = app_of(request)
    sid = request.match_info["id"]
    try:
        await app.silences.expire(sid, app.clock())
    except NotFoundError as exc:
        raise ApiError(404, "silence not found", [str(exc)]) from None
    return reply({"id": sid, "status": "expired"})


# --- test alerts and reload ------------------------------------------------------


def _channel_names(raw: object) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(n, str) for n in raw):
        return list(raw)
    raise ApiError(400, "invalid body", ["channel must be a channel name or a list of them"])


async def post_test_alert(request: web.Request) -> web.Response:
    app = app_of(request)
    body = await read_object(request, frozenset(TestAlertRequest.model_fields))
    names = _channel_names(body.get("channel"))
    severity = body.get("severity", "critical")
    if severity not in ops.TEST_SEVERITIES:
        raise ApiError(
            400, "invalid body", [f"severity must be one of {', '.join(ops.TEST_SEVERITIES)}"]
        )
    try:
        results = await ops.test_alert(app.config, app.channels, names, severity)
    except NotFoundError as exc:
        raise ApiError(404, "unknown channel", [str(exc)]) from None
    if not results:
        raise ApiError(
            400,
            "no enabled channel to test",
            ['every channel has enabled = false; name one in "channel" or enable one'],
        )
    answer = {"results": {name: r.to_api() for name, r in results.items()}}
    return reply(answer, status=200 if all(r.ok for r in results.values()) else 502)


def _reload_details(app: App, error: str) -> list[str]:
    # One line per problem when App keeps them apart; its message joins them with "; ".
    errors = getattr(app, "last_reload_errors", None)
    if isinstance(errors, list) and errors:
        return [str(e) for e in errors]
    return [error]


async def reload(request: web.Request) -> web.Response:
    app = app_of(request)
    await read_object(request, frozenset(EmptyRequest.model_fields))
    error = await app.reload()
    if error is not None:
        raise ApiError(400, "reload failed", _reload_details(app, error))
    return reply(
        {"status": "reloaded", "rules": len(app.config.rules), "channels": len(app.channels)}
    )


# --- dead letters ----------------------------------------------------------------


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_DEAD_LIMIT:
        raise ApiError(400, "invalid limit", [f"limit must be an integer 1..{MAX_DEAD_LIMIT}"])
    return limit


async def list_dead_letters(request: web.Request) -> web.Response:
    app = app_of(request)
    limit = _limit(request)
    source = _choice(request, "source", DEAD_SOURCES)
    return reply({"dead_letters": await app.dead.list(limit, source)})


async def list_notifications(request: web.Request) -> web.Response:
    app = app_of(request)
    outcome = _choice(request, "outcome", OUTCOMES)
    try:
        since = parse_since(request.query.get("since", ""), time.time())
    except ValueError as exc:
        raise ApiError(400, "invalid since", [str(exc)]) from None
    found = await app.history.list(
        channel=request.query.get("channel") or None,
        outcome=outcome,
        fingerprint=request.query.get("fingerprint") or None,
        since=since,
        limit=_limit(request),
    )
    return reply({"notifications": found})


async def replay_dead_letters(request: web.Request) -> web.Response:
    app = app_of(request)
    body = await read_object(request, frozenset(ReplayRequest.model_fields))
    ids = body.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError(
                400, "invalid body", ["ids must be a non-empty list of ids (omit it to replay all)"]
            )
        bad = [i for i in ids if not _STREAM_ID.match(i)]
        if bad:
            raise ApiError(
                400, "invalid body", [f"{i[:60]!r} is not a dead letter id" for i in bad]
            )
    result = await ops.replay_dead_letters(app.routed, app.config, ids)
    return reply(result)


def add_routes(router: web.UrlDispatcher) -> None:
    v1 = "/api/v1"
    router.add_get(f"{v1}/alerts", list_alerts)
    router.add_get(f"{v1}/rules", list_rules)
    router.add_post(f"{v1}/events", post_events)
    router.add_get(f"{v1}/silences", list_silences)
    router.add_post(f"{v1}/silences", create_silence)
    router.add_delete(f"{v1}/silences/{{id}}", expire_silence)
    router.add_post(f"{v1}/test-alert", post_test_alert)
    router.add_post(f"{v1}/reload", reload)
    router.add_get(f"{v1}/dead-letters", list_dead_letters)
    router.add_get(f"{v1}/notifications", list_notifications)
    router.add_post(f"{v1}/dead-letters/replay", replay_dead_letters)
