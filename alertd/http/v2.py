"""`/api/v2`: the parts of Alertmanager's API v2 that senders and tools use.

Prometheus, Grafana, vmalert post alerts here; amtool queries alerts and
manages silences. Bodies are the models of `alertd.http.models`; alerts and
silences are alertd's own (the store, `alertd.silences`), shown in
Alertmanager's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from alertd import __version__
from alertd.errors import NotFoundError
from alertd.http.am_matchers import object_of, parse_text
from alertd.http.am_silences import (
    gettable_silence,
    listing_order,
    silence_from_postable,
    updates_in_place,
)
from alertd.http.common import ApiError, app_of, read_json, reply
from alertd.http.models import (
    AlertGroup,
    AlertmanagerConfig,
    AlertmanagerStatus,
    AlertStatus,
    ClusterStatus,
    GettableAlert,
    PostableAlerts,
    PostableSilence,
    Receiver,
    ReceiverReference,
    SilenceCreated,
    VersionInfo,
)
from alertd.http.paging import NEXT_CURSOR_HEADER, page_params, paginate
from alertd.inhibit import Inhibitor, InhibitRule
from alertd.matchers import Matcher, matches_all, parse_matcher
from alertd.model import Alert, new_id, rfc3339
from alertd.posted import Posted, is_posted
from alertd.posted_writer import PostConflictError, PostedAlertWriter
from alertd.redact import redact
from alertd.silences import Silence, silenced_by

if TYPE_CHECKING:
    from alertd.app import App

V2 = "/api/v2"
_LAST_TS = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def _answer(model: Any, status: int = 200) -> web.Response:
    return reply(model.model_dump(mode="json"), status=status)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "true").lower()
    if raw not in ("true", "false"):
        raise ApiError(400, f"invalid {name}", [f"{name} must be true or false"])
    return raw == "true"


def _filters(request: web.Request) -> tuple[Matcher, ...]:
    try:
        return tuple(parse_text(t) for t in request.query.getall("filter", []))
    except ValueError as exc:
        raise ApiError(400, "invalid filter", [str(exc)]) from None


def _receiver_filter(request: web.Request) -> Callable[[str], bool]:
    """Alertmanager's `receiver`: a regular expression the whole name must match."""
    raw = request.query.get("receiver")
    if not raw:
        return lambda _: True
    try:
        matcher = parse_matcher("receiver", "~" + raw)
    except ValueError as exc:
        raise ApiError(400, "invalid receiver", [str(exc)]) from None
    return lambda name: matcher.matches({"receiver": name})


def _errors(exc: ValidationError) -> list[str]:
    """One line per problem: `[index] field: why` (as /api/v1/events words them)."""
    out = []
    for e in exc.errors(include_url=False, include_input=False)[:50]:
        loc = list(e["loc"])
        index = f"[{loc.pop(0)}] " if loc and isinstance(loc[0], int) else ""
        where = ".".join(str(p) for p in loc)
        msg = str(e["msg"]).removeprefix("Value error, ")
        out.append(f"{index}{where}: {msg}" if where else f"{index}{msg}")
    return out


# --- alerts ----------------------------------------------------------------------


class AlertView:
    """What every alert of one answer is judged against: routes, silences, inhibitions."""

    def __init__(self, app: App, alerts: list[Alert], silences: list[Silence], now: float):
        self.router = app.runtime.router
        self.channels = app.config.channels
        self.silences = silences
        self.now = now
        rules = [InhibitRule.from_settings(s) for s in app.config.settings.inhibit]
        firing = [a for a in alerts if a.state == "firing"]
        self.inhibitor = Inhibitor(rules, firing) if rules else None

    def receivers(self, alert: Alert) -> list[str]:
        names: dict[str, None] = {}
        for policy in self.router.policies(alert):
            for ch in policy.channels:
                cfg = self.channels.get(ch)
                if cfg is None or cfg.enabled:
                    names[ch] = None
        return list(names)

    def gettable(self, alert: Alert) -> GettableAlert:
        silenced = silenced_by(alert.labels, self.silences, self.now)
        inhibited = self.inhibitor.inhibited_by(alert) if self.inhibitor else []
        if alert.state == "pending":
            state = "unprocessed"  # a rule's `for` still runs: nobody is told yet
        elif silenced or inhibited:
            state = "suppressed"
        else:
            state = "active"
        return GettableAlert(
            labels=alert.labels,
            annotations=alert.annotations,
            receivers=[ReceiverReference(name=n) for n in self.receivers(alert)],
            fingerprint=alert.fingerprint,
            startsAt=rfc3339(alert.starts_at),
            updatedAt=rfc3339(alert.updated_at),
            endsAt=rfc3339(alert.ends_at),
            generatorURL=alert.generator_url,
            status=AlertStatus(
                state=state,
                silencedBy=silenced,
                inhibitedBy=inhibited,
                mutedBy=[],
            ),
        )


