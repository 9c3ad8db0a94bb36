import json
import logging

import pytest

from message_proc.app import ProcessorSettings, create_app
from tests.contract.support import serve

pytestmark = pytest.mark.anyio

ROWS = [{"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1034}]


async def test_logs_the_rows_it_receives(caplog):
    caplog.set_level(logging.INFO, logger="message-proc")
    async with serve(create_app(ProcessorSettings())) as client:
        answer = await client.post("/billables", json=ROWS)
    assert answer.status_code == 200
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Data received: ")]
    assert len(logged) == 1
    assert json.loads(logged[0].removeprefix("Data received: ")) == ROWS


async def test_route_comes_from_proc_service_route(monkeypatch):
    monkeypatch.setenv("PROC_SERVICE_ROUTE", "invoices")
    async with serve(create_app(ProcessorSettings())) as client:
        assert (await client.post("/invoices", json=ROWS)).status_code == 200
        assert (await client.post("/billables", json=ROWS)).status_code == 404


async def test_body_that_is_not_json_gets_a_clear_400(caplog):
    async with serve(create_app(ProcessorSettings())) as client:
        answer = await client.post("/billables", content=b"{not json", headers={"content-type": "application/json"})
        stats = (await client.get("/stats")).json()
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("body is not JSON")
    assert (stats["calls"], stats["rejected"]) == (0, 1)
    assert not [r for r in caplog.records if "Data received" in r.getMessage()]


async def test_oversized_body_is_refused_with_413():
    async with serve(create_app(ProcessorSettings(max_body_bytes=100))) as client:
        answer = await client.post("/billables", json=ROWS * 10)
    assert answer.status_code == 413
    assert "exceeds the limit of 100 bytes" in answer.json()["error"]


async def test_api_token_is_checked_when_configured():
    async with serve(create_app(ProcessorSettings(app_api_token="s3cret"))) as client:
        refused = await client.post("/billables", json=ROWS)
        accepted = await client.post("/billables", json=ROWS, headers={"dapr-api-token": "s3cret"})
    assert refused.status_code == 401
    assert accepted.status_code == 200
