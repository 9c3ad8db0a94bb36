import json
import uuid

import pytest

from joiner.app import JoinerSettings, create_app
from joiner.config import config_from_yaml
from tests.contract.support import ManualClock, RecordingSidecar, serve, wait_for

pytestmark = pytest.mark.anyio

EXAMPLE = """
window: 20s
stream:
  from: [tenants, poweruse]
  to:
    - component: billable-proc/billables
  select: |
    {"customer_id": tenants.customer_id, "tenant_id": tenants.tenant_id, "tenant_kwh_usage": poweruse.kwh_use}
  where: |
    tenants.tenant_id == poweruse.tenant_id
      && poweruse.power_use >= 1.0
"""


def cloud_event(data, topic: str) -> dict:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "test",
        "type": "com.dapr.event.sent",
        "topic": topic,
        "pubsubname": "test-pubsub",
        "datacontenttype": "application/json",
        "data": data,
    }


def make_app(yaml_text: str = EXAMPLE, **settings):
    clock = ManualClock()
    sidecar = RecordingSidecar()
    app = create_app(JoinerSettings(**settings), config=config_from_yaml(yaml_text), sink=sidecar, clock=clock)
    return app, sidecar, clock


async def post(client, route: str, data) -> dict:
    answer = await client.post(route, json=cloud_event(data, route.strip("/")))
    assert answer.status_code == 200
    return answer.json()


async def close_window(app, clock: ManualClock) -> None:
    clock.advance(20)
    app.state.joiner.close_due()


async def test_a_window_of_good_events_is_joined_and_invoked_once():
    app, sidecar, clock = make_app()
    async with serve(app) as client:
        assert await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7}) == {"status": "SUCCESS"}
        assert await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10}) == {"status": "SUCCESS"}
        assert await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 0.5, "kwh_use": 11}) == {"status": "SUCCESS"}
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="invocation")
    [(app_id, method, rows, headers)] = sidecar.invocations
    assert (app_id, method) == ("billable-proc", "billables")
    assert rows == [{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}]
    assert float(headers["window-end"]) - float(headers["window-start"]) == 20


@pytest.mark.parametrize(
    ("route", "body", "reason"),
    [
        ("/poweruse", b"{oops", "not JSON"),
        ("/poweruse", json.dumps(cloud_event([1, 2], "poweruse")).encode(), "array"),
        ("/poweruse", json.dumps(cloud_event({"tenant_id": "t1", "kwh_use": 3}, "poweruse")).encode(), "power_use"),
        ("/poweruse", json.dumps(cloud_event({"tenant_id": "t1", "power_use": "high", "kwh_use": 3}, "poweruse")).encode(), "same data type"),
        ("/tenants", json.dumps(cloud_event({"tenant_id": "t1"}, "tenants")).encode(), "customer_id"),
    ],
)
async def test_malformed_events_are_dropped_not_retried_and_do_not_disturb_the_window(route, body, reason, caplog):
    app, sidecar, clock = make_app()
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        bad = await client.post(route, content=body, headers={"content-type": "application/cloudevents+json"})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        stats = (await client.get("/stats")).json()
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="invocation")
    assert bad.status_code == 200 and bad.json() == {"status": "DROP"}
    assert stats["dropped"] == {route.strip("/"): 1}
    assert any("dropped malformed event" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert sidecar.invocations[0][2] == [{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}]


async def test_dropped_event_is_logged_with_its_cloud_event_id(caplog):
    app, _, _ = make_app()
    event = cloud_event({"tenant_id": "t1"}, "tenants")
    async with serve(app) as client:
        answer = await client.post("/tenants", json=event)
    assert answer.json() == {"status": "DROP"}
    assert any(f"id={event['id']}" in r.getMessage() for r in caplog.records)


async def test_oversized_event_is_dropped():
    app, _, _ = make_app(max_body_bytes=200)
    async with serve(app) as client:
        answer = await post(client, "/tenants", {"tenant_id": "t" * 500, "customer_id": 1})
    assert answer == {"status": "DROP"}


async def test_a_window_without_rows_sends_nothing():
    app, sidecar, clock = make_app()
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t2", "power_use": 1.5, "kwh_use": 10})
        await close_window(app, clock)
        await wait_for(lambda: app.state.joiner.stats.windows_closed == 1, what="window closed")
        stats = (await client.get("/stats")).json()
    assert sidecar.invocations == []
    assert stats["rows_emitted"] == 0


async def test_rows_can_also_be_published_to_a_topic():
    yaml_text = EXAMPLE.replace("- component: billable-proc/billables", "- component: billable-proc/billables\n    - stream: redis-stream/billables")
    app, sidecar, clock = make_app(yaml_text)
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        await close_window(app, clock)
        await wait_for(lambda: sidecar.publications, what="publication")
    assert sidecar.publications == [("redis-stream", "billables", [{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}])]
    assert len(sidecar.invocations) == 1


async def test_failed_delivery_is_retried_until_it_succeeds():
    app, sidecar, clock = make_app()
    sidecar.failures = 2
    async with serve(app) as client:
        app.state.joiner.retry_base_delay = 0.001
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="invocation")
    assert sidecar.attempts == 3
    assert len(sidecar.invocations) == 1


async def test_buffered_events_are_joined_and_sent_when_the_service_stops():
    app, sidecar, _ = make_app()
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
    assert [rows for *_, rows, _ in sidecar.invocations] == [[{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}]]


async def test_raw_payload_without_envelope_is_accepted():
    app, _, _ = make_app()
    async with serve(app) as client:
        answer = await client.post("/tenants", json={"tenant_id": "t1", "customer_id": 7})
    assert answer.json() == {"status": "SUCCESS"}


async def test_api_token_is_required_when_configured():
    app, _, _ = make_app(app_api_token="tok")
    async with serve(app) as client:
        refused = await client.post("/tenants", json={"tenant_id": "t1", "customer_id": 7})
        accepted = await client.post(
            "/tenants", json={"tenant_id": "t1", "customer_id": 7}, headers={"dapr-api-token": "tok"}
        )
    assert refused.status_code == 401
    assert accepted.json() == {"status": "SUCCESS"}