def _wanted(request: web.Request) -> Callable[[GettableAlert], bool]:
    """The filter of the alert listings' parameters (Alertmanager's meanings)."""
    active, silenced = _flag(request, "active"), _flag(request, "silenced")
    inhibited, unprocessed = _flag(request, "inhibited"), _flag(request, "unprocessed")
    matchers = _filters(request)

    def wanted(g: GettableAlert) -> bool:
        st = g.status
        if st.state == "active" and not active:
            return False
        if st.state == "unprocessed" and not unprocessed:
            return False
        if st.silencedBy and not silenced:
            return False
        if st.inhibitedBy and not inhibited:
            return False
        return matches_all(matchers, g.labels)

    return wanted


async def _current(app: App) -> tuple[list[Alert], AlertView]:
    now = app.clock()
    # A posted alert past its endsAt is over, even before the clock resolves it.
    alerts = [
        a
        for a in await app.store.all()
        if a.state != "resolved" and not (is_posted(a) and (a.ends_at or now) < now)
    ]
    alerts.sort(key=lambda a: (a.starts_at, a.fingerprint))
    return alerts, AlertView(app, alerts, await app.silences.active(now), now)


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def _alert_order(alert: dict[str, Any]) -> tuple[str, ...]:
    return (str(alert["startsAt"]), str(alert["fingerprint"]))


async def get_alerts(request: web.Request) -> web.Response:
    app = app_of(request)
    wanted = _wanted(request)
    by_receiver = _receiver_filter(request)
    limit, after = page_params(request)
    alerts, view = await _current(app)
    out = []
    for alert in alerts:
        g = view.gettable(alert)
        if wanted(g) and any(by_receiver(r.name) for r in g.receivers):
            out.append(_dump(g))
    # Alertmanager's answer is a bare list: the next page's cursor goes in a header.
    page, next_cursor = paginate(out, _alert_order, limit, after)
    headers = {NEXT_CURSOR_HEADER: next_cursor} if next_cursor else None
    return reply(page, headers=headers)


async def get_alert_groups(request: web.Request) -> web.Response:
    app = app_of(request)
    wanted = _wanted(request)
    by_receiver = _receiver_filter(request)
    muted_groups = _flag(request, "muted")
    alerts, view = await _current(app)
    groups: dict[tuple[str, str], AlertGroup] = {}
    for alert in alerts:
        g = view.gettable(alert)
        if not wanted(g):
            continue
        receivers = {r.name for r in g.receivers}
        for target in view.router.groups(alert):
            for ch in target.policy.channels:
                if ch not in receivers or not by_receiver(ch):
                    continue
                group = groups.get((target.gid, ch))
                if group is None:
                    group = groups[(target.gid, ch)] = AlertGroup(
                        labels=target.labels,
                        routeLabels={},
                        receiver=ReceiverReference(name=ch),
                        alerts=[],
                    )
                group.alerts.append(g)
    out = [
        _dump(g)
        for g in groups.values()
        if muted_groups or any(a.status.state != "suppressed" for a in g.alerts)
    ]
    return reply(out)


def _posted(body: object) -> list[Posted]:
    try:
        alerts = PostableAlerts.model_validate(body).root
    except ValidationError as exc:
        raise ApiError(400, "invalid alerts", _errors(exc)) from None
    posted = []
    for i, a in enumerate(alerts):
        starts = a.startsAt.timestamp() if a.startsAt is not None and a.startsAt.year > 1 else None
        ends = a.endsAt.timestamp() if a.endsAt is not None and a.endsAt.year > 1 else None
        if starts is not None and ends is not None and ends < starts:
            raise ApiError(400, "invalid alerts", [f"[{i}] endsAt: is before startsAt"])
        if any(t is not None and not 0 <= t <= _LAST_TS for t in (starts, ends)):
            raise ApiError(400, "invalid alerts", [f"[{i}] a time is out of range"])
        posted.append(Posted(a.labels, a.annotations, starts, ends, a.generatorURL))
    return posted


async def post_alerts(request: web.Request) -> web.Response:
    app = app_of(request)
    posted = _posted(await read_json(request, required=True))
    if posted:
        ev = app.evaluator
        timeout_s = app.config.settings.notify.resolve_timeout.total_seconds()
        writer = PostedAlertWriter(ev.writer, ev.on_change, timeout_s)
        try:
            await writer.post(posted, app.clock())
        except PostConflictError as exc:
            raise ApiError(503, "busy", [str(exc)], {"Retry-After": "1"}) from None
    return web.Response(status=200)


