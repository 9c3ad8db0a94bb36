import asyncio
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


def app_on(sidecar: RecordingSidecar, clock: ManualClock, yaml_text: str, **settings):
    """The joiner app on a given sidecar and clock (two runs can share them)."""
    return create_app(JoinerSettings(**settings), config=config_from_yaml(yaml_text), sink=sidecar, clock=clock)


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
    clock, sidecar = ManualClock(), RecordingSidecar()
    return app_on(sidecar, clock, yaml_text, **settings), sidecar, clock


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
        assert await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10}) == {
            "status": "SUCCESS"
        }
        assert await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 0.5, "kwh_use": 11}) == {
            "status": "SUCCESS"
        }
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
        (
            "/poweruse",
            json.dumps(cloud_event({"tenant_id": "t1", "power_use": "high", "kwh_use": 3}, "poweruse")).encode(),
            "same data type",
        ),
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
    yaml_text = EXAMPLE.replace(
        "- component: billable-proc/billables",
        "- component: billable-proc/billables\n    - stream: redis-stream/billables",
    )
    app, sidecar, clock = make_app(yaml_text)
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        await close_window(app, clock)
        await wait_for(lambda: sidecar.publications, what="publication")
    assert sidecar.publications == [
        ("redis-stream", "billables", [{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}])
    ]
    assert len(sidecar.invocations) == 1
    [extensions] = sidecar.extensions
    assert extensions["windowid"] == sidecar.invocations[0][3]["window-id"]
    assert float(extensions["windowend"]) - float(extensions["windowstart"]) == 20


async def test_failed_delivery_is_retried_until_it_succeeds():
    app, sidecar, clock = make_app()
    sidecar.failures = 2
    async with serve(app) as client:
        app.state.joiner.sender.retry_base_delay = 0.001
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
    assert [rows for *_, rows, _ in sidecar.invocations] == [
        [{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}]
    ]


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


async def test_bulk_delivery_gets_a_status_per_entry():
    app, sidecar, clock = make_app()
    body = {
        "id": "bulk-1",
        "topic": "poweruse",
        "pubsubname": "rabbit-stream",
        "type": "com.dapr.event.sent.bulk",
        "entries": [
            {
                "entryId": "e1",
                "event": cloud_event({"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10}, "poweruse"),
                "contentType": "application/cloudevents+json",
            },
            {
                "entryId": "e2",
                "event": cloud_event({"tenant_id": "t1", "power_use": "high", "kwh_use": 11}, "poweruse"),
                "contentType": "application/cloudevents+json",
            },
            {"entryId": "e3", "event": "{not json", "contentType": "application/json"},
            {
                "entryId": "e4",
                "event": cloud_event({"tenant_id": "t1", "power_use": 0.2, "kwh_use": 12}, "poweruse"),
                "contentType": "application/cloudevents+json",
            },
        ],
    }
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        answer = await client.post("/poweruse", json=body)
        stats = (await client.get("/stats")).json()
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="invocation")
    assert answer.status_code == 200
    assert answer.json() == {
        "statuses": [
            {"entryId": "e1", "status": "SUCCESS"},
            {"entryId": "e2", "status": "DROP"},
            {"entryId": "e3", "status": "DROP"},
            {"entryId": "e4", "status": "SUCCESS"},
        ]
    }
    assert stats["accepted"] == {"tenants": 1, "poweruse": 1}
    assert stats["filtered"] == {"poweruse": 1}
    assert stats["dropped"] == {"poweruse": 2}
    assert sidecar.invocations[0][2] == [{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}]


async def test_a_full_window_is_closed_early_and_nothing_is_lost(caplog):
    yaml_text = EXAMPLE.replace("window: 20s", "window: 20s\nmaxWindowEvents: 2")
    app, sidecar, clock = make_app(yaml_text)
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})  # full: closes part 0
        await post(client, "/tenants", {"tenant_id": "t2", "customer_id": 8})
        await post(client, "/poweruse", {"tenant_id": "t2", "power_use": 1.5, "kwh_use": 20})  # closes part 1
        await wait_for(lambda: len(sidecar.invocations) == 2, what="two invocations")
        stats = (await client.get("/stats")).json()
    assert [call[2] for call in sidecar.invocations] == [
        [{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}],
        [{"customer_id": 8, "tenant_id": "t2", "tenant_kwh_usage": 20}],
    ]
    assert [call[3]["window-id"].count("-") for call in sidecar.invocations] == [0, 1]
    assert stats["windows_split"] == 2
    assert any("maxWindowEvents" in r.getMessage() for r in caplog.records)


