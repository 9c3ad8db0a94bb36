"""billable-proc's combine step (message_proc.combine): the parts of a window's aggregate that several joiner
replicas deliver are billed once, combined, after PROC_COMBINE_WAIT; a retry of a part is a duplicate, a part
after its window was combined is billed on its own and counted, and a restart combines what it held."""

from __future__ import annotations

import json
import logging

import pytest

from message_proc.app import ProcessorSettings, create_app
from tests.contract.support import RecordingSidecar, serve, wait_for

pytestmark = pytest.mark.anyio

WINDOW = "1700000000000"
PARTIAL = {
    "group_by": ["customer_id"],
    "fields": {"tenant_kwh_usage": "sum", "n": "count", "mean": "avg", "peak": "max"},
}


def part(source: str, rows: list[dict]) -> tuple[dict, dict]:
    body = {"window_start": 1_700_000_000.0, "window_end": 1_700_000_020.0, "window_id": WINDOW}
    body |= {"window_source": source, "partial": PARTIAL, "rows": rows}
    headers = {"window-id": WINDOW, "window-chunk": "1/1", "window-source": source, "window-end": "1700000020.0"}
    return body, headers


PARTS = [
    part("j-0", [{"customer_id": 7, "tenant_kwh_usage": 10, "n": 2, "mean": [10, 2], "peak": [6, None]}]),
    part("j-1", [{"customer_id": 7, "tenant_kwh_usage": 5, "n": 1, "mean": [5, 1], "peak": [5, None]}]),
    part("j-2", [{"customer_id": 8, "tenant_kwh_usage": 1.5, "n": 1, "mean": [1.5, 1], "peak": [1.5, None]}]),
]
COMBINED = [
    {"customer_id": 7, "tenant_kwh_usage": 15, "n": 3, "mean": 5.0, "peak": 6},
    {"customer_id": 8, "tenant_kwh_usage": 1.5, "n": 1, "mean": 1.5, "peak": 1.5},
]


def billed(caplog) -> list[dict]:
    prefix = "Data received: "
    return [json.loads(r.getMessage()[len(prefix) :]) for r in caplog.records if r.getMessage().startswith(prefix)]


async def test_the_parts_of_three_replicas_are_billed_once_combined(caplog):
    caplog.set_level(logging.INFO, logger="message-proc")
    app = create_app(ProcessorSettings(PROC_COMBINE_WAIT="0.2"))
    async with serve(app) as client:
        for body, headers in PARTS:
            answer = await client.post("/billables", json=body, headers=headers)
            assert answer.json() == {"status": "ok", "part": "held"}
        assert billed(caplog) == []  # nothing is billed until the window is combined
        retry = await client.post("/billables", json=PARTS[0][0], headers=PARTS[0][1])
        assert retry.json() == {"status": "ok", "duplicate": True}
        await wait_for(lambda: billed(caplog), timeout=5, what="the combined window billed")
        stats = (await client.get("/stats")).json()
        metrics = (await client.get("/metrics")).text
    [envelope] = billed(caplog)
    assert envelope["rows"] == COMBINED and envelope["window_id"] == WINDOW
    assert envelope["combined_from"] == ["j-0", "j-1", "j-2"] and "partial" not in envelope
    assert stats["parts"] == 3 and stats["windows_combined"] == 1 and stats["duplicates"] == 1
    assert stats["rows"] == 2 and stats["late_parts"] == 0
    assert 'billable_proc_kwh_total{customer_id="7"} 15.0' in metrics  # once, as combined


async def test_a_part_after_its_window_was_combined_is_billed_on_its_own_and_counted(caplog):
    caplog.set_level(logging.INFO, logger="message-proc")
    app = create_app(ProcessorSettings(PROC_COMBINE_WAIT="0.1"))
    async with serve(app) as client:
        for body, headers in PARTS[:2]:
            await client.post("/billables", json=body, headers=headers)
        await wait_for(lambda: billed(caplog), timeout=5, what="the window combined")
        late = await client.post("/billables", json=PARTS[2][0], headers=PARTS[2][1])
        stats = (await client.get("/stats")).json()
    assert late.json() == {"status": "ok", "part": "late"}
    first, second = billed(caplog)
    assert first["rows"] == [{"customer_id": 7, "tenant_kwh_usage": 15, "n": 3, "mean": 5.0, "peak": 6}]
    assert second["rows"] == [COMBINED[1]] and second["late_part"] is True
    assert stats["late_parts"] == 1 and stats["windows_combined"] == 1


async def test_a_restarted_billable_proc_combines_the_parts_the_previous_run_held(caplog):
    caplog.set_level(logging.INFO, logger="message-proc")
    store = RecordingSidecar()
    held = ProcessorSettings(PROC_STATE_STORE="billing-state", PROC_COMBINE_WAIT="3600")
    async with serve(create_app(held, store=store)) as client:
        for body, headers in PARTS:
            await client.post("/billables", json=body, headers=headers)
    assert billed(caplog) == []  # stopped before the wait was over: the parts are in the store
    assert ("billing-state", f"part:{WINDOW}.j-1.1/1") in store.state
    soon = ProcessorSettings(PROC_STATE_STORE="billing-state", PROC_COMBINE_WAIT="0.1")
    async with serve(create_app(soon, store=store)) as client:
        await wait_for(lambda: billed(caplog), timeout=5, what="the window combined after the restart")
        again = await client.post("/billables", json=PARTS[1][0], headers=PARTS[1][1])  # a joiner's retry
    assert [envelope["rows"] for envelope in billed(caplog)] == [COMBINED]
    assert again.json() == {"status": "ok", "duplicate": True}
    assert not [key for _, key in store.state if key.startswith("part:")]  # removed once combined


async def test_a_part_that_does_not_say_how_it_combines_is_refused_naming_why():
    body, headers = part("j-0", [{"customer_id": 7, "latest": 3}])
    body["partial"] = {"group_by": ["customer_id"], "fields": {"latest": "last"}}
    async with serve(create_app(ProcessorSettings())) as client:
        answer = await client.post("/billables", json=body, headers=headers)
    assert answer.status_code == 400 and "'last' does not combine" in answer.json()["error"]


async def test_while_the_store_is_down_a_part_is_answered_503_and_kept_by_its_retry(caplog):
    caplog.set_level(logging.INFO, logger="message-proc")
    store = RecordingSidecar()
    store.state_down = True
    settings = ProcessorSettings(PROC_STATE_STORE="billing-state", PROC_COMBINE_WAIT="0.1")
    async with serve(create_app(settings, store=store)) as client:
        refused = await client.post("/billables", json=PARTS[0][0], headers=PARTS[0][1])
        store.state_down = False
        taken = await client.post("/billables", json=PARTS[0][0], headers=PARTS[0][1])
        await wait_for(lambda: billed(caplog), timeout=5, what="the window combined")
    assert refused.status_code == 503 and taken.json() == {"status": "ok", "part": "held"}
    assert billed(caplog)[0]["rows"] == [{"customer_id": 7, "tenant_kwh_usage": 10, "n": 2, "mean": 5.0, "peak": 6}]
