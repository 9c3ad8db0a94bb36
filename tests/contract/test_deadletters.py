"""A window that a target does not take after its retries: parked (the dead-letter place of windows),
shown by /deadletters and /readyz, re-sent on demand and by the retry loop, handed over to the next run
(state.store) or counted as lost at exit. Nothing is billed twice: a re-send carries the same window id."""

from __future__ import annotations

import asyncio
import logging

import pytest

from joiner.sender import DELIVERY_ATTEMPTS
from tests.contract.support import ManualClock, RecordingSidecar, serve, wait_for
from tests.contract.test_joiner_service import EXAMPLE, WITH_STATE, app_on, close_window, make_app, post

pytestmark = pytest.mark.anyio

ROW = {"customer_id": 7, "tenant_id": "t1", "tenant_kwh_usage": 10}


async def one_window(client, app, clock) -> None:
    await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
    await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
    await close_window(app, clock)


def billed(sidecar) -> list:
    return [row for _, _, rows, _ in sidecar.invocations for row in rows]


async def test_an_undeliverable_window_is_parked_shown_and_re_sent_once_the_target_is_back(caplog):
    app, sidecar, clock = make_app()
    sidecar.failures = DELIVERY_ATTEMPTS  # every attempt of the first delivery fails
    async with serve(app) as client:
        app.state.joiner.sender.retry_base_delay = 0.001
        assert (await client.get("/readyz")).status_code == 200
        await one_window(client, app, clock)
        await wait_for(lambda: app.state.joiner.sender.parked, what="the window parked")
        listed = (await client.get("/deadletters")).json()
        unready = await client.get("/readyz")
        resent = (await client.post("/deadletters/resend")).json()
        ready = await client.get("/readyz")
        again = (await client.post("/deadletters/resend")).json()
        stats = (await client.get("/stats")).json()
    [parked] = listed["windows"]
    assert parked["target"] == "billable-proc/billables" and parked["rows"] == 1
    assert parked["reason"].startswith(f"not delivered after {DELIVERY_ATTEMPTS} attempts")
    assert unready.status_code == 503 and unready.json()["status"] == "unready"
    assert any("1 window(s) parked undelivered (1 rows)" in problem for problem in unready.json()["problems"])
    assert resent == {"resent": 1, "still_parked": 0} and again == {"resent": 0, "still_parked": 0}
    assert ready.status_code == 200
    assert billed(sidecar) == [ROW]
    assert stats["deliveries_failed"] == 1 and stats["windows_resent"] == 1 and stats["windows_parked"] == 0
    assert stats["windows_lost"] == 0 and stats["rows_emitted"] == 1
    assert any(
        f"window {parked['window_id']}: 1 rows for billable-proc/billables parked" in r.getMessage()
        for r in caplog.records
    )


async def test_the_retry_loop_re_sends_parked_windows_on_its_own():
    app, sidecar, clock = make_app()
    sidecar.failures = DELIVERY_ATTEMPTS
    async with serve(app) as client:
        sender = app.state.joiner.sender
        sender.retry_base_delay = 0.001
        await one_window(client, app, clock)
        await wait_for(lambda: sender.parked, what="the window parked")
        loop = asyncio.create_task(sender.run_parked_retries(interval=0.01))
        try:
            await wait_for(lambda: not sender.parked, what="the parked window re-sent")
        finally:
            loop.cancel()
    assert billed(sidecar) == [ROW] and sender.windows_resent == 1


async def test_a_stop_without_a_state_store_counts_and_logs_what_was_never_delivered(caplog):
    app, sidecar, clock = make_app()
    sidecar.failures = 10 * DELIVERY_ATTEMPTS  # the target never comes back
    async with serve(app) as client:
        sender = app.state.joiner.sender
        sender.retry_base_delay = 0.001
        await one_window(client, app, clock)
        await wait_for(lambda: sender.parked, what="the window parked")
    assert sender.windows_lost == 1 and billed(sidecar) == []
    assert any(
        "stopping with 1 undelivered window(s) (1 rows) and no state.store to hand them over: LOST" in r.getMessage()
        for r in caplog.records
    )


async def test_parked_windows_are_handed_over_to_the_next_run_and_delivered_there():
    clock, sidecar = ManualClock(), RecordingSidecar()
    sidecar.failures = 10 * DELIVERY_ATTEMPTS
    first = app_on(sidecar, clock, WITH_STATE)
    async with serve(first) as client:
        first.state.joiner.sender.retry_base_delay = 0.001
        await one_window(client, first, clock)
        await wait_for(lambda: first.state.joiner.sender.parked, what="the window parked")
    assert first.state.joiner.sender.windows_lost == 0  # handed over, not lost
    sidecar.failures = 0
    second = app_on(sidecar, clock, WITH_STATE)
    async with serve(second) as client:
        await wait_for(lambda: second.state.joiner.sender.parked, what="the previous run's window parked here")
        assert (await client.post("/deadletters/resend")).json() == {"resent": 1, "still_parked": 0}
    assert billed(sidecar) == [ROW]


