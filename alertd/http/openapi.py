"""The OpenAPI 3.0 document of the HTTP API, served at `/api/v1/openapi.json`.

Written by hand next to the handlers; tests/test_openapi.py checks it validates
and that every route the server has is in it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from alertd import __version__
from alertd.http.console import ASSET_NAMES as CONSOLE_ASSETS
from alertd.model import SEVERITIES

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "object", "properties": props, **extra}
    if required:
        out["required"] = required
    return out


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Schema]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        413: "PayloadTooLarge",
        500: "InternalError",
        503: "RedisUnavailable",
    }
    return {str(c): {"$ref": f"#/components/responses/{names[c]}"} for c in codes}


def _body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {JSON: {"schema": schema}}}


STR = {"type": "string"}
STR_MAP = {"type": "object", "additionalProperties": STR}
TIME = {"type": "string", "format": "date-time"}
NUM_OR_NULL = {"type": "number", "nullable": True}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj({"error": STR, "details": {"type": "array", "items": STR}}, ["error", "details"]),
    "Event": _obj(
        {
            "name": {"type": "string", "maxLength": 200, "pattern": "^[A-Za-z_:][A-Za-z0-9_:.-]*$"},
            "value": {"type": "number", "default": 1},
            "labels": {
                "type": "object",
                "maxProperties": 32,
                "additionalProperties": {"type": "string", "maxLength": 1024},
            },
            "ts": {
                "description": "unix seconds or an RFC 3339 time; default: now",
                "oneOf": [{"type": "number"}, TIME],
            },
        },
        ["name"],
        additionalProperties=False,
    ),
    "Alert": _obj(
        {
            "labels": STR_MAP,
            "annotations": STR_MAP,
            "state": {"type": "string", "enum": ["pending", "firing"]},
            "severity": {"type": "string", "enum": list(SEVERITIES)},
            "value": NUM_OR_NULL,
            "startsAt": TIME,
            "fingerprint": STR,
            "rule": STR,
            "silencedBy": {"type": "array", "items": STR},
            "inhibitedBy": {"type": "array", "items": STR},
            "mutedBy": {
                "description": "time intervals muting one of its routes now",
                "type": "array",
                "items": STR,
            },
            "groups": {
                "description": "the aggregation groups it is notified in",
                "type": "array",
                "items": _obj(
                    {
                        "groupKey": STR,
                        "groupLabels": STR_MAP,
                        "channels": {"type": "array", "items": STR},
                        "mutedBy": {"type": "array", "items": STR},
                    }
                ),
            },
        },
        ["labels", "state", "severity", "fingerprint"],
    ),
    "Series": _obj(
        {
            "fingerprint": STR,
            "labels": STR_MAP,
            "state": {"type": "string", "enum": ["pending", "firing"]},
            "severity": {"type": "string", "enum": list(SEVERITIES)},
            "value": NUM_OR_NULL,
        }
    ),
    "Rule": _obj(
        {
            "name": STR,
            "file": STR,
            "metric": STR,
            "divide_by": {"type": "string", "nullable": True},
            "aggregate": STR,
            "window": {"type": "string", "example": "5m"},
            "for": {"type": "string", "example": "1m"},
            "group_by": {"type": "array", "items": STR},
            "match": STR_MAP,
            "levels": {**STR_MAP, "example": {"warning": "> 0.01", "critical": "> 0.05"}},
            "recovery": STR_MAP,
            "labels": STR_MAP,
            "channels": {"type": "array", "items": STR, "nullable": True},
            "series": {"type": "array", "items": ref("Series")},
        },
        ["name", "file", "metric", "aggregate", "window", "group_by", "levels", "series"],
    ),
    "SilenceRequest": _obj(
        {
            "matchers": {
                **STR_MAP,
                "description": "label -> value; '~' regex, '!' negation (SPEC section 3)",
                "example": {"service": "api", "env": "~prod.*"},
            },
            "duration": {"type": "string", "example": "2h"},
            "startsAt": TIME,
            "endsAt": TIME,
            "createdBy": STR,
            "comment": STR,
        },
        ["matchers", "createdBy"],
        additionalProperties=False,
    ),
    "Silence": _obj(
        {
            "id": STR,
            "matchers": STR_MAP,
            "startsAt": TIME,
            "endsAt": TIME,
            "createdBy": STR,
            "comment": STR,
            "createdAt": TIME,
            "status": {"type": "string", "enum": ["pending", "active", "expired"]},
        },
        ["id", "matchers", "startsAt", "endsAt", "status"],
    ),
    "TestAlertRequest": _obj(
        {
            "channel": {
                "description": "a channel name or a list of them; default every enabled channel",
                "oneOf": [STR, {"type": "array", "items": STR, "minItems": 1}],
            },
            "severity": {"type": "string", "enum": list(SEVERITIES), "default": "critical"},
        },
        additionalProperties=False,
    ),
    "DeliveryResult": _obj(
        {
            "ok": {"type": "boolean"},
            "attempts": {"type": "integer"},
            "latency_ms": {"type": "number"},
            "error": STR,
        },
        ["ok", "attempts", "latency_ms"],
    ),
    "TestAlertResults": _obj(
        {"results": {"type": "object", "additionalProperties": ref("DeliveryResult")}},
        ["results"],
    ),
    "DeadLetter": _obj(
        {
            "id": STR,
            "source": {"type": "string", "enum": ["event", "notification"]},
            "reason": STR,
            "at": TIME,
            "stream_id": STR,
            "payload": STR,
            "channel": STR,
            "notification_id": STR,
            "attempts": STR,
            "last_error": STR,
        },
        ["id", "source", "reason", "at"],
    ),
    "ReplayRequest": _obj(
        {"ids": {"type": "array", "items": STR, "minItems": 1}}, additionalProperties=False
    ),
    "ReplayResult": _obj(
        {
            "replayed": {"type": "array", "items": STR},
            "failed": {"type": "array", "items": _obj({"id": STR, "error": STR})},
            "not_found": {"type": "array", "items": STR},
        },
        ["replayed", "failed", "not_found"],
    ),
    "Health": _obj(
        {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "timestamp": TIME,
            "version": STR,
            "uptime_s": {"type": "number"},
            "checks": _obj(
                {
                    "redis": _obj(
                        {
                            "status": {"type": "string", "enum": ["ok", "down"]},
                            "latency_ms": NUM_OR_NULL,
                            "error": STR,
                        }
                    ),
                    "consumer": _obj(
                        {
                            "lag": {"type": "integer", "nullable": True},
                            "pending": {"type": "integer", "nullable": True},
                            "joined": {"type": "boolean"},
                        }
                    ),
                    "rules": _obj(
                        {
                            "loaded": {"type": "integer"},
                            "last_reload_error": {"type": "string", "nullable": True},
                        }
                    ),
                    "channels": {
                        "type": "object",
                        "additionalProperties": _obj(
                            {
                                "status": {
                                    "type": "string",
                                    "enum": ["ok", "degraded", "failing", "disabled"],
                                },
                                "consecutive_failures": {"type": "integer"},
                                "last_success": {**TIME, "nullable": True},
                            }
                        ),
                    },
                }
            ),
        },
        ["status", "timestamp", "version", "uptime_s", "checks"],
    ),
    "Ready": _obj(
        {"status": {"type": "string", "enum": ["ready", "not ready"]}, "reason": STR}, ["status"]
    ),
}

RESPONSES: dict[str, Schema] = {
    "BadRequest": _json(ref("Error"), "invalid request: malformed JSON, wrong type, bad field"),
    "Unauthorized": {
        **_json(ref("Error"), "missing or wrong bearer token (http.token is set)"),
        "headers": {"WWW-Authenticate": {"schema": STR}},
    },
    "Forbidden": _json(ref("Error"), "no http.token is set and the caller is not on loopback"),
    "NotFound": _json(ref("Error"), "no such resource"),
    "PayloadTooLarge": _json(ref("Error"), "the body is larger than 1 MiB"),
    "InternalError": _json(ref("Error"), "an unexpected error (logged by the server)"),
    "RedisUnavailable": _json(ref("Error"), "Redis did not answer"),
}

NO_AUTH: list[Schema] = []
READ_ERRORS = (400, 401, 500, 503)
WRITE_ERRORS = (400, 401, 403, 413, 500, 503)


def _query(name: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        **extra,
    }


def _paths() -> dict[str, Schema]:
    return {
        "/health": {
            "get": {
                "summary": "Overall health with the state of each dependency",
                "security": NO_AUTH,
                "responses": {
                    "200": _json(ref("Health"), "healthy or degraded"),
                    "503": _json(ref("Health"), "unhealthy: Redis does not answer"),
                },
            }
        },
        "/health/live": {
            "get": {
                "summary": "Liveness: the event loop answers",
                "security": NO_AUTH,
                "responses": {"200": _json(_obj({"status": {"type": "string"}}), "alive")},
            }
        },
        "/health/ready": {
            "get": {
                "summary": "Readiness: Redis answers, the group is joined, rules are loaded",
                "security": NO_AUTH,
                "responses": {
                    "200": _json(ref("Ready"), "ready"),
                    "503": _json(ref("Ready"), "not ready, with the reason"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": NO_AUTH,
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "summary": "The web console (its data comes from /api/v1 with the token)",
                "security": NO_AUTH,
                "responses": {
                    "200": {"description": "HTML page", "content": {"text/html": {"schema": STR}}}
                },
            }
        },
        "/console/{name}": {
            "get": {
                "summary": "A static asset of the web console",
                "security": NO_AUTH,
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(CONSOLE_ASSETS)},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "script, style sheet or icon",
                        "content": {
                            "text/javascript": {"schema": STR},
                            "text/css": {"schema": STR},
                            "image/svg+xml": {"schema": STR},
                        },
                    },
                    **_errors(404),
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": _json({"type": "object"}, "OpenAPI 3.0 document"),
                    **_errors(401),
                },
            }
        },
        "/api/v1/alerts": {
            "get": {
                "summary": "Current (pending and firing) alerts",
                "parameters": [
                    _query(
                        "state",
                        {"type": "string", "enum": ["pending", "firing"]},
                        "only this state",
                    ),
                    _query(
                        "severity",
                        {"type": "string", "enum": list(SEVERITIES)},
                        "only this severity",
                    ),
                    _query(
                        "filter",
                        {"type": "array", "items": STR},
                        "label=value, repeatable; all must hold",
                        style="form",
                        explode=True,
                    ),
                ],
                "responses": {
                    "200": _json(
                        _obj({"alerts": {"type": "array", "items": ref("Alert")}}, ["alerts"]),
                        "the alerts",
                    ),
                    **_errors(*READ_ERRORS),
                },
            }
        },
        "/api/v1/rules": {
            "get": {
                "summary": "Loaded rules, their files, and their series' states",
                "responses": {
                    "200": _json(
                        _obj({"rules": {"type": "array", "items": ref("Rule")}}, ["rules"]),
                        "the rules",
                    ),
                    **_errors(401, 500, 503),
                },
            }
        },
        "/api/v1/events": {
            "post": {
                "summary": "Publish one event or an array of up to 1000 (all or nothing)",
                "requestBody": _body(
                    {
                        "oneOf": [
                            ref("Event"),
                            {"type": "array", "items": ref("Event"), "maxItems": 1000},
                        ]
                    }
                ),
                "responses": {
                    "202": _json(_obj({"accepted": {"type": "integer"}}, ["accepted"]), "added"),
                    **_errors(*WRITE_ERRORS),
                },
            }
        },
        "/api/v1/silences": {
            "get": {
                "summary": "Silences (expired ones are kept a day)",
                "parameters": [
                    _query(
                        "status",
                        {"type": "string", "enum": ["pending", "active", "expired"]},
                        "only this status",
                    )
                ],
                "responses": {
                    "200": _json(
                        _obj(
                            {"silences": {"type": "array", "items": ref("Silence")}}, ["silences"]
                        ),
                        "the silences",
                    ),
                    **_errors(*READ_ERRORS),
                },
            },
            "post": {
                "summary": "Create a silence (duration, or startsAt/endsAt)",
                "requestBody": _body(ref("SilenceRequest")),
                "responses": {
                    "201": {
                        **_json(_obj({"id": STR}, ["id"]), "created"),
                        "headers": {"Location": {"schema": STR}},
                    },
                    **_errors(*WRITE_ERRORS),
                },
            },
        },
        "/api/v1/silences/{id}": {
            "delete": {
                "summary": "Expire a silence now",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": STR}],
                "responses": {
                    "200": _json(
                        _obj(
                            {"id": STR, "status": {"type": "string", "enum": ["expired"]}},
                            ["id", "status"],
                        ),
                        "expired",
                    ),
                    **_errors(401, 403, 404, 500, 503),
                },
            }
        },
        "/api/v1/test-alert": {
            "post": {
                "summary": "Send a synthetic alert through the real delivery path",
                "requestBody": _body(ref("TestAlertRequest"), required=False),
                "responses": {
                    "200": _json(ref("TestAlertResults"), "every channel delivered"),
                    "502": _json(ref("TestAlertResults"), "at least one channel failed"),
                    **_errors(400, 401, 403, 404, 413, 500),
                },
            }
        },
        "/api/v1/reload": {
            "post": {
                "summary": "Reload configuration, rules and channels",
                "requestBody": _body(_obj({}, additionalProperties=False), required=False),
                "responses": {
                    "200": _json(
                        _obj(
                            {
                                "status": {"type": "string", "enum": ["reloaded"]},
                                "rules": {"type": "integer"},
                                "channels": {"type": "integer"},
                            },
                            ["status", "rules"],
                        ),
                        "reloaded",
                    ),
                    "400": _json(
                        ref("Error"), "the new configuration is invalid; the old one is kept"
                    ),
                    **_errors(401, 403, 413, 500),
                },
            }
        },
        "/api/v1/dead-letters": {
            "get": {
                "summary": "Dead letters, newest first",
                "parameters": [
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                        "at most this many",
                    ),
                    _query(
                        "source",
                        {"type": "string", "enum": ["event", "notification"]},
                        "only this source",
                    ),
                ],
                "responses": {
                    "200": _json(
                        _obj(
                            {"dead_letters": {"type": "array", "items": ref("DeadLetter")}},
                            ["dead_letters"],
                        ),
                        "the dead letters",
                    ),
                    **_errors(*READ_ERRORS),
                },
            }
        },
        "/api/v1/dead-letters/replay": {
            "post": {
                "summary": "Replay dead letters: all, or those named in ids",
                "requestBody": _body(ref("ReplayRequest"), required=False),
                "responses": {
                    "200": _json(ref("ReplayResult"), "what was replayed, failed, or not found"),
                    **_errors(*WRITE_ERRORS),
                },
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "alertd",
            "version": __version__,
            "description": (
                "alertd's HTTP API. Errors are JSON {error, details}. With http.token set every "
                "/api/v1 call needs `Authorization: Bearer <token>`; with none, GETs are open "
                "and other methods are accepted from loopback addresses only."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
