"""Poison at the edges: inputs that daprd passes on unchanged (a publisher's own CloudEvent attributes of
any type, data_base64, numbers and strings JSON allows but nothing can bill) get ``200 DROP`` with the
reason, cost no other event, and leave the sender delivering. One test per kind of poison."""

from __future__ import annotations

import json
import logging

import pytest

from tests.contract.support import serve, wait_for
from tests.contract.test_joiner_service import EXAMPLE, close_window, cloud_event, make_app

pytestmark = pytest.mark.anyio

TENANT = {"tenant_id": "t1", "customer_id": 7}
GOOD_ROW = {"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}


def reading(kwh: object = 10, **fields) -> dict:
    return {"tenant_id": "t1", "power_use": 1.5, "kwh_use": kwh, **fields}


def bulk(*events: object) -> dict:
    return {
        "id": "bulk-1",
        "topic": "poweruse",
        "pubsubname": "rabbit-stream",
        "type": "com.dapr.event.sent.bulk",
        "entries": [
            {"entryId": f"e{n}", "event": event, "contentType": "application/cloudevents+json"}
            for n, event in enumerate(events, 1)
        ],
    }


async def billed_rows(client, app, sidecar, clock) -> list:
    """Close the window; the rows billable-proc got (polls for the call, fails if none comes)."""
    await close_window(app, clock)
    await wait_for(lambda: sidecar.invocations, what="the window's invocation")
    return [row for _, _, rows, _ in sidecar.invocations for row in rows]


def poison_envelopes() -> list[tuple[str, bytes]]:
    """(what, body): CloudEvents that each must be dropped, as raw bytes (some are not what json.dumps writes)."""
    good = cloud_event(reading(), "poweruse")
    cases = [
        ("time is a number", {**good, "time": 12}),
        ("topic is an object", {**good, "topic": {"x": 1}}),
        ("pubsubname is a list", {**good, "pubsubname": ["a"]}),
        ("datacontenttype is a number", {**good, "datacontenttype": 3}),
        ("id is an object", {**good, "id": {"a": 1}}),
        ("data_base64 is a number", {**{k: v for k, v in good.items() if k != "data"}, "data_base64": 12345}),
    ]
    bodies = [(what, json.dumps(event).encode()) for what, event in cases]
    text = json.dumps(good)
    data = json.dumps(reading())
    bodies += [
        ("a join key of 10**400", text.replace('"tenant_id": "t1"', '"tenant_id": 1' + "0" * 400).encode()),
        ("kwh_use 1e400 (read as inf)", text.replace(data, data.replace('"kwh_use": 10', '"kwh_use": 1e400')).encode()),
        ("a lone surrogate in a selected string", text.replace('"kwh_use": 10', '"kwh_use": "\\ud800"').encode()),
        ("a lone surrogate in a key", text.replace('"power_use"', '"\\udc00"').encode()),
        ("nested 10,000 levels", text.replace('"kwh_use": 10', '"kwh_use": ' + "[" * 10_000 + "]" * 10_000).encode()),
        ("nested 40 levels", text.replace('"kwh_use": 10', '"kwh_use": ' + "[" * 40 + "]" * 40).encode()),
    ]
    return bodies


@pytest.mark.parametrize(("what", "body"), poison_envelopes(), ids=[what for what, _ in poison_envelopes()])
async def test_a_poisoned_event_is_dropped_with_its_reason_and_costs_nothing_else(what, body, caplog):
    app, sidecar, clock = make_app()
    async with serve(app) as client:
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        answer = await client.post("/poweruse", content=body, headers={"content-type": "application/json"})
        await client.post("/poweruse", json=cloud_event(reading(), "poweruse"))
        rows = await billed_rows(client, app, sidecar, clock)
        stats = (await client.get("/stats")).json()
    assert (answer.status_code, answer.json()) == (200, {"status": "DROP"}), what
    assert rows == [GOOD_ROW]
    assert stats["dropped"] == {"poweruse": 1} and stats["unexpected_errors"] == 0
    [line] = [r.getMessage() for r in caplog.records if "dropped malformed event" in r.getMessage()]
    assert "\n" not in line and len(line) < 600


@pytest.mark.parametrize(("what", "body"), poison_envelopes(), ids=[what for what, _ in poison_envelopes()])
async def test_a_poisoned_bulk_entry_is_dropped_alone_and_good_entries_beside_it_are_billed_once(what, body):
    app, sidecar, clock = make_app()
    # an entry's event is an object, or JSON text where json.dumps would not write the poison back as it is
    poison = body.decode() if what.startswith(("nested 10,000", "kwh_use 1e400")) else json.loads(body)
    delivery = bulk(
        cloud_event(reading(1), "poweruse"),
        cloud_event(reading(2), "poweruse"),
        poison,
        cloud_event(reading(3), "poweruse"),
    )
    text = json.dumps(delivery)
    async with serve(app) as client:
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        answer = await client.post("/poweruse", content=text.encode(), headers={"content-type": "application/json"})
        rows = await billed_rows(client, app, sidecar, clock)
    assert answer.status_code == 200
    assert [s["status"] for s in answer.json()["statuses"]] == ["SUCCESS", "SUCCESS", "DROP", "SUCCESS"], what
    assert sorted(row["tenant_kwh_usage"] for row in rows) == [1, 2, 3]


async def test_a_bulk_entry_nested_as_deep_as_daprd_passes_is_dropped_alone():
    """daprd reads 10,000 levels (Go's limit) and wraps the event in a bulk delivery a few levels deeper:
    the joiner reads all of it, so the deep entry is refused alone and the others are answered."""
    app, sidecar, clock = make_app()
    deep = "[" * 9_995 + "]" * 9_995
    good = [json.dumps(cloud_event(reading(n), "poweruse")) for n in (1, 2)]
    event = json.dumps(cloud_event(reading(0), "poweruse")).replace('"kwh_use": 0', f'"kwh_use": {deep}')
    body = (
        '{"id": "b", "topic": "poweruse", "entries": ['
        + ", ".join(f'{{"entryId": "e{n}", "event": {text}}}' for n, text in enumerate([good[0], event, good[1]]))
        + "]}"
    )
    async with serve(app) as client:
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        answer = await client.post("/poweruse", content=body.encode(), headers={"content-type": "application/json"})
        rows = await billed_rows(client, app, sidecar, clock)
    assert [s["status"] for s in answer.json()["statuses"]] == ["SUCCESS", "DROP", "SUCCESS"]
    assert sorted(row["tenant_kwh_usage"] for row in rows) == [1, 2]


async def test_a_bulk_of_legitimate_readings_larger_than_one_events_limit_is_taken_whole():
    """100 readings of 11 KB: 1.1 MB, over MAX_BODY_BYTES (1 MiB) but each entry far under it."""
    app, sidecar, clock = make_app()
    events = [cloud_event(reading(n, note="x" * 11_000), "poweruse") for n in range(100)]
    async with serve(app) as client:
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        answer = await client.post("/poweruse", json=bulk(*events))
        rows = await billed_rows(client, app, sidecar, clock)
    assert len(answer.request.content) > 1024 * 1024
    assert {s["status"] for s in answer.json()["statuses"]} == {"SUCCESS"}
    assert sorted(row["tenant_kwh_usage"] for row in rows) == list(range(100))


async def test_in_a_large_bulk_only_the_entry_over_an_events_limit_is_dropped():
    app, sidecar, clock = make_app(max_body_bytes=5_000)
    events = [cloud_event(reading(n, note="x" * 1_000), "poweruse") for n in range(10)]
    events[4] = cloud_event(reading(4, note="x" * 6_000), "poweruse")
    async with serve(app) as client:
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        answer = await client.post("/poweruse", json=bulk(*events))
        rows = await billed_rows(client, app, sidecar, clock)
    assert [s["status"] for s in answer.json()["statuses"]] == ["SUCCESS"] * 4 + ["DROP"] + ["SUCCESS"] * 5
    assert sorted(row["tenant_kwh_usage"] for row in rows) == [0, 1, 2, 3, 5, 6, 7, 8, 9]


async def test_a_single_event_over_the_limit_is_dropped_even_though_bulk_bodies_may_be_larger():
    app, _, _ = make_app(max_body_bytes=2_000)
    async with serve(app) as client:
        answer = await client.post("/poweruse", json=cloud_event(reading(note="x" * 3_000), "poweruse"))
        stats = (await client.get("/stats")).json()
    assert answer.json() == {"status": "DROP"} and stats["dropped"] == {"poweruse": 1}


async def test_an_id_cannot_write_a_log_line_of_its_own(caplog):
    app, _, _ = make_app()
    event = {
        **cloud_event({"tenant_id": 5}, "tenants"),
        "id": "x\n2026/01/01 INFO message-proc: Data received: [forged]",
    }
    async with serve(app) as client:
        answer = await client.post("/tenants", json=event)
    assert answer.json() == {"status": "DROP"}
    assert not any("\n" in r.getMessage() for r in caplog.records)
    assert any("id=x\\n2026/01/01" in r.getMessage() for r in caplog.records)


async def test_an_error_of_our_own_on_some_input_is_dropped_counted_and_logged_once(caplog):
    """A bug met on some input (here: the processor made to fail) DROPs that delivery, is counted, and
    floods no log: one traceback for its kind, however often it comes."""
    app, sidecar, clock = make_app()
    async with serve(app) as client:
        joiner = app.state.joiner
        real_offer = joiner.core.offer

        def failing_offer(index, data, *rest):
            if data.get("tenant_id") == "bug":
                raise KeyError("an engine bug")
            return real_offer(index, data, *rest)

        joiner.core.offer = failing_offer
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        with caplog.at_level(logging.ERROR):
            answers = [
                (await client.post("/poweruse", json=cloud_event(reading(tenant_id="bug"), "poweruse"))).json()
                for _ in range(50)
            ]
        await client.post("/poweruse", json=cloud_event(reading(), "poweruse"))
        rows = await billed_rows(client, app, sidecar, clock)
        stats = (await client.get("/stats")).json()
        metrics = (await client.get("/metrics")).text
    assert answers == [{"status": "DROP"}] * 50
    assert rows == [GOOD_ROW]
    assert stats["unexpected_errors"] == 50 and stats["dropped"] == {"poweruse": 50}
    assert "joiner_unexpected_errors_total 50.0" in metrics
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "KeyError" in tracebacks[0].getMessage()


async def test_a_window_that_cannot_be_sent_stays_with_its_window_and_the_next_goes_out(caplog):
    """Rows JSON cannot hold (put there past the edge's checks, as a bug would) fail their window alone:
    the sender lives, counts it, and delivers the next window."""
    app, sidecar, clock = make_app()
    async with serve(app) as client:
        joiner = app.state.joiner
        joiner.sender.enqueue(joiner.core.windows.window_at(clock()), [{"kwh": float("inf")}])
        await wait_for(lambda: joiner.sender.deliveries_failed == 1, what="the unsendable window counted")
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        await client.post("/poweruse", json=cloud_event(reading(), "poweruse"))
        rows = await billed_rows(client, app, sidecar, clock)
        stats = (await client.get("/stats")).json()
    assert rows == [GOOD_ROW]
    assert stats["deliveries_failed"] == 1 and sidecar.attempts == 1  # no retry of what cannot be sent
    assert any("cannot be sent" in r.getMessage() for r in caplog.records)


async def test_an_error_of_our_own_in_a_bulk_delivery_drops_each_of_its_entries():
    """daprd reads a bare status as one for every entry: the answer names each, and each is counted."""
    app, _, _ = make_app()
    async with serve(app) as client:
        joiner = app.state.joiner

        def failing_offer_many(index, entries, *rest):
            raise RuntimeError("an engine bug")

        joiner.core.offer_many = failing_offer_many
        answer = await client.post("/poweruse", json=bulk(*(cloud_event(reading(n), "poweruse") for n in range(3))))
        stats = (await client.get("/stats")).json()
    assert answer.json() == {"statuses": [{"entryId": f"e{n}", "status": "DROP"} for n in (1, 2, 3)]}
    assert stats["dropped"] == {"poweruse": 3} and stats["unexpected_errors"] == 1


async def test_in_event_time_an_error_of_our_own_on_one_bulk_entry_drops_that_entry_alone():
    """On the exact path (the fast loops send it what they cannot compute; here every reading goes there),
    an error of our own on one entry of a bulk costs that entry alone."""
    yaml_text = EXAMPLE.replace("window: 20s", "window: 20s\neventTime: {field: ts, grace: 1s}")
    app, sidecar, clock = make_app(yaml_text)
    async with serve(app) as client:
        engine = app.state.joiner.core.engine
        engine._generated[1] = None  # no arrival loop for the readings: each entry through accept
        real_accept = engine.accept

        def failing_accept(state, index, data, *rest):
            if data.get("kwh_use") == 2:
                raise KeyError("an engine bug")
            return real_accept(state, index, data, *rest)

        engine.accept = failing_accept
        await client.post("/tenants", json=cloud_event({**TENANT, "ts": clock()}, "tenants"))
        answer = await client.post(
            "/poweruse", json=bulk(*(cloud_event(reading(n, ts=clock()), "poweruse") for n in (1, 2, 3)))
        )
        stats = (await client.get("/stats")).json()
    assert [s["status"] for s in answer.json()["statuses"]] == ["SUCCESS", "DROP", "SUCCESS"]
    assert stats["unexpected_errors"] == 1 and stats["dropped"] == {"poweruse": 1}
    assert sorted(row["tenant_kwh_usage"] for _, _, rows, _ in sidecar.invocations for row in rows) == [1, 3]


async def test_a_redelivered_bulk_is_joined_once_with_dedup_and_stays_on_the_fast_loop():
    """daprd sends a bulk again when it got no answer (a timeout, a restart): same entries, same ids."""
    app, sidecar, clock = make_app(EXAMPLE + "dedup: {ttl: 10m}\n")
    delivery = bulk(*(cloud_event(reading(n), "poweruse") for n in range(5)))
    async with serve(app) as client:
        assert "poweruse: native" in app.state.joiner.core.describe()
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        first = await client.post("/poweruse", json=delivery)
        again = await client.post("/poweruse", json=delivery)
        rows = await billed_rows(client, app, sidecar, clock)
        stats = (await client.get("/stats")).json()
    assert [s["status"] for s in first.json()["statuses"]] == ["SUCCESS"] * 5
    assert [s["status"] for s in again.json()["statuses"]] == ["SUCCESS"] * 5  # taken: nothing to redeliver
    assert sorted(row["tenant_kwh_usage"] for row in rows) == [0, 1, 2, 3, 4]
    assert stats["duplicates"] == {"poweruse": 5} and stats["accepted"]["poweruse"] == 5


# -- row 6: buffers bounded in bytes ---------------------------------------------------------------


async def test_large_readings_close_a_window_early_at_max_window_bytes_and_memory_stays_bounded():
    yaml_text = EXAMPLE.replace("window: 20s", "window: 20s\nmaxWindowBytes: 300Ki")
    app, sidecar, clock = make_app(yaml_text)
    padding = "x" * 50_000
    async with serve(app) as client:
        await client.post("/tenants", json=cloud_event(TENANT, "tenants"))
        for kwh in range(20):  # 50 KB each, 1 MB in all: a window part takes 7 (over 300 KiB) and is sent
            answer = await client.post("/poweruse", json=cloud_event(reading(kwh, note=padding), "poweruse"))
            assert answer.json() == {"status": "SUCCESS"}
        await close_window(app, clock)
        await wait_for(lambda: sum(len(rows) for _, _, rows, _ in sidecar.invocations) >= 1, what="a window")
        stats = (await client.get("/stats")).json()
    assert stats["windows_split"] == 2 and stats["buffered"] == 0
    # readings of a later part do not meet the tenant of part 0: what a split costs, counted and logged
    assert [row["tenant_kwh_usage"] for _, _, rows, _ in sidecar.invocations for row in rows] == list(range(7))


# -- row 7: event time has a sanity bound ----------------------------------------------------------


async def test_an_event_far_in_the_future_is_dropped_and_later_events_are_not_late(caplog):
    yaml_text = EXAMPLE.replace("window: 20s", "window: 20s\neventTime: {field: ts, grace: 1s}")
    app, sidecar, clock = make_app(yaml_text)
    now = clock()
    async with serve(app) as client:
        await client.post("/tenants", json=cloud_event({**TENANT, "ts": now}, "tenants"))
        far = await client.post("/poweruse", json=cloud_event(reading(99, ts=now + 86_400 * 365), "poweruse"))
        filtered = await client.post(
            "/poweruse", json=cloud_event(reading(98, ts=now + 600, power_use=0.1), "poweruse")
        )
        good = await client.post("/poweruse", json=cloud_event(reading(10, ts=now + 1), "poweruse"))
        stats = (await client.get("/stats")).json()
    assert far.json() == {"status": "DROP"} and filtered.json() == good.json() == {"status": "SUCCESS"}
    assert stats["future"] == {"poweruse": 1} and stats["late"] == {} and stats["dropped"] == {"poweruse": 1}
    assert [row for _, _, rows, _ in sidecar.invocations for row in rows] == [GOOD_ROW]  # at shutdown
    assert any("ahead of the clock (eventTime.maxFutureSkew is 900s)" in r.getMessage() for r in caplog.records)


# -- the joiner's own dead letters (a bulk Subscription cannot have deadLetterTopic with daprd 1.18) ------


async def test_dropped_events_of_a_stream_with_dead_letters_are_published_there_with_the_reason():
    app, sidecar, clock = make_app(EXAMPLE + "deadLetter: {poweruse: rabbit-stream/poweruse-deadletter}\n")
    poison = cloud_event(reading(), "poweruse")
    poison["time"] = 12
    async with serve(app) as client:
        await client.post("/tenants", content=b"not json")  # tenants have no deadLetter: daprd's copy only
        single = await client.post("/poweruse", content=b'{"kwh_use": \xff}')
        text = json.dumps(bulk(cloud_event(reading(1), "poweruse"), poison))
        in_bulk = await client.post("/poweruse", content=text.replace('"kwh_use": 1', '"kwh_use": 1e400').encode())
        await wait_for(lambda: len(sidecar.publications) == 3, what="three dead letters")
        stats = (await client.get("/stats")).json()
    assert single.json() == {"status": "DROP"}
    assert [s["status"] for s in in_bulk.json()["statuses"]] == ["DROP", "DROP"]
    assert {(pubsub, topic) for pubsub, topic, _ in sidecar.publications} == {("rabbit-stream", "poweruse-deadletter")}
    records = [record for _, _, record in sidecar.publications]
    assert [r["stream"] for r in records] == ["poweruse"] * 3
    assert records[0]["event"] == '{"kwh_use": \\xff}' and "not JSON" in records[0]["reason"]
    assert '"kwh_use":Infinity' in records[1]["event"] and "inf, not a finite number" in records[1]["reason"]
    assert (
        records[2]["id"] == "e2" and f"event {poison['id']}: CloudEvent attribute time is int" in records[2]["reason"]
    )
    assert json.loads(records[2]["event"])["time"] == 12  # the event as delivered, to inspect or re-publish
    assert stats["dead_lettered"] == 3 and stats["dead_letters_lost"] == 0
    assert stats["dropped"] == {"tenants": 1, "poweruse": 3}
