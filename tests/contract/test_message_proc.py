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


async def test_a_retried_window_call_is_logged_once(caplog):
    caplog.set_level(logging.INFO, logger="message-proc")
    headers = {"window-id": "1700000000000", "window-end": "1700000020.0", "window-chunk": "1/2"}
    async with serve(create_app(ProcessorSettings())) as client:
        first = await client.post("/billables", json=ROWS, headers=headers)
        retry = await client.post("/billables", json=ROWS, headers=headers)
        second_chunk = await client.post("/billables", json=ROWS, headers={**headers, "window-chunk": "2/2"})
        next_window = await client.post("/billables", json=ROWS, headers={**headers, "window-id": "1700000020000"})
        stats = (await client.get("/stats")).json()
    assert [a.status_code for a in (first, retry, second_chunk, next_window)] == [200] * 4
    assert retry.json() == {"status": "ok", "duplicate": True}
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Data received: ")]
    assert len(logged) == 3
    assert (stats["calls"], stats["duplicates"]) == (3, 1)


async def test_calls_without_a_window_id_are_all_logged(caplog):
    caplog.set_level(logging.INFO, logger="message-proc")
    async with serve(create_app(ProcessorSettings())) as client:
        for _ in range(2):
            await client.post("/billables", json=ROWS)
    assert len([r for r in caplog.records if r.getMessage().startswith("Data received: ")]) == 2


async def test_a_call_sent_first_under_a_windows_id_cannot_make_the_real_window_pass_for_a_retry(caplog):
    """A forged call with the id the joiner will use next: the real window, another body, is billed
    all the same and the clash is counted and logged as an error."""
    caplog.set_level(logging.INFO, logger="message-proc")
    headers = {"window-id": "1700000020000", "window-chunk": "1/1"}
    forged = [{"customer_id": 1, "tenant_id": "forged", "tenant_kwh_usage": 1}]
    async with serve(create_app(ProcessorSettings())) as client:
        await client.post("/billables", json=forged, headers=headers)
        real = await client.post("/billables", json=ROWS, headers=headers)
        retry = await client.post("/billables", json=ROWS, headers=headers)
        stats = (await client.get("/stats")).json()
    assert real.json() == {"status": "ok"} and retry.json() == {"status": "ok", "duplicate": True}
    logged = [
        json.loads(r.getMessage().removeprefix("Data received: "))
        for r in caplog.records
        if r.getMessage().startswith("Data received: ")
    ]
    assert logged == [forged, ROWS]
    assert (stats["calls"], stats["duplicates"], stats["conflicts"]) == (2, 1, 1)
    assert any(
        r.levelno == logging.ERROR and "received before with other rows" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("header", ["window-id", "window-chunk", "window-end"])
async def test_a_window_header_longer_than_its_bound_is_refused_and_keeps_no_memory(header):
    async with serve(create_app(ProcessorSettings())) as client:
        answer = await client.post("/billables", json=ROWS, headers={header: "9" * 100_000})
        stats = (await client.get("/stats")).json()
    assert answer.status_code == 400
    assert answer.json()["error"] == f"header {header} is longer than 200 characters"
    assert stats["calls"] == 0 and stats["windows"] == []
    assert len(json.dumps(stats)) < 1000


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'[{"kwh": 1e400}]', "body[0].kwh is inf, not a finite number"),
        (b'[{"tenant": "\\ud800"}]', "body[0].tenant is not Unicode text (a lone surrogate)"),
        (b"[" * 40 + b"]" * 40, "body" + "[0]" * 32 + " is nested deeper than 32 levels"),
        # beyond the parser's recursion limit (which the test run itself may have raised): either reason
        (
            b"[" * 100_000 + b"]" * 100_000,
            ("body is not JSON: nested too deeply to read", "is nested deeper than 32 levels"),
        ),
    ],
)
async def test_rows_that_cannot_be_billed_get_a_400_naming_why(body, reason, caplog):
    async with serve(create_app(ProcessorSettings())) as client:
        answer = await client.post("/billables", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    if isinstance(reason, tuple):
        assert answer.json()["error"].startswith(reason[0]) or answer.json()["error"].endswith(reason[1])
    else:
        assert answer.json() == {"error": reason}
    assert not [r for r in caplog.records if "Data received" in r.getMessage()]


# -- the record of billed calls in a state store (PROC_STATE_STORE) ---------------------------------------


async def test_a_restarted_billable_proc_recognises_a_retry_of_a_call_it_billed_before(caplog):
    import logging

    from tests.contract.support import RecordingSidecar

    store = RecordingSidecar()
    settings = ProcessorSettings(PROC_STATE_STORE="billing-state")
    headers = {"window-id": "1700000000000", "window-chunk": "1/1"}
    with caplog.at_level(logging.INFO):
        async with serve(create_app(settings, store=store)) as client:
            first = await client.post("/billables", json=[{"kwh": 1}], headers=headers)
        async with serve(create_app(settings, store=store)) as client:  # a new process: memory is empty
            again = await client.post("/billables", json=[{"kwh": 1}], headers=headers)
            stats = (await client.get("/stats")).json()
    assert first.json() == {"status": "ok"} and again.json() == {"status": "ok", "duplicate": True}
    assert stats["duplicates"] == 1 and stats["calls"] == 0
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("Data received")] == [
        'Data received: [{"kwh":1}]'
    ]
    assert store.state_metadata[("billing-state", "billed.1700000000000.1/1")] == {"ttlInSeconds": str(7 * 24 * 3600)}


