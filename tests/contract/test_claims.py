"""Exactly once among replicas (joiner.claims): a redelivery that reaches another replica than the one that
took it is not billed twice, whether the first replica lives on, was killed after it claimed the event, or was
killed before; a claim the store cannot make answers RETRY. The replicas share one state store here, as the
replicas of one app id share theirs; the same on the real runtime: tests/faults (three replicas)."""

from __future__ import annotations

import asyncio
import copy

import pytest

from streaming_runtime.sidecar import SidecarError
from tests.contract.support import ManualClock, RecordingSidecar, serve, wait_for
from tests.contract.test_joiner_service import EXAMPLE, app_on, close_window, cloud_event
from tests.contract.test_replicas import STATE, rows_of

pytestmark = pytest.mark.anyio

TENANT = {"tenant_id": "t1", "customer_id": 7}


def replica(name: str) -> str:
    return EXAMPLE + STATE + f"replica: {name}\n"


def reading(kwh: int) -> dict:
    return cloud_event({"tenant_id": "t1", "power_use": 1.5, "kwh_use": kwh}, "poweruse")


async def deliver(client, route: str, event: dict) -> dict:
    answer = await client.post(route, json=event)
    assert answer.status_code == 200
    return answer.json()


async def billed_after_window(sidecar: RecordingSidecar, clock: ManualClock, name: str) -> tuple[list, dict]:
    """A replica started on ``sidecar``'s state (the one killed, restarted; or one that kept running):
    its window closed and delivered, its rows and /stats."""
    app = app_on(sidecar, clock, replica(name))
    async with serve(app) as client:
        await wait_for(lambda: app.state.joiner.taken_over.is_set(), what="the recovery done")
        await close_window(app, clock)
        await asyncio.sleep(0)
        await wait_for(lambda: app.state.joiner.outbox.empty() and not app.state.joiner.sender.parked, what="sent")
        stats = (await client.get("/stats")).json()
    return rows_of(sidecar), stats


async def test_a_redelivery_to_another_replica_is_answered_and_not_joined_again():
    shared, clock = RecordingSidecar(), ManualClock()
    event = reading(10)
    first, second = app_on(shared, clock, replica("r-0")), app_on(shared, clock, replica("r-1"))
    async with serve(first) as one, serve(second) as two:
        for client in (one, two):
            assert await deliver(client, "/tenants", cloud_event(TENANT, "tenants")) == {"status": "SUCCESS"}
        assert await deliver(one, "/poweruse", event) == {"status": "SUCCESS"}
        assert await deliver(two, "/poweruse", event) == {"status": "SUCCESS"}  # its ack was lost: again, to r-1
        for app in (first, second):
            await close_window(app, clock)
        await wait_for(lambda: shared.invocations, what="r-0's window delivered")
        stats = [(await client.get("/stats")).json() for client in (one, two)]
        metrics = (await two.get("/metrics")).text
    assert rows_of(shared) == [(7, 10)]
    assert stats[0]["accepted"]["poweruse"] == 1 and stats[0]["claimed_elsewhere"] == {}
    assert stats[1]["accepted"].get("poweruse", 0) == 0 and stats[1]["claimed_elsewhere"] == {"poweruse": 1}
    assert 'joiner_claimed_elsewhere_total{stream="poweruse"} 1.0' in metrics
    # the tenants stream is broadcast: every replica takes every record, none is claimed
    assert [key for _, key in shared.state if key.startswith("claim.")] == [f"claim.poweruse.{event['id']}"]


async def test_a_replica_killed_after_its_claim_bills_the_event_at_its_restart_and_the_other_does_not():
    shared, clock = RecordingSidecar(), ManualClock()
    event = reading(20)
    killed = app_on(shared, clock, replica("r-0"))
    async with serve(killed) as client:
        await deliver(client, "/tenants", cloud_event(TENANT, "tenants"))
        assert await deliver(client, "/poweruse", event) == {"status": "SUCCESS"}
        left_by_a_crash = copy.deepcopy(shared.state)  # SIGKILL before daprd acknowledged: it comes again
    shared.state = left_by_a_crash
    other = app_on(shared, clock, replica("r-1"))
    async with serve(other) as client:
        await deliver(client, "/tenants", cloud_event(TENANT, "tenants"))
        assert await deliver(client, "/poweruse", event) == {"status": "SUCCESS"}
        await close_window(other, clock)
        stats = (await client.get("/stats")).json()
    assert shared.invocations == [] and stats["claimed_elsewhere"] == {"poweruse": 1}
    rows, stats = await billed_after_window(shared, clock, "r-0")
    assert rows == [(7, 20)] and stats["journal_replayed"] == 2


async def test_a_replica_killed_before_its_claim_leaves_the_event_to_the_one_it_was_redelivered_to():
    shared, clock = RecordingSidecar(), ManualClock()
    event = reading(30)
    killed = app_on(shared, clock, replica("r-0"))
    async with serve(killed) as client:
        await deliver(client, "/tenants", cloud_event(TENANT, "tenants"))
        await deliver(client, "/poweruse", event)
        left_by_a_crash = copy.deepcopy(shared.state)
    # killed between its journal write and its claim: the journal holds the event, no claim exists
    del left_by_a_crash[("joiner-state", f"claim.poweruse.{event['id']}")]
    shared.state = left_by_a_crash
    other = app_on(shared, clock, replica("r-1"))
    async with serve(other) as client:
        await deliver(client, "/tenants", cloud_event(TENANT, "tenants"))
        assert await deliver(client, "/poweruse", event) == {"status": "SUCCESS"}
        await close_window(other, clock)
        await wait_for(lambda: shared.invocations, what="r-1's window delivered")
    assert rows_of(shared) == [(7, 30)]
    shared.invocations.clear()
    rows, stats = await billed_after_window(shared, clock, "r-0")  # its replay finds the claim r-1's
    assert rows == [] and stats["claimed_elsewhere"] == {"poweruse": 1} and stats["journal_replayed"] == 2


