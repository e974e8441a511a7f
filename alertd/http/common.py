"""What every HTTP handler shares: the App key, JSON answers, the error type, body reading."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from alertd.errors import AlertdError

if TYPE_CHECKING:
    from alertd.app import App

APP_KEY: web.AppKey[App] = web.AppKey("alertd_app")
MAX_BODY_BYTES = 1024 * 1024  # bodies over 1 MiB get 413
BODY_TIMEOUT_S = 30.0  # a client trickling its body holds a connection no longer than this


class ApiError(AlertdError):
    """An answer other than success, worded for the client: status, error, details."""

    def __init__(
        self,
        status: int,
        error: str,
        details: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.details = details or []
        self.headers = dict(headers or {})
        super().__init__(error)


@dataclass(frozen=True)
class Denial:
    """Why a request is refused before its handler runs."""

    status: int
    error: str
    details: tuple[str, ...] = ()


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def reply(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def error_reply(
    status: int,
    error: str,
    details: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return reply({"error": error, "details": details or []}, status=status, headers=headers)


def app_of(request: web.Request) -> App:
    return request.app[APP_KEY]


async def read_json(request: web.Request, *, required: bool) -> Any:
    """The parsed body; an empty body is `{}` where every field is optional."""
    # A declared Content-Length over the limit was refused by size_middleware; a chunked body
    # over client_max_size makes aiohttp raise its own 413, which errors_middleware turns to JSON.
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(
            408, "request timeout", [f"the body did not arrive within {BODY_TIMEOUT_S:g}s"]
        ) from None
    if not raw.strip():
        if required:
            raise ApiError(400, "a JSON body is required")
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed JSON", [str(exc).splitlines()[0][:200]]) from None


async def read_object(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """An optional JSON object body whose keys are all in `allowed`."""
    body = await read_json(request, required=False)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid body", ["the body must be a JSON object"])
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise ApiError(
            400,
            "invalid body",
            [f"unknown field {k!r} (allowed: {', '.join(sorted(allowed))})" for k in unknown],
        )
    return body