async def test_while_the_record_of_billed_calls_is_unavailable_a_call_is_answered_503_and_not_billed(caplog):
    import logging

    from tests.contract.support import RecordingSidecar

    store = RecordingSidecar()
    store.state_down = True
    headers = {"window-id": "1700000000000", "window-chunk": "1/1"}
    with caplog.at_level(logging.INFO):
        async with serve(create_app(ProcessorSettings(PROC_STATE_STORE="billing-state"), store=store)) as client:
            refused = await client.post("/billables", json=[{"kwh": 1}], headers=headers)
            store.state_down = False
            taken = await client.post("/billables", json=[{"kwh": 1}], headers=headers)  # the joiner's retry
            stats = (await client.get("/stats")).json()
    assert refused.status_code == 503 and taken.json() == {"status": "ok"}
    assert stats["unavailable"] == 1 and stats["calls"] == 1 and stats["duplicates"] == 0
    assert len([r for r in caplog.records if r.getMessage().startswith("Data received")]) == 1


async def test_the_service_freezes_its_start_up_heap_so_a_full_collection_does_not_rescan_it():
    import gc

    gc.unfreeze()
    try:
        async with serve(create_app(ProcessorSettings())):
            assert gc.get_freeze_count() == 0  # not asked: tests and embedders keep their collector as it is
        async with serve(create_app(ProcessorSettings(), freeze_heap=True)) as client:
            frozen = gc.get_freeze_count()
            assert (await client.post("/billables", json=ROWS)).status_code == 200
        assert frozen > 10_000  # the web stack, pydantic and the Dapr SDK (about 75,000 objects)
    finally:
        gc.unfreeze()


async def test_stats_say_when_each_window_call_arrived_and_when_it_was_billed():
    headers = {"window-id": "1700000000000", "window-chunk": "1/1", "window-end": "1700000000.0"}
    async with serve(create_app(ProcessorSettings())) as client:
        await client.post("/billables", json=ROWS, headers=headers)
        (window,) = (await client.get("/stats")).json()["windows"]
    assert window["id"] == "1700000000000" and window["end"] == "1700000000.0"
    assert 0 <= window["received"] - window["arrived"] < 5


def test_the_service_process_asks_for_the_frozen_heap(monkeypatch):
    import message_proc.__main__ as entry

    built = []
    monkeypatch.setattr(entry, "serve", lambda name, settings_cls, build_app: built.append(build_app))
    entry.main()
    assert built[0].func is create_app and built[0].keywords == {"freeze_heap": True}
