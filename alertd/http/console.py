"""The web console: `GET /` and its static assets, packaged under alertd/console/.

The page is a static shell; every piece of data it shows comes from the same
/api/v1 endpoints the CLI uses (and /health), fetched by its script with the
operator's token, so the console has no data path of its own and no way around
the API's auth rules. The assets are read once at import from the package
(importlib.resources), so nothing is fetched from elsewhere and no build step
is needed.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

_ASSETS: Final = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

# Only our own files may run or load: data the page shows can never become script,
# and no other site may frame the page to trick a click on "Silence" or "Replay".
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("alertd.console").joinpath(name).read_bytes()


_INDEX: Final = _read("index.html")
_FILES: Final = {name: (_read(name), ctype) for name, ctype in _ASSETS.items()}
ASSET_NAMES: Final = tuple(_ASSETS)


async def index(_: web.Request) -> web.Response:
    return web.Response(body=_INDEX, content_type="text/html", charset="utf-8", headers=_HEADERS)


async def asset(request: web.Request) -> web.Response:
    found = _FILES.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, ctype = found
    charset = None if ctype.startswith("image/") else "utf-8"
    return web.Response(body=body, content_type=ctype, charset=charset, headers=_HEADERS)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", index)
    router.add_get("/console/{name}", asset)