# --- silences --------------------------------------------------------------------


async def get_silences(request: web.Request) -> web.Response:
    app = app_of(request)
    matchers = _filters(request)
    states = {st for st in ("active", "pending", "expired") if _flag(request, st)}
    now = app.clock()
    out = []
    for s in sorted(await app.silences.list(now), key=lambda s: listing_order(s, now)):
        # A filter matches a silence when it holds for the labels its matchers name.
        named = {n: object_of(n, spec)["value"] for n, spec in s.matcher_pairs()}
        if s.state(now) in states and matches_all(matchers, {k: str(v) for k, v in named.items()}):
            out.append(_dump(gettable_silence(s, now)))
    return reply(out)


async def get_silence(request: web.Request) -> web.Response:
    app = app_of(request)
    try:
        silence = await app.silences.get(request.match_info["id"])
    except NotFoundError as exc:
        raise ApiError(404, "silence not found", [str(exc)]) from None
    return _answer(gettable_silence(silence, app.clock()))


async def delete_silence(request: web.Request) -> web.Response:
    app = app_of(request)
    try:
        await app.silences.expire(request.match_info["id"], app.clock())
    except NotFoundError as exc:
        raise ApiError(404, "silence not found", [str(exc)]) from None
    return web.Response(status=200)


async def post_silence(request: web.Request) -> web.Response:
    app = app_of(request)
    raw = await read_json(request, required=True)
    try:
        body = PostableSilence.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(400, "invalid silence", _errors(exc)) from None
    now = app.clock()
    prev = None
    if body.id:
        try:
            prev = await app.silences.get(body.id)
        except NotFoundError as exc:
            raise ApiError(404, "silence not found", [str(exc)]) from None
    try:
        silence = silence_from_postable(body, now, prev)
    except ValueError as exc:
        raise ApiError(400, "invalid silence", str(exc).split("; ")) from None
    if prev is None or not updates_in_place(prev, silence, now):
        if prev is not None:
            await app.silences.expire(prev.id, now)
        silence = replace(silence, id=new_id(now))
    await app.silences.create(silence)
    return _answer(SilenceCreated(silenceID=silence.id))


# --- status and receivers --------------------------------------------------------


def _masked(channel: dict[str, Any]) -> dict[str, Any]:
    """A channel's settings with its HTTP header values hidden (they often carry tokens)."""
    headers = channel.get("headers")
    if isinstance(headers, dict):
        channel["headers"] = dict.fromkeys(headers, "***")
    return channel


def _config_text(app: App) -> str:
    """The running configuration as JSON text, secrets masked (as amtool shows it)."""
    cfg = app.config
    data = {
        "settings": cfg.settings.model_dump(mode="json", by_alias=True),
        "channels": {n: _masked(c.model_dump(mode="json")) for n, c in cfg.channels.items()},
        "rules": [r.name for r in cfg.rules],
    }
    secrets = [s for c in cfg.channels.values() for s in c.secret_values()]
    secrets.append(cfg.settings.http.token.get_secret_value())
    return redact(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode(), secrets)


async def get_status(request: web.Request) -> web.Response:
    app = app_of(request)
    status = AlertmanagerStatus(
        cluster=ClusterStatus(name=app.consumer_name, status="ready", peers=[]),
        versionInfo=VersionInfo(
            version=__version__,
            revision="",
            branch="",
            buildUser="alertd",
            buildDate="",
            goVersion="none (alertd is written in Python)",
        ),
        config=AlertmanagerConfig(original=_config_text(app)),
        uptime=rfc3339(app.started_at),
    )
    return _answer(status)


async def get_receivers(request: web.Request) -> web.Response:
    app = app_of(request)
    return reply([_dump(Receiver(name=n)) for n in sorted(app.config.channels)])


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(f"{V2}/alerts", get_alerts)
    router.add_post(f"{V2}/alerts", post_alerts)
    router.add_get(f"{V2}/alerts/groups", get_alert_groups)
    router.add_get(f"{V2}/silences", get_silences)
    router.add_post(f"{V2}/silences", post_silence)
    router.add_get(f"{V2}/silence/{{id}}", get_silence)
    router.add_delete(f"{V2}/silence/{{id}}", delete_silence)
    router.add_get(f"{V2}/status", get_status)
    router.add_get(f"{V2}/receivers", get_receivers)
