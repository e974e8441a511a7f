"""Local stand-ins for the paging and chat services alertd cannot reach from a test.

Each answers as its service documents: the success code and body, the error body
for a request it would reject (checked against the documented required fields and
length limits), and its 429 with its own retry hint. `throttle(service, n, hint_s)`
makes the next n requests of a service answer 429.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import orjson
from aiohttp import web

PD_ROUTING_KEY = "R0UTINGKEY0123456789abcdef012345"  # 32 characters, as PagerDuty's are
OPSGENIE_KEY = "5f0c4a3e-0b1d-4c9e-9f2a-7d6e5c4b3a21"
TEAMS_SIG = "s1gN4tur3-0f-th3-w0rkfl0w"
DISCORD_TOKEN = "d1sc0rd-w3bh00k-t0k3n-XYZ"
TELEGRAM_TOKEN = "123456789:AAF-t3l3gr4m-b0t-t0k3n"
TELEGRAM_CHAT = "-1001234567890"
PD_THROTTLED = "Requests for this service are arriving too quickly. Please retry later."
OG_THROTTLED = "You are making too many requests! To avoid errors, we recommend you limit requests."
TEAMS_UNAUTHORIZED = "The request must be authenticated only by Shared Access scheme."
TEAMS_SCHEMA_MISMATCH = (
    "The input body for trigger 'manual' of type 'Request' did not match its schema definition."
)


@dataclass
class Call:
    service: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float
    status: int


@dataclass
class Services:
    """One HTTP server standing in for all five services, each under its own path."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    throttles: dict[str, tuple[int, float]] = field(default_factory=dict)

    def reset(self) -> None:
        self.calls.clear()
        self.throttles.clear()

    def throttle(self, service: str, times: int, hint_s: float) -> None:
        self.throttles[service] = (times, hint_s)

    def of(self, service: str, ok: bool = True) -> list[Call]:
        return [c for c in self.calls if c.service == service and (c.status < 300) == ok]

    # URLs a channel config points at
    @property
    def pagerduty(self) -> str:
        return f"{self.url}/v2/enqueue"

    @property
    def teams(self) -> str:
        path = "/workflows/abc123/triggers/manual/paths/invoke"
        return f"{self.url}{path}?api-version=1&sig={TEAMS_SIG}"

    @property
    def discord(self) -> str:
        return f"{self.url}/api/webhooks/123456789/{DISCORD_TOKEN}"

    def _throttled(self, service: str) -> float | None:
        times, hint_s = self.throttles.get(service, (0, 0.0))
        if times <= 0:
            return None
        self.throttles[service] = (times - 1, hint_s)
        return hint_s


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


async def _body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except ValueError:
        return None


# --- PagerDuty Events API v2 ------------------------------------------------------------

PD_SEVERITIES = ("critical", "error", "warning", "info")


