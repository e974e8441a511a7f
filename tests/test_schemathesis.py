"""A property-based run of the API against its own OpenAPI document: no input gets a 5xx,
and no answer breaks the document's schema (/api/v1 and the Alertmanager API v2)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import RedisServer, free_port  # noqa: E402

RULES = '[[rules]]\nname = "Over"\nmetric = "load"\ngroup_by = ["series"]\ncritical = "> 100"\n'


@pytest.fixture(scope="module")
def live_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real daemon with its HTTP API, in a thread of its own (schemathesis calls it over HTTP)."""
    from alertd.app import App
    from alertd.settings import load_config

    root: Path = tmp_path_factory.mktemp("schemathesis")
    (root / "rules").mkdir()
    (root / "channels").mkdir()
    (root / "rules" / "r.toml").write_text(RULES)
    port = free_port()
    (root / "alertd.toml").write_text(
        f'[redis]\nurl = "{redis_server.url}"\nkey_prefix = "st:"\nstream = "st:events"\n'
        'dead_letter_stream = "st:dead"\n'
        f'[daemon]\nblock = "100ms"\n[http]\nlisten = "127.0.0.1:{port}"\n'
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        app = App(load_config(root / "alertd.toml", env={}))
        await app.start(http=True)
        return app

    app = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(app.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class TestSchemathesis:
    """Whatever a client sends, the API answers without a 5xx, as its document says."""

    # Raised from inside schemathesis's own strategies, not from alertd.
    @pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
    def test_no_server_errors(self, live_api: str) -> None:
        schema = schemathesis.openapi.from_url(f"{live_api}/api/v1/openapi.json")
        checked = 0
        calls: list[int] = []
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def no_5xx(case: Any) -> None:
                response = case.call()
                calls.append(response.status_code)
                assert response.status_code < 500, (
                    case.method,
                    case.formatted_path,
                    response.status_code,
                    response.text[:300],
                )
                case.validate_response(
                    response,
                    checks=[
                        not_a_server_error,
                        status_code_conformance,
                        response_schema_conformance,
                    ],
                )

            no_5xx()
            checked += 1
        assert checked >= 19  # every documented operation was exercised, v1 and v2
        assert len(calls) >= 200  # a few hundred generated requests
