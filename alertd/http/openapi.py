"""The OpenAPI 3.0 document of the HTTP API, served at `/api/v1/openapi.json`.

Generated from the pydantic models of the bodies (alertd.http.models): this
module only lists the operations, what each takes and answers.
tests/test_openapi.py checks the document validates and that every route the
server has is in it, and tests/test_schemathesis.py that answers follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from alertd import __version__
from alertd.http import models as m
from alertd.http.console import ASSET_NAMES as CONSOLE_ASSETS
from alertd.http.paging import DEFAULT_LIMIT, MAX_LIMIT
from alertd.model import SEVERITIES

JSON = "application/json"
Schema = dict[str, Any]
STR: Schema = {"type": "string"}
# An answer: a model, a schema of its own, or just a description (no body).
Answer = type[BaseModel] | Schema | str

ERRORS = {
    400: ("BadRequest", "invalid request: malformed JSON, wrong type, bad field"),
    401: ("Unauthorized", "missing or wrong bearer token (http.token is set)"),
    403: ("Forbidden", "no http.token is set and the caller is not on loopback or trusted"),
    404: ("NotFound", "no such resource"),
    413: ("PayloadTooLarge", "the body is larger than 1 MiB"),
    500: ("InternalError", "an unexpected error (logged by the server)"),
    503: ("RedisUnavailable", "Redis did not answer"),
}
READ_ERRORS = (400, 401, 500, 503)
WRITE_ERRORS = (400, 401, 403, 413, 500, 503)


@dataclass(frozen=True)
class Op:
    """One operation: what it takes and what it answers."""

    summary: str
    answers: dict[int, tuple[Answer, str]]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    params: list[Schema] = field(default_factory=list)
    public: bool = False  # no token needed (probes, metrics)
    headers: dict[int, dict[str, Schema]] = field(default_factory=dict)


def query(name: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        **extra,
    }


def _array(name: str) -> Schema:
    return {"type": "array", "items": ref(name)}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


ID_PATH = {"name": "id", "in": "path", "required": True, "schema": STR}
V2_FILTER = query(
    "filter",
    {"type": "array", "items": STR},
    'matchers like alertname="X" or env=~"prod.*", repeatable; all must hold',
    style="form",
    explode=True,
)
V2_RECEIVER = query("receiver", STR, "a regular expression the receiver's name must match")


def flags(*names: str) -> list[Schema]:
    return [query(n, {"type": "boolean", "default": True}, f"include {n} ones") for n in names]


OPERATIONS: dict[tuple[str, str], Op] = {
    ("/health", "get"): Op(
        "Overall health with the state of each dependency",
        {200: (m.Health, "healthy or degraded"), 503: (m.Health, "unhealthy: Redis is down")},
        public=True,
    ),
    ("/health/live", "get"): Op(
        "Liveness: the event loop answers", {200: (m.Live, "alive")}, public=True
    ),
    ("/health/ready", "get"): Op(
        "Readiness: Redis answers, the group is joined, rules are loaded",
        {200: (m.Ready, "ready"), 503: (m.Ready, "not ready, with the reason")},
        public=True,
    ),
    ("/metrics", "get"): Op(
        "Prometheus metrics",
        {200: ({"text/plain": STR}, "Prometheus text exposition format")},
        public=True,
    ),
    ("/", "get"): Op(
        "The web console (its data comes from /api/v1, with the token when one is set)",
        {200: ({"text/html": STR}, "the page")},
        public=True,
    ),
    ("/console/{name}", "get"): Op(
        "A static asset of the web console",
        {
            200: (
                {"text/javascript": STR, "text/css": STR, "image/svg+xml": STR},
                "script, style sheet or icon",
            )
        },
        (404,),
        params=[
            {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(CONSOLE_ASSETS)},
            }
        ],
        public=True,
    ),
    ("/api/v1/openapi.json", "get"): Op(
        "This document", {200: ({"type": "object"}, "OpenAPI 3.0 document")}, (401,)
    ),
    ("/api/v1/alerts", "get"): Op(
        "Current (pending and firing) alerts, rules' and posted to /api/v2",
        {200: (m.V1Alerts, "the alerts")},
        READ_ERRORS,
        params=[
            query("state", {"type": "string", "enum": ["pending", "firing"]}, "only this state"),
            query("severity", {"type": "string", "enum": list(SEVERITIES)}, "only this severity"),
            query(
                "filter",
                {"type": "array", "items": STR},
                "label=value, repeatable; all must hold",
                style="form",
                explode=True,
            ),
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                f"at most this many alerts (default {DEFAULT_LIMIT})",
            ),
            query("cursor", STR, "the next_cursor of the previous page"),
        ],
    ),
    ("/api/v1/rules", "get"): Op(
        "Loaded rules, their files, and their series' states",
        {200: (m.V1Rules, "the rules")},
        (401, 500, 503),
    ),
    ("/api/v1/events", "post"): Op(
        "Publish one event or an array of up to 1000 (all or nothing)",
        {202: (m.Accepted, "added")},
        WRITE_ERRORS,
        body=m.Events,
    ),
    ("/api/v1/silences", "get"): Op(
        "Silences (expired ones are kept a day)",
        {200: (m.V1Silences, "the silences")},
        READ_ERRORS,
        params=[
            query(
                "status",
                {"type": "string", "enum": ["pending", "active", "expired"]},
                "only this status",
            )
        ],
    ),
    ("/api/v1/silences", "post"): Op(
        "Create a silence (duration, or startsAt/endsAt)",
        {201: (m.SilenceId, "created")},
        WRITE_ERRORS,
        body=m.SilenceRequest,
        headers={201: {"Location": STR}},
    ),
    ("/api/v1/silences/{id}", "delete"): Op(
        "Expire a silence now",
        {200: (m.SilenceExpired, "expired")},
        (401, 403, 404, 500, 503),
        params=[ID_PATH],
    ),
    ("/api/v1/test-alert", "post"): Op(
        "Send a synthetic alert through the real delivery path",
        {
            200: (m.TestAlertResults, "every channel delivered"),
            502: (m.TestAlertResults, "at least one channel failed"),
        },
        (400, 401, 403, 404, 413, 500),
        body=m.TestAlertRequest,
        body_required=False,
    ),
    ("/api/v1/reload", "post"): Op(
        "Reload configuration, rules and channels",
        {
            200: (m.Reloaded, "reloaded"),
            400: (m.Error, "the new configuration is invalid; the old one is kept"),
        },
        (401, 403, 413, 500),
        body=m.EmptyRequest,
        body_required=False,
    ),
    ("/api/v1/dead-letters", "get"): Op(
        "Dead letters, newest first",
        {200: (m.DeadLetters, "the dead letters")},
        READ_ERRORS,
        params=[
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                "at most this many",
            ),
            query(
                "source",
                {"type": "string", "enum": ["event", "notification"]},
                "only this source",
            ),
        ],
    ),
    ("/api/v1/notifications", "get"): Op(
        "Notification history, newest first (kept notify.history_retention)",
        {200: (m.Notifications, "the notifications")},
        READ_ERRORS,
        params=[
            query("channel", STR, "only this channel's"),
            query(
                "outcome",
                {"type": "string", "enum": ["pending", "delivered", "dead-lettered", "held"]},
                "only those with this outcome",
            ),
            query("fingerprint", STR, "only those that carried this alert"),
            query(
                "since", STR, "only those queued since: RFC 3339, unix seconds, or a duration ago"
            ),
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                "at most this many",
            ),
        ],
    ),
    ("/api/v1/dead-letters/replay", "post"): Op(
        "Replay dead letters: all, or those named in ids",
        {200: (m.ReplayResult, "what was replayed, failed, or not found")},
        WRITE_ERRORS,
        body=m.ReplayRequest,
        body_required=False,
    ),
    # --- Alertmanager's API v2 ---
    ("/api/v2/alerts", "get"): Op(
        "Current alerts (rules' and posted), as Alertmanager lists them",
        {200: (_array("GettableAlert"), "the alerts")},
        READ_ERRORS,
        params=[
            *flags("active", "silenced", "inhibited", "unprocessed"),
            V2_FILTER,
            V2_RECEIVER,
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                f"at most this many alerts (default {DEFAULT_LIMIT}); the next page's cursor "
                "is in the X-Next-Cursor header",
            ),
            query("cursor", STR, "the X-Next-Cursor of the previous page"),
        ],
        headers={200: {"X-Next-Cursor": STR}},
    ),
    ("/api/v2/alerts", "post"): Op(
        "Post alerts (Prometheus, Grafana, vmalert, amtool); all or nothing",
        {200: ("stored", "stored")},
        WRITE_ERRORS,
        body=m.PostableAlerts,
    ),
    ("/api/v2/alerts/groups", "get"): Op(
        "Current alerts by group and receiver",
        {200: (_array("AlertGroup"), "the groups")},
        READ_ERRORS,
        params=[
            *flags("active", "silenced", "inhibited", "unprocessed", "muted"),
            V2_FILTER,
            V2_RECEIVER,
        ],
    ),
    ("/api/v2/silences", "get"): Op(
        "Silences in Alertmanager's shape (expired ones are kept a day)",
        {200: (_array("GettableSilence"), "the silences")},
        READ_ERRORS,
        params=[*flags("active", "pending", "expired"), V2_FILTER],
    ),
    ("/api/v2/silences", "post"): Op(
        "Create a silence, or change the one `id` names",
        {200: (m.SilenceCreated, "created or changed")},
        (*WRITE_ERRORS, 404),
        body=m.PostableSilence,
    ),
    ("/api/v2/silence/{id}", "get"): Op(
        "One silence",
        {200: (m.GettableSilence, "the silence")},
        (401, 404, 500, 503),
        params=[ID_PATH],
    ),
    ("/api/v2/silence/{id}", "delete"): Op(
        "Expire a silence now",
        {200: ("expired", "expired")},
        (401, 403, 404, 500, 503),
        params=[ID_PATH],
    ),
    ("/api/v2/status", "get"): Op(
        "Version, uptime, the configuration (secrets masked), cluster",
        {200: (m.AlertmanagerStatus, "the status")},
        (401, 500),
    ),
    ("/api/v2/receivers", "get"): Op(
        "The channels", {200: (_array("Receiver"), "the channels")}, (401, 500)
    ),
}
# Models only named by reference above (lists of them), with the mode they appear in.
LISTED: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (m.GettableAlert, "serialization"),
    (m.AlertGroup, "serialization"),
    (m.GettableSilence, "serialization"),
    (m.Receiver, "serialization"),
    (m.Error, "serialization"),
]


def openapi30(schema: Any) -> Any:
    """A pydantic (JSON Schema 2020-12) schema in OpenAPI 3.0's dialect: `nullable`,
    `enum` for `const`, `example` for `examples`, no titles, no null defaults."""
    if isinstance(schema, list):
        return [openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: openapi30(v) for k, v in schema.items() if k != "title"}
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        one = rest[0] if len(rest) == 1 else {"anyOf": rest}
        out.update({"allOf": [one]} if "$ref" in one else one)
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("examples"), list):
        out["example"] = out.pop("examples")[0]
    if "default" in out and out["default"] is None and not out.get("nullable"):
        del out["default"]  # "absent" in Python, not a null the client may send
    return out


def _modes() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    out: list[tuple[type[BaseModel], JsonSchemaMode]] = list(LISTED)
    for op in OPERATIONS.values():
        if op.body is not None:
            out.append((op.body, "validation"))
        out += [
            (a, "serialization")
            for a, _ in op.answers.values()
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
    return list(dict.fromkeys(out))


def _content(
    answer: Answer, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Schema]
) -> Schema | None:
    if isinstance(answer, str):
        return None
    if isinstance(answer, dict):
        media = {k: v for k, v in answer.items() if "/" in k}  # {media type: schema}
        if media:
            return {k: {"schema": v} for k, v in media.items()}
        return {JSON: {"schema": answer}}
    return {JSON: {"schema": refs[(answer, "serialization")]}}


def _operation(op: Op, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Schema]) -> Schema:
    responses: Schema = {}
    for code, (answer, description) in op.answers.items():
        resp: Schema = {"description": description}
        content = _content(answer, refs)
        if content is not None:
            resp["content"] = content
        if code in op.headers:
            resp["headers"] = {h: {"schema": s} for h, s in op.headers[code].items()}
        responses[str(code)] = resp
    for code in op.errors:
        if str(code) not in responses:
            responses[str(code)] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    out: Schema = {"summary": op.summary, "responses": responses}
    if op.params:
        out["parameters"] = op.params
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {JSON: {"schema": refs[(op.body, "validation")]}},
        }
    if op.public:
        out["security"] = []
    return out


@cache
def openapi_document() -> dict[str, Any]:
    modes = _modes()
    keys, top = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    refs: dict[tuple[type[BaseModel], JsonSchemaMode], Schema] = {
        (model, mode): openapi30(v)
        for (model, mode), v in keys.items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    schemas = {name: openapi30(s) for name, s in top.get("$defs", {}).items()}
    paths: dict[str, Schema] = {}
    for (path, method), op in OPERATIONS.items():
        paths.setdefault(path, {})[method] = _operation(op, refs)
    responses: Schema = {
        name: {"description": why, "content": {JSON: {"schema": ref("Error")}}}
        for name, why in ERRORS.values()
    }
    responses["Unauthorized"]["headers"] = {"WWW-Authenticate": {"schema": STR}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "alertd",
            "version": __version__,
            "description": (
                "alertd's HTTP API, and the parts of Alertmanager's API v2 senders and "
                "tools use. Errors are JSON {error, details}. With http.token set every "
                "/api/v1 and /api/v2 call needs `Authorization: Bearer <token>`; with none, "
                "GETs are open and other methods are accepted from loopback addresses "
                "and http.trusted_networks only."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