def pagerduty_errors(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object is not valid JSON"]
    errors = []
    if len(str(event.get("routing_key", ""))) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    if len(str(event.get("dedup_key", ""))) > 255:
        errors.append("'dedup_key' must be 255 characters or less")
    if action in ("acknowledge", "resolve") and not event.get("dedup_key"):
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing or blank"]
        for key in ("summary", "source", "severity"):
            if not payload.get(key):
                errors.append(f"'payload.{key}' is missing or blank")
        if len(str(payload.get("summary", ""))) > 1024:
            errors.append("'payload.summary' must be 1024 characters or less")
        if payload.get("severity") and payload["severity"] not in PD_SEVERITIES:
            errors.append(
                "'payload.severity' is invalid (must be one of critical, error, warning, info)"
            )
    return errors


# --- Opsgenie Alert API -------------------------------------------------------------------

OG_LIMITS = {"message": 130, "alias": 512, "description": 15000, "entity": 512, "source": 100}


def opsgenie_errors(body: dict[str, Any]) -> dict[str, str]:
    errors = {}
    if not str(body.get("message", "")).strip():
        errors["message"] = "Message can not be empty."
    for key, limit in OG_LIMITS.items():
        if len(str(body.get(key, ""))) > limit:
            errors[key] = f"{key.capitalize()} can not be longer than {limit} characters."
    tags = body.get("tags", [])
    if len(tags) > 20 or any(len(t) > 50 for t in tags):
        errors["tags"] = "At most 20 tags of at most 50 characters are allowed."
    details = body.get("details", {})
    if sum(len(k) + len(str(v)) for k, v in details.items()) > 8000:
        errors["details"] = "Details can not be longer than 8000 characters."
    if body.get("priority", "P3") not in ("P1", "P2", "P3", "P4", "P5"):
        errors["priority"] = "Priority should be one of [P1, P2, P3, P4, P5]"
    for r in body.get("responders", []):
        if r.get("type") not in ("team", "user", "escalation", "schedule") or not (
            r.get("id") or r.get("name") or r.get("username")
        ):
            errors["responders"] = "Responder should have a type and one of id, name, username."
    return errors


def _opsgenie_accepted() -> web.Response:
    return _json(
        202, {"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4())}
    )


# --- Teams Workflows ----------------------------------------------------------------------


def teams_error(body: Any, size: int) -> str | None:
    if size > 28 * 1024:
        return "The message is larger than 28 KB."
    if not isinstance(body, dict) or body.get("type") != "message":
        return "Required property 'type' of value 'message' not found."
    atts = body.get("attachments")
    if not isinstance(atts, list) or not atts:
        return "Required property 'attachments' expects a non-empty array."
    for a in atts:
        content = a.get("content") if isinstance(a, dict) else None
        if a.get("contentType") != "application/vnd.microsoft.card.adaptive":
            return "Property 'contentType' must be 'application/vnd.microsoft.card.adaptive'."
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
            return "Property 'content.type' must be 'AdaptiveCard'."
        if not isinstance(content.get("body"), list):
            return "Property 'content.body' expects an array."
    return None


# --- Discord webhooks ---------------------------------------------------------------------


def _too_long(limit: int) -> dict[str, Any]:
    return {
        "_errors": [
            {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {limit} or fewer in length."}
        ]
    }


def discord_errors(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {
            "_errors": [{"code": "MODEL_TYPE_CONVERT", "message": "Only dictionaries may be used"}]
        }
    errors: dict[str, Any] = {}
    if len(body.get("content") or "") > 2000:
        errors["content"] = _too_long(2000)
    if len(body.get("username") or "") > 80:
        errors["username"] = _too_long(80)
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        errors["embeds"] = _too_long(10)
    total = 0
    for i, e in enumerate(embeds[:10]):
        mine: dict[str, Any] = {}
        for key, limit in (("title", 256), ("description", 4096)):
            total += len(e.get(key) or "")
            if len(e.get(key) or "") > limit:
                mine[key] = _too_long(limit)
        total += len((e.get("footer") or {}).get("text") or "")
        if len(e.get("fields") or []) > 25:
            mine["fields"] = _too_long(25)
        if not isinstance(e.get("color", 0), int):
            mine["color"] = {
                "_errors": [{"code": "NUMBER_TYPE_COERCE", "message": "Value is not int."}]
            }
        if mine:
            errors.setdefault("embeds", {})[str(i)] = mine
    if total > 6000:
        errors.setdefault("embeds", {})["_errors"] = [
            {
                "code": "MAX_EMBED_SIZE_EXCEEDED",
                "message": "Embed size exceeds maximum size of 6000",
            }
        ]
    return errors


# --- Telegram Bot API ---------------------------------------------------------------------

TG_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
}


class _TelegramHTML(HTMLParser):
    """What Telegram's HTML parse mode accepts, and the text it shows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.text: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TG_TAGS:
            self.error = self.error or f'Unsupported start tag "{tag}"'
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.error = self.error or f'Unexpected end tag "{tag}"'

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def telegram_check(text: str) -> tuple[str | None, str]:
    parser = _TelegramHTML()
    parser.feed(text)
    parser.close()
    if parser.error is None and parser.open:
        parser.error = f'Can\'t find end tag corresponding to start tag "{parser.open[-1]}"'
    visible = "".join(parser.text)
    if parser.error:
        return f"Bad Request: can't parse entities: {parser.error}", visible
    if not visible.strip():
        return "Bad Request: message text is empty", visible
    if len(visible) > 4096:
        return "Bad Request: message is too long", visible
    return None, visible


# --- the server ---------------------------------------------------------------------------


class _Handlers:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def record(
        self, request: web.Request, service: str, body: Any, response: web.Response
    ) -> web.Response:
        self.services.calls.append(
            Call(
                service,
                request.path,
                dict(request.query),
                dict(request.headers),
                body,
                time.time(),
                response.status,
            )
        )
        return response

    async def pagerduty(self, request: web.Request) -> web.Response:
        event = await _body(request)
        if (hint := self.services._throttled("pagerduty")) is not None:
            return await self.record(
                request,
                "pagerduty",
                event,
                _json(
                    429,
                    {
                        "status": "throttle event",
                        "message": PD_THROTTLED,
                    },
                    {"Retry-After": str(math.ceil(hint))},
                ),
            )
        errors = pagerduty_errors(event)
        if errors:
            return await self.record(
                request,
                "pagerduty",
                event,
                _json(
                    400,
                    {
                        "status": "invalid event",
                        "message": "Event object is invalid",
                        "errors": errors,
                    },
                ),
            )
        return await self.record(
            request,
            "pagerduty",
            event,
            _json(
                202,
                {
                    "status": "success",
                    "message": "Event processed",
                    "dedup_key": event.get("dedup_key") or uuid.uuid4().hex,
                },
            ),
        )

    def opsgenie_auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"GenieKey {OPSGENIE_KEY}":
            return _json(
                401,
                {"message": "Could not authenticate", "took": 0.0, "requestId": str(uuid.uuid4())},
            )
        if (hint := self.services._throttled("opsgenie")) is not None:
            return _json(
                429,
                {
                    "message": OG_THROTTLED,
                    "took": 0.0,
                    "requestId": str(uuid.uuid4()),
                },
                {"Retry-After": str(math.ceil(hint)), "X-RateLimit-State": "THROTTLED"},
            )
        return None

    async def opsgenie_create(self, request: web.Request) -> web.Response:
        body = await _body(request)
        refused = self.opsgenie_auth(request)
        if refused is not None:
            return await self.record(request, "opsgenie", body, refused)
        if not isinstance(body, dict):  # 400 is for syntax only; invalid fields are 422
            invalid = {"message": "Invalid JSON body", "took": 0.0, "requestId": str(uuid.uuid4())}
            return await self.record(request, "opsgenie", body, _json(400, invalid))
        errors = opsgenie_errors(body)
        if errors:
            return await self.record(
                request,
                "opsgenie",
                body,
                _json(
                    422,
                    {
                        "message": "Request has invalid fields",
                        "errors": errors,
                        "took": 0.0,
                        "requestId": str(uuid.uuid4()),
                    },
                ),
            )
        return await self.record(request, "opsgenie", body, _opsgenie_accepted())

    async def opsgenie_close(self, request: web.Request) -> web.Response:
        body = await _body(request)
        refused = self.opsgenie_auth(request)
        if refused is not None:
            return await self.record(request, "opsgenie", body, refused)
        if request.query.get("identifierType") not in ("id", "tiny", "alias"):
            return await self.record(
                request,
                "opsgenie",
                body,
                _json(
                    422,
                    {
                        "message": "Request has invalid fields",
                        "errors": {"identifierType": "Invalid identifier type"},
                        "took": 0.0,
                        "requestId": str(uuid.uuid4()),
                    },
                ),
            )
        if (
            len(request.match_info["identifier"]) > 512
            or len(str((body or {}).get("note", ""))) > 25000
        ):
            return await self.record(
                request,
                "opsgenie",
                body,
                _json(
                    422,
                    {
                        "message": "Request has invalid fields",
                        "errors": {"note": "Note can not be longer than 25000 characters."},
                        "took": 0.0,
                        "requestId": str(uuid.uuid4()),
                    },
                ),
            )
        return await self.record(request, "opsgenie", body, _opsgenie_accepted())

    async def teams(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except ValueError:
            body = None
        if request.query.get("sig") != TEAMS_SIG:
            return await self.record(
                request,
                "teams",
                body,
                _json(
                    401,
                    {
                        "error": {
                            "code": "DirectApiAuthorizationRequired",
                            "message": TEAMS_UNAUTHORIZED,
                        }
                    },
                ),
            )
        if (hint := self.services._throttled("teams")) is not None:
            return await self.record(
                request,
                "teams",
                body,
                _json(
                    429,
                    {
                        "error": {
                            "code": "WorkflowTriggeredTooManyRequests",
                            "message": "Rate limit is exceeded. Try again later.",
                        }
                    },
                    {"Retry-After": str(math.ceil(hint))},
                ),
            )
        error = teams_error(body, len(raw))
        if error:
            return await self.record(
                request,
                "teams",
                body,
                _json(
                    400,
                    {
                        "error": {
                            "code": "InvalidRequestContent",
                            "message": f"{TEAMS_SCHEMA_MISMATCH} Error details: '{error}'",
                        }
                    },
                ),
            )
        return await self.record(request, "teams", body, web.Response(status=202))

    async def discord(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if request.match_info["token"] != DISCORD_TOKEN:
            return await self.record(
                request,
                "discord",
                body,
                _json(401, {"message": "Invalid Webhook Token", "code": 50027}),
            )
        if (hint := self.services._throttled("discord")) is not None:
            return await self.record(
                request,
                "discord",
                body,
                _json(
                    429,
                    {
                        "message": "You are being rate limited.",
                        "retry_after": hint,
                        "global": False,
                    },
                    {"Retry-After": str(math.ceil(hint)), "X-RateLimit-Scope": "user"},
                ),
            )
        if isinstance(body, dict) and not (body.get("content") or body.get("embeds")):
            return await self.record(
                request,
                "discord",
                body,
                _json(400, {"message": "Cannot send an empty message", "code": 50006}),
            )
        errors = discord_errors(body)
        if errors:
            return await self.record(
                request,
                "discord",
                body,
                _json(400, {"message": "Invalid Form Body", "code": 50035, "errors": errors}),
            )
        return await self.record(request, "discord", body, web.Response(status=204))

    async def telegram(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if request.match_info["token"] != TELEGRAM_TOKEN:
            return await self.record(
                request,
                "telegram",
                body,
                _json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"}),
            )
        if (hint := self.services._throttled("telegram")) is not None:
            retry_after = math.ceil(hint)
            return await self.record(
                request,
                "telegram",
                body,
                _json(
                    429,
                    {
                        "ok": False,
                        "error_code": 429,
                        "description": f"Too Many Requests: retry after {retry_after}",
                        "parameters": {"retry_after": retry_after},
                    },
                ),
            )
        if not isinstance(body, dict) or str(body.get("chat_id")) != TELEGRAM_CHAT:
            return await self.record(
                request,
                "telegram",
                body,
                _json(
                    400,
                    {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
                ),
            )
        error, visible = (
            telegram_check(str(body.get("text", "")))
            if body.get("parse_mode") == "HTML"
            else (None, str(body.get("text", "")))
        )
        if error:
            return await self.record(
                request,
                "telegram",
                body,
                _json(400, {"ok": False, "error_code": 400, "description": error}),
            )
        result = {
            "message_id": len(self.services.calls) + 1,
            "date": int(time.time()),
            "chat": {"id": int(TELEGRAM_CHAT), "type": "supergroup"},
            "text": visible,
        }
        return await self.record(
            request, "telegram", body, _json(200, {"ok": True, "result": result})
        )


def build_app(services: Services) -> web.Application:
    h = _Handlers(services)
    app = web.Application()
    app.router.add_post("/v2/enqueue", h.pagerduty)
    app.router.add_post("/v2/alerts", h.opsgenie_create)
    app.router.add_post("/v2/alerts/{identifier}/close", h.opsgenie_close)
    app.router.add_post("/workflows/{id}/triggers/manual/paths/invoke", h.teams)
    app.router.add_post("/api/webhooks/{id}/{token}", h.discord)
    app.router.add_post("/bot{token}/sendMessage", h.telegram)
    return app


async def serve(port: int) -> AsyncIterator[Services]:
    services = Services(url=f"http://127.0.0.1:{port}")
    runner = web.AppRunner(build_app(services), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield services
    finally:
        await runner.cleanup()