class ClaimsDown(RecordingSidecar):
    """Its state store saves and reads, but creates nothing while ``down``."""

    down = True

    async def create_states(
        self, store: str, items: dict[str, bytes], metadata: dict[str, str] | None = None
    ) -> dict[str, bytes]:
        if self.down:
            raise SidecarError("create refused (test)")
        return await super().create_states(store, items, metadata)


async def test_a_claim_the_store_cannot_make_answers_retry_and_the_redelivery_is_billed_once():
    sidecar, clock = ClaimsDown(), ManualClock()
    app = app_on(sidecar, clock, replica("r-0"))
    event, other = reading(40), reading(41)
    async with serve(app) as client:
        await deliver(client, "/tenants", cloud_event(TENANT, "tenants"))
        assert await deliver(client, "/poweruse", event) == {"status": "RETRY"}
        bulk = {
            "entries": [
                {"entryId": "a", "event": event, "contentType": "application/cloudevents+json"},
                {"entryId": "b", "event": other, "contentType": "application/cloudevents+json"},
            ]
        }
        sidecar.down = False
        await sidecar.create_states("joiner-state", {f"claim.poweruse.{other['id']}": b"r-1"})  # r-1 took it
        answer = await deliver(client, "/poweruse", bulk)
        assert answer == {"statuses": [{"entryId": "a", "status": "SUCCESS"}, {"entryId": "b", "status": "SUCCESS"}]}
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
        stats = (await client.get("/stats")).json()
    assert rows_of(sidecar) == [(7, 40)]
    assert stats["claim_failures"] == 1 and stats["claimed_elsewhere"] == {"poweruse": 1}


class SlowJournal(RecordingSidecar):
    """Its journal writes wait for ``go``."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def save_state_bytes(self, store: str, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        if ".journal." in key and b'{"s": 1,' in data[:64]:  # a reading's delivery
            await self.go.wait()
        await super().save_state_bytes(store, key, data, metadata)


async def test_a_window_waits_to_close_for_a_delivery_still_being_journaled():
    sidecar, clock = SlowJournal(), ManualClock()
    app = app_on(sidecar, clock, replica("r-0"))
    async with serve(app) as client:
        await deliver(client, "/tenants", cloud_event(TENANT, "tenants"))
        pending = asyncio.ensure_future(deliver(client, "/poweruse", reading(50)))
        await wait_for(lambda: app.state.joiner.in_flight, what="the reading in flight")
        await close_window(app, clock)  # its window's end passes while it is journaled
        assert app.state.joiner.core.windows.open_count == 1 and not sidecar.invocations
        sidecar.go.set()
        assert await pending == {"status": "SUCCESS"}
        app.state.joiner.close_due()
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
    assert rows_of(sidecar) == [(7, 50)]


class HalfAnswered(RecordingSidecar):
    """Its store says what it holds for the first key of a bulk create only (the others: no answer)."""

    async def create_states(
        self, store: str, items: dict[str, bytes], metadata: dict[str, str] | None = None
    ) -> dict[str, bytes]:
        held = await super().create_states(store, dict(list(items.items())[:1]), metadata)
        return held


async def test_events_whose_claims_the_store_leaves_unanswered_get_retry_and_the_others_go_in(caplog):
    sidecar, clock = HalfAnswered(), ManualClock()
    app = app_on(sidecar, clock, replica("r-0"))
    first, second = reading(60), reading(61)
    bulk = {
        "entries": [
            {"entryId": "a", "event": first, "contentType": "application/cloudevents+json"},
            {"entryId": "b", "event": second, "contentType": "application/cloudevents+json"},
        ]
    }
    async with serve(app) as client:
        await deliver(client, "/tenants", cloud_event(TENANT, "tenants"))
        answer = await deliver(client, "/poweruse", bulk)
        stats = (await client.get("/stats")).json()
    assert answer == {"statuses": [{"entryId": "a", "status": "SUCCESS"}, {"entryId": "b", "status": "RETRY"}]}
    assert stats["claim_failures"] == 1 and stats["accepted"]["poweruse"] == 1
    assert "claims of 1 of 2 poweruse event(s) not made" in caplog.text


async def test_with_no_stream_broadcast_the_tenants_are_claimed_too():
    """JOINER_BROADCAST=none (a broker that partitions both streams by key): a tenant record redelivered to
    another replica is claimed there, as a reading is."""
    shared, clock = RecordingSidecar(), ManualClock()
    tenant = cloud_event(TENANT, "tenants")
    first = app_on(shared, clock, replica("r-0") + "broadcast: none\n")
    second = app_on(shared, clock, replica("r-1") + "broadcast: none\n")
    async with serve(first) as one, serve(second) as two:
        assert await deliver(one, "/tenants", tenant) == {"status": "SUCCESS"}
        assert await deliver(two, "/tenants", tenant) == {"status": "SUCCESS"}
        stats = (await two.get("/stats")).json()
    assert stats["claimed_elsewhere"] == {"tenants": 1} and stats["accepted"].get("tenants", 0) == 0
    assert [key for _, key in shared.state if key.startswith("claim.")] == [f"claim.tenants.{tenant['id']}"]


def test_a_broadcast_stream_that_is_not_a_stream_is_refused():
    from joiner.config import config_from_yaml
    from streaming_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=r"JOINER_BROADCAST: meters is not one of the streams \(tenants, poweruse\)"):
        config_from_yaml(replica("r-0") + "broadcast: [meters]\n")
