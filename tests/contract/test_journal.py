"""state.journal: a crash loses nothing. A crashed joiner leaves what its state store holds; a new joiner
on that state restores the checkpoint and replays the journal (joiner.journal)."""

from __future__ import annotations

import copy

import pytest

from tests.contract.support import ManualClock, RecordingSidecar, serve, wait_for
from tests.contract.test_joiner_service import EXAMPLE, app_on, close_window, post

pytestmark = pytest.mark.anyio

WITH_JOURNAL = EXAMPLE + "state: {store: joiner-state, journal: true}\ndedup: {ttl: 10m}\n"


def journal_keys(sidecar: RecordingSidecar) -> list[str]:
    return sorted(key for _, key in sidecar.state if key.startswith("journal.") and key != "journal.runs")


async def one_reading(client) -> None:
    assert await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7}) == {"status": "SUCCESS"}
    assert await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10}) == {
        "status": "SUCCESS"
    }


def on_what_a_crash_left(state: dict, clock: ManualClock) -> tuple[RecordingSidecar, object]:
    """A new joiner on the state a killed one left (its memory gone)."""
    after = RecordingSidecar()
    after.state = state
    return after, app_on(after, clock, WITH_JOURNAL)


def rows_of(sidecar: RecordingSidecar) -> list[tuple]:
    return sorted(
        (row["customer_id"], row["tenant_kwh_usage"]) for _, _, rows, _ in sidecar.invocations for row in rows
    )


async def test_a_crash_loses_no_delivery_the_joiner_answered():
    sidecar, clock = RecordingSidecar(), ManualClock()
    first = app_on(sidecar, clock, WITH_JOURNAL)
    async with serve(first) as client:
        await one_reading(client)
        left_by_a_crash = copy.deepcopy(sidecar.state)  # what a SIGKILL now leaves: the process memory is gone
    assert len([key for _, key in left_by_a_crash if key.startswith("journal.") and key != "journal.runs"]) == 2

    after, second = on_what_a_crash_left(left_by_a_crash, clock)
    async with serve(second) as client:
        await wait_for(lambda: second.state.joiner.taken_over.is_set(), what="the recovery done")
        await close_window(second, clock)
        await wait_for(lambda: after.invocations, what="the recovered window delivered")
        stats = (await client.get("/stats")).json()
    assert rows_of(after) == [(7, 10)]
    assert stats["journal_replayed"] == 2 and stats["crashes_detected"] == 1  # the first run's record said running


async def test_a_window_delivered_before_the_crash_is_sent_again_as_the_same_call():
    """Replayed, it makes the same rows under the same window id: billable-proc takes it for a retry."""
    sidecar, clock = RecordingSidecar(), ManualClock()
    first = app_on(sidecar, clock, WITH_JOURNAL)
    async with serve(first) as client:
        first.state.joiner.sender.on_sent = lambda: None  # it crashes before the checkpoint after the window
        await one_reading(client)
        await close_window(first, clock)
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
        left_by_a_crash = copy.deepcopy(sidecar.state)
    after, second = on_what_a_crash_left(left_by_a_crash, clock)
    async with serve(second):
        await wait_for(lambda: second.state.joiner.taken_over.is_set(), what="the recovery done")
        clock.advance(20)
        second.state.joiner.close_due()
    ((_, _, rows, headers),) = sidecar.invocations
    ((_, _, again_rows, again_headers),) = after.invocations  # sent again: the same rows, id and chunk
    assert (again_rows, again_headers["window-id"], again_headers["window-chunk"]) == (
        rows,
        headers["window-id"],
        headers["window-chunk"],
    )


async def test_a_delivery_whose_journal_write_fails_is_answered_retry_and_taken_once_when_it_comes_again():
    sidecar, clock = RecordingSidecar(), ManualClock()
    app = app_on(sidecar, clock, WITH_JOURNAL)
    async with serve(app) as client:
        await wait_for(lambda: app.state.joiner.journal_ready.is_set(), what="the journal started")
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        from tests.contract.test_joiner_service import cloud_event

        event = cloud_event({"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10}, "poweruse")
        sidecar.state_down = True
        refused = (await client.post("/poweruse", json=event)).json()
        sidecar.state_down = False
        again = (await client.post("/poweruse", json=event)).json()  # daprd's redelivery: the same event
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
        stats = (await client.get("/stats")).json()
    assert refused == {"status": "RETRY"} and again == {"status": "SUCCESS"}
    assert rows_of(sidecar) == [(7, 10)]
    assert stats["journal_failures"] == 1 and stats["duplicates"] == {"poweruse": 1}


async def test_a_checkpoint_after_a_delivered_window_forgets_the_journal_it_covers():
    sidecar, clock = RecordingSidecar(), ManualClock()
    app = app_on(sidecar, clock, WITH_JOURNAL)
    async with serve(app) as client:
        await one_reading(client)
        assert len(journal_keys(sidecar)) == 2
        await close_window(app, clock)
        await wait_for(
            lambda: ("joiner-state", "checkpoint") in sidecar.state and not journal_keys(sidecar),
            what="a checkpoint, and the journal it covers forgotten",
        )
    # a clean stop hands over and removes the checkpoint and the journal
    assert ("joiner-state", "checkpoint") not in sidecar.state and not journal_keys(sidecar)