async def test_parked_rows_are_bounded_in_bytes_and_the_oldest_window_is_given_up_counted(caplog):
    app, sidecar, clock = make_app()
    sidecar.failures = 100 * DELIVERY_ATTEMPTS
    async with serve(app) as client:
        sender = app.state.joiner.sender
        sender.retry_base_delay, sender.max_parked_bytes = 0.001, 150  # one window's rows are about 60 bytes
        for _ in range(3):
            await one_window(client, app, clock)
        await wait_for(lambda: sender.deliveries_failed == 3, what="three windows failed")
        kept = [parked.window.id for parked in sender.parked.values()]
        lost = sender.windows_lost
    assert lost == 1 and len(kept) == 2
    assert any(
        "parked rows for billable-proc/billables LOST" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
    )


async def test_the_dead_letter_routes_need_the_api_token_when_one_is_set():
    app, _, _ = make_app(app_api_token="tok")
    async with serve(app) as client:
        refused = await client.get("/deadletters")
        refused_resend = await client.post("/deadletters/resend")
        allowed = await client.get("/deadletters", headers={"dapr-api-token": "tok"})
    assert refused.status_code == refused_resend.status_code == 401
    assert allowed.json() == {"windows": [], "bytes": 0}


# -- calls by bytes; a refused call is not retried unchanged; a re-send sends what is missing ------------


class RefusingSidecar(RecordingSidecar):
    """Refuses (HTTP 4xx) the calls of the chunks it is told, a given number of times each."""

    def __init__(self, refuse: dict[str, int]) -> None:
        super().__init__()
        self.refuse = refuse
        self.calls: list[str] = []

    async def invoke(self, app_id, method, data, headers=None):
        from streaming_runtime.sidecar import Refused

        chunk = (headers or {}).get("window-chunk", "")
        self.calls.append(chunk)
        if self.refuse.get(chunk, 0) > 0:
            self.refuse[chunk] -= 1
            raise Refused("invoke billable-proc/billables answered HTTP 413: too large (test)")
        await super().invoke(app_id, method, data, headers)


async def many_readings(client, app, clock, count: int) -> None:
    await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
    for start in range(0, count, 100):
        await client.post(
            "/poweruse",
            json={
                "entries": [
                    {"entryId": str(n), "event": {"tenant_id": "t1", "power_use": 1.5, "kwh_use": n}}
                    for n in range(start, min(count, start + 100))
                ]
            },
        )
    await close_window(app, clock)


async def test_a_large_window_goes_in_calls_under_max_call_bytes_each_billed_once():
    from streaming_runtime.sidecar import dumps

    app, sidecar, clock = make_app(max_call_bytes=20_000)  # about 350 of the example's rows a call
    async with serve(app) as client:
        await many_readings(client, app, clock, 2_000)
        await wait_for(lambda: sum(len(rows) for _, _, rows, _ in sidecar.invocations) == 2_000, what="all rows")
    sizes = [len(dumps(rows)) for _, _, rows, _ in sidecar.invocations]
    assert len(sizes) > 5 and max(sizes) <= 20_000
    chunks = [headers["window-chunk"] for *_, headers in sidecar.invocations]
    assert chunks == [f"{n}/{len(chunks)}" for n in range(1, len(chunks) + 1)]
    assert sorted(row["tenant_kwh_usage"] for _, _, rows, _ in sidecar.invocations for row in rows) == list(
        range(2_000)
    )


async def test_a_call_the_receiver_refuses_is_not_retried_unchanged_and_a_re_send_sends_only_what_is_missing():
    sidecar, clock = RefusingSidecar({"2/3": 1}), ManualClock()
    app = app_on(sidecar, clock, EXAMPLE, max_call_bytes=8_000)
    async with serve(app) as client:
        sender = app.state.joiner.sender
        await many_readings(client, app, clock, 250)
        await wait_for(lambda: sender.parked, what="the window parked")
        [parked] = (await client.get("/deadletters")).json()["windows"]
        calls_before = list(sidecar.calls)
        assert (await client.post("/deadletters/resend")).json() == {"resent": 1, "still_parked": 0}
    assert parked["reason"].startswith("refused by the receiver: invoke billable-proc/billables answered HTTP 413")
    assert (parked["chunks"], parked["chunks_delivered"]) == (3, 1)  # 1/3 went, 2/3 refused, 3/3 not tried
    assert calls_before == ["1/3", "2/3"]  # the refused call was not tried again
    assert sidecar.calls[2:] == ["2/3", "3/3"]  # the re-send: only what was missing, in the same chunks
    billed = [row["tenant_kwh_usage"] for _, _, rows, _ in sidecar.invocations for row in rows]
    assert sorted(billed) == list(range(250))
