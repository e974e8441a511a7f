"""The OpenAPI document describes the server that serves it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from alertd.app import App
from alertd.http import build_http
from alertd.http.openapi import openapi_document
from alertd.settings import load_config

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every route the aiohttp router serves (HEAD aside)."""
    path = tmp_path / "alertd.toml"
    path.write_text('[paths]\nrules = []\nchannels = []\n[redis]\nurl = "redis://127.0.0.1:9/0"\n')
    http = build_http(App(load_config(path, env={})))
    out = set()
    for route in http.router.routes():
        info = route.resource.get_info() if route.resource else {}
        template = info.get("path") or info.get("formatter")
        if route.method in HTTP_METHODS and template:
            out.add((route.method, template))
    return out


class TestOpenApi:
    """Client generators and readers get a valid document matching the routes."""

    def test_validates(self) -> None:
        if importlib.util.find_spec("openapi_spec_validator") is None:
            pytest.skip("openapi-spec-validator is not installed")
        from openapi_spec_validator import validate

        validate(openapi_document())

    def test_every_route_is_documented(self, routes: set[tuple[str, str]]) -> None:
        paths = openapi_document()["paths"]
        documented = {(m.upper(), p) for p, ops in paths.items() for m in ops}
        assert set() == routes - documented
        assert set() == documented - routes

    def test_every_operation_documents_its_answers(self) -> None:
        doc = openapi_document()
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                codes = set(op["responses"])
                assert any(re.fullmatch(r"2\d\d", c) for c in codes), (method, path)
                if path.startswith("/api/v1/") and path != "/api/v1/openapi.json":
                    assert "401" in codes, (method, path)
                    if method != "get":
                        assert "403" in codes, (method, path)
                if path.startswith("/health") or path == "/metrics":
                    assert [] == op["security"]

    def test_bearer_scheme(self) -> None:
        doc = openapi_document()
        assert {"type": "http", "scheme": "bearer"} == doc["components"]["securitySchemes"][
            "bearerAuth"
        ]
        assert [{"bearerAuth": []}] == doc["security"]
        assert {"error", "details"} == set(doc["components"]["schemas"]["Error"]["required"])
