"""The HTTP API lives in alertd.http; this name stays for App's import."""

from alertd.http import build_http, start_http

__all__ = ["build_http", "start_http"]