async def test_envelope_output_carries_the_window():
    yaml_text = EXAMPLE.replace("window: 20s", "window: 20s\noutput: {envelope: true}")
    app, sidecar, clock = make_app(yaml_text)
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="invocation")
    body = sidecar.invocations[0][2]
    assert body["rows"] == [{"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}]
    assert body["window_end"] - body["window_start"] == 20
    assert body["window_id"] == str(int(body["window_start"] * 1000))


async def test_late_events_are_published_to_the_late_topic():
    yaml_text = EXAMPLE.replace(
        "window: 20s", "window: 20s\neventTime: {field: ts, grace: 1s}\nlate: {stream: redis-stream/late-readings}"
    )
    app, sidecar, _ = make_app(yaml_text)
    async with serve(app) as client:
        await post(client, "/tenants", {"ts": 1_700_000_001, "tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"ts": 1_700_000_030, "tenant_id": "t1", "power_use": 1.5, "kwh_use": 1})
        answer = await post(
            client, "/poweruse", {"ts": 1_700_000_002, "tenant_id": "t1", "power_use": 1.5, "kwh_use": 2}
        )
        await wait_for(lambda: sidecar.publications, what="late publication")
        stats = (await client.get("/stats")).json()
    assert answer == {"status": "SUCCESS"}
    [(pubsub, topic, record)] = sidecar.publications
    assert (pubsub, topic) == ("redis-stream", "late-readings")
    assert record["data"]["kwh_use"] == 2 and record["window_end"] == 1_700_000_020
    assert stats["late"] == {"poweruse": 1} and stats["late_published"] == 1


async def test_a_streamed_body_is_read_no_further_than_the_limit():
    # a delivery may be a bulk one: the route reads up to the bulk limit, and no further
    app, _, _ = make_app(max_body_bytes=1000, max_bulk_body_bytes=3000)
    chunks_sent = []

    async def endless_chunks():
        for _ in range(1000):  # 1 MB if it were all read
            chunks_sent.append(1)
            yield b" " * 1000

    async with serve(app) as client:
        answer = await client.post("/tenants", content=endless_chunks(), headers={"content-type": "application/json"})
        stats = (await client.get("/stats")).json()
    assert answer.json() == {"status": "DROP"}
    assert stats["dropped"] == {"tenants": 1}
    assert len(chunks_sent) < 10  # it stopped reading at the limit


# -- handover of open windows through a state store (state.store) ------------------------------------

WITH_STATE = EXAMPLE + "state: {store: joiner-state}\n"


def handover_keys(sidecar: RecordingSidecar) -> dict:
    """The state store's keys but the run record (joiner.runrecord), which every run with a store writes."""
    return {key: value for key, value in sidecar.state.items() if key[1] != "run"}


HANDOVER = ("joiner-state", "open-windows")


def save_handover(sidecar: RecordingSidecar, snapshot: dict) -> None:
    """What a stopping joiner leaves in the store: the snapshot's JSON in one part, then the manifest."""
    sidecar.state[("joiner-state", "open-windows.0")] = json.dumps(snapshot).encode()
    sidecar.state[HANDOVER] = json.dumps({"parts": 1}).encode()


async def next_run_takes_over_and_closes(sidecar: RecordingSidecar, clock: ManualClock, yaml_text: str) -> dict:
    """A next run on the same store: it takes the handover, gets one more reading (kwh 11), closes the
    window; its /stats."""
    second = app_on(sidecar, clock, yaml_text)
    async with serve(second) as client:
        await wait_for(lambda: HANDOVER not in sidecar.state, what="the handover taken and removed")
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.2, "kwh_use": 11})
        clock.advance(20)
        second.state.joiner.close_due()
        await wait_for(lambda: sidecar.invocations, what="invocation")
        return (await client.get("/stats")).json()


async def test_a_restart_hands_the_open_window_over_to_the_next_run():
    sidecar, clock = RecordingSidecar(), ManualClock(1_000_001.0)
    first = app_on(sidecar, clock, WITH_STATE)
    async with serve(first) as client:
        await wait_for(lambda: first.state.joiner.handover.may_hand_over, what="the start's take-over done")
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
    assert sidecar.invocations == []  # not closed early: handed over
    assert HANDOVER in sidecar.state

    clock.advance(3)  # the next run starts within the same window
    stats = await next_run_takes_over_and_closes(sidecar, clock, WITH_STATE)
    rows = sidecar.invocations[0][2]
    assert sorted(row["tenant_kwh_usage"] for row in rows) == [10, 11]  # the tenant of the first run joins both
    assert stats["restored"] == 2 and len(sidecar.invocations) == 1


async def test_without_a_state_store_a_stop_closes_the_open_window():
    sidecar, clock = RecordingSidecar(), ManualClock()
    async with serve(app_on(sidecar, clock, EXAMPLE)) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
    assert [row["tenant_kwh_usage"] for row in sidecar.invocations[0][2]] == [10]
    assert sidecar.state == {}


async def test_a_failed_save_closes_the_open_window_instead(caplog):
    sidecar, clock = RecordingSidecar(), ManualClock()
    app = app_on(sidecar, clock, WITH_STATE)
    async with serve(app) as client:
        await wait_for(lambda: app.state.joiner.handover.may_hand_over, what="the start's take-over done")
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        sidecar.state_down = True
    assert [row["tenant_kwh_usage"] for row in sidecar.invocations[0][2]] == [10]  # delivered, not lost
    assert "open windows not handed over, closing them now: state store unavailable (test)" in caplog.text


async def test_windows_of_a_run_not_taken_over_are_not_overwritten(caplog):
    sidecar, clock = RecordingSidecar(), ManualClock()
    save_handover(
        sidecar,
        {"version": 1, "join": "window", "streams": ["tenants", "poweruse"], "window_seconds": 20, "windows": []},
    )
    previous = handover_keys(sidecar)
    sidecar.state_down = True  # the previous run's windows cannot be read
    async with serve(app_on(sidecar, clock, WITH_STATE)) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        sidecar.state_down = False
    assert handover_keys(sidecar) == previous  # left for the next start
    assert [row["tenant_kwh_usage"] for row in sidecar.invocations[0][2]] == [10]  # this run's closed instead
    assert "the previous run's windows were not taken over; closing these now" in caplog.text


async def test_windows_of_another_joiner_are_set_aside_and_this_joiner_hands_over_its_own(caplog):
    sidecar, clock = RecordingSidecar(), ManualClock()
    foreign = {"version": 1, "join": "window", "streams": ["a", "b"], "window_seconds": 20, "windows": []}
    save_handover(sidecar, foreign)
    app = app_on(sidecar, clock, WITH_STATE)
    async with serve(app) as client:
        await wait_for(lambda: app.state.joiner.handover.may_hand_over, what="the start's take-over done")
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        stats = (await client.get("/stats")).json()
    [aside] = [key for _, key in sidecar.state if key.startswith("open-windows.set-aside.") and key.count(".") == 2]
    assert json.loads(sidecar.state[("joiner-state", f"{aside}.0")]) == foreign  # kept, for whoever can use it
    assert f"not taken over: set aside at {aside}" in caplog.text and "it joins ['a', 'b']" in caplog.text
    assert stats["handovers_set_aside"] == 1
    # its own stop handed over again (left in place, the foreign one would have made it close its window)
    mine = json.loads(sidecar.state[("joiner-state", "open-windows.0")])
    assert mine["streams"] == ["tenants", "poweruse"] and sidecar.invocations == []


@pytest.mark.parametrize(("before", "after"), [("window", "table"), ("table", "window")])
async def test_a_changed_join_carries_the_open_windows_over_into_the_new_one(before, after):
    """A rollout that changes the join (here its mode) must neither strand the open windows nor bill twice."""
    sidecar, clock = RecordingSidecar(), ManualClock(1_000_001.0)
    first = app_on(sidecar, clock, WITH_STATE + f"join: {before}\n")
    async with serve(first) as client:
        await wait_for(lambda: first.state.joiner.handover.may_hand_over, what="the start's take-over done")
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
    assert sidecar.invocations == [] and HANDOVER in sidecar.state

    clock.advance(3)
    stats = await next_run_takes_over_and_closes(sidecar, clock, WITH_STATE + f"join: {after}\n")
    rows = [row["tenant_kwh_usage"] for _, _, window, _ in sidecar.invocations for row in window]
    assert sorted(rows) == [10, 11]
    assert stats["restored"] == 2 and stats["handovers_set_aside"] == 0


class SlowStateSidecar(RecordingSidecar):
    """Its state store answers only once ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def get_state(self, store: str, key: str):
        await self.answer.wait()
        return await super().get_state(store, key)


async def test_windows_wait_to_close_until_the_previous_runs_are_back():
    sidecar, clock = SlowStateSidecar(), ManualClock(1_000_001.0)
    previous_run = app_on(RecordingSidecar(), clock, WITH_STATE)
    async with serve(previous_run):
        previous_run.state.joiner.core.offer(0, {"tenant_id": "t1", "customer_id": 7})
        save_handover(sidecar, previous_run.state.joiner.core.snapshot())

    app = app_on(sidecar, clock, WITH_STATE)
    async with serve(app) as client:
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        clock.advance(25)  # the window's end has passed while the state store has not answered yet
        for _ in range(100):
            await asyncio.sleep(0)
        assert app.state.joiner.core.windows.open_count == 1 and sidecar.invocations == []
        sidecar.answer.set()
        await wait_for(lambda: sidecar.invocations, what="the window closed after the take-over")
    assert [(row["customer_id"], row["tenant_kwh_usage"]) for row in sidecar.invocations[0][2]] == [(7, 10)]


async def test_metrics_expose_the_counters_for_prometheus():
    from prometheus_client.parser import text_string_to_metric_families

    app, sidecar, clock = make_app()
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 0.5, "kwh_use": 11})
        await post(client, "/poweruse", "not an object")
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="invocation")
        answer = await client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    assert samples[("joiner_accepted_total", (("stream", "tenants"),))] == 1
    assert samples[("joiner_accepted_total", (("stream", "poweruse"),))] == 1
    assert samples[("joiner_filtered_total", (("stream", "poweruse"),))] == 1
    assert samples[("joiner_dropped_total", (("stream", "poweruse"),))] == 1
    assert samples[("joiner_windows_closed_total", ())] == 1
    assert samples[("joiner_rows_emitted_total", ())] == 1
    assert samples[("joiner_buffered", ())] == 0
    plan = next(labels for (name, labels) in samples if name == "joiner_plan_info")
    assert "arrival loop: tenants: native, poweruse: native" in dict(plan)["plan"]


async def test_a_large_window_goes_in_several_calls_that_name_their_chunk():
    app, sidecar, clock = make_app()
    async with serve(app) as client:
        app.state.joiner.sender.rows_per_call = 2  # daprd's body limit, scaled down
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        for kwh in range(5):
            await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": kwh})
        await close_window(app, clock)
        await wait_for(lambda: len(sidecar.invocations) == 3, what="three calls")
    assert [len(rows) for _, _, rows, _ in sidecar.invocations] == [2, 2, 1]
    assert [headers["window-chunk"] for *_, headers in sidecar.invocations] == ["1/3", "2/3", "3/3"]
    assert len({headers["window-id"] for *_, headers in sidecar.invocations}) == 1


async def test_a_large_handover_goes_in_parts_under_the_sidecars_request_limit():
    sidecar, clock = RecordingSidecar(), ManualClock(1_000_001.0)
    first = app_on(sidecar, clock, WITH_STATE)
    async with serve(first) as client:
        await wait_for(lambda: first.state.joiner.handover.may_hand_over, what="the start's take-over done")
        first.state.joiner.handover.part_bytes = 200  # daprd's 4 MiB, scaled down
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        for kwh in range(10):
            await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": kwh, "note": "é" * 7})
    manifest = json.loads(sidecar.state[HANDOVER])
    parts = [sidecar.state[("joiner-state", f"open-windows.{n}")] for n in range(manifest["parts"])]
    assert manifest["parts"] > 3 and all(len(part) <= 200 for part in parts)
    assert sum(map(len, parts)) == manifest["bytes"]

    second = app_on(sidecar, clock, WITH_STATE)
    async with serve(second):
        await wait_for(lambda: handover_keys(sidecar) == {}, what="the handover taken and every part removed")
        assert second.state.joiner.report.as_dict()["restored"] == 11


# -- the run record: a crash is told apart from a clean start (joiner.runrecord) ----------------------


async def test_a_start_after_a_run_that_was_killed_says_what_was_lost(caplog):
    import logging

    sidecar, clock = RecordingSidecar(), ManualClock()
    killed = {
        "clean": False,
        "started": 1_700_000_000,
        "beat": 1_700_000_050,
        "holding": {"events": 42, "windows": 2, "undelivered": 1, "rows": 7},
    }
    sidecar.state[("joiner-state", "run")] = json.dumps(killed).encode()
    app = app_on(sidecar, clock, WITH_STATE)
    with caplog.at_level(logging.ERROR):
        async with serve(app) as client:
            await wait_for(lambda: app.state.joiner.taken_over.is_set(), what="the start done")
            stats = (await client.get("/stats")).json()
            running = json.loads(sidecar.state[("joiner-state", "run")])
    assert stats["crashes_detected"] == 1 and stats["events_lost_in_crash"] == 42
    [line] = [r.getMessage() for r in caplog.records if "ended without stopping" in r.getMessage()]
    assert "LOST: 42 buffered events in 2 open window(s), 1 undelivered window(s) of 7 rows" in line
    assert running["clean"] is False  # this run is running
    assert json.loads(sidecar.state[("joiner-state", "run")])["clean"] is True  # and it stopped cleanly


async def test_a_start_after_a_clean_stop_reports_no_crash(caplog):
    sidecar, clock = RecordingSidecar(), ManualClock()
    async with serve(app_on(sidecar, clock, WITH_STATE)):
        pass
    app = app_on(sidecar, clock, WITH_STATE)
    async with serve(app) as client:
        await wait_for(lambda: app.state.joiner.taken_over.is_set(), what="the start done")
        stats = (await client.get("/stats")).json()
    assert stats["crashes_detected"] == 0
    assert not [r for r in caplog.records if "ended without stopping" in r.getMessage()]
