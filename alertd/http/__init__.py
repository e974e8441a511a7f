"""The HTTP API: probes, metrics and /api/v1, on aiohttp."""

from alertd.http.server import build_http, start_http

__all__ = ["build_http", "start_http"]
