"""APP_API_TOKEN in front of every route of every service (streaming_runtime.tokens): what daprd sends as
``dapr-api-token`` is required everywhere but the probes, before any route runs."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from message_gen.app import create_app as create_generator
from message_gen.settings import GeneratorSettings
from message_proc.app import ProcessorSettings
from message_proc.app import create_app as create_processor
from message_proc.dashboard import PATHS as DASHBOARD_PATHS
from streaming_runtime.tokens import AppTokenMiddleware
from tests.contract.support import RecordingSidecar, serve
from tests.contract.test_joiner_service import make_app

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"


def apps() -> dict[str, FastAPI]:
    joiner, _, _ = make_app(app_api_token=TOKEN)
    return {
        "joiner": joiner,
        "message-proc": create_processor(ProcessorSettings(app_api_token=TOKEN)),
        "message-gen": create_generator(
            GeneratorSettings(
                MESSAGE_EXPR="[1]",
                CLUSTER_STREAM="s",
                STREAM_TOPIC="t",
                MESSAGE_COUNT=1,
                MESSAGE_DELAY="0s",
                app_api_token=TOKEN,
            ),
            publisher=RecordingSidecar(),
        ),
    }


def routes(app: FastAPI) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD" and "{" not in route.path:
                found.append((method, route.path))
    return found


@pytest.mark.parametrize("name", ["joiner", "message-proc", "message-gen"])
async def test_every_route_but_the_probes_answers_401_without_the_token(name):
    app = apps()[name]
    async with serve(app) as client:
        checked = 0
        for method, path in routes(app):
            if name == "message-proc" and path in DASHBOARD_PATHS:
                continue  # open and read-only, as the probes are: tests/contract/test_dashboard.py
            for headers in ({}, {"dapr-api-token": "wrong"}, {"dapr-api-token": TOKEN[:-1]}):
                answer = await client.request(method, path, headers=headers, content=b"[]")
                if path in ("/healthz", "/readyz"):
                    assert answer.status_code != 401, (method, path)
                else:
                    assert answer.status_code == 401, (name, method, path, headers)
                    assert answer.json() == {"error": "missing or wrong dapr-api-token"}
                    checked += 1
        assert checked >= 3 * 4, routes(app)  # /stats, /openapi.json, /docs, /redoc at least


async def test_the_right_token_gets_through():
    async with serve(apps()["message-proc"]) as client:
        answer = await client.post("/billables", json=[{"customer_id": 1}], headers={"dapr-api-token": TOKEN})
        assert answer.status_code == 200, answer.text


async def test_an_empty_token_is_refused_by_the_middleware_itself():
    with pytest.raises(ValueError, match="empty"):
        AppTokenMiddleware(FastAPI(), token="")
