"""One joiner replica of several (JOINER_REPLICA, docs/scaling.md): its state-store keys are its own, its
deliveries name it, and billable-proc bills two replicas' parts of one window while a retry of one part is
still a duplicate. Without a replica, keys and headers are those of one joiner, unchanged."""

from __future__ import annotations

import copy
import logging

import pytest

from joiner.config import load_config
from message_proc.app import ProcessorSettings, create_app
from streaming_runtime.errors import ConfigError
from tests.contract.support import ManualClock, RecordingSidecar, serve, wait_for
from tests.contract.test_joiner_service import EXAMPLE, app_on, close_window, cloud_event, post

pytestmark = pytest.mark.anyio

STATE = "state: {store: joiner-state, journal: true}\ndedup: {ttl: 10m}\n"
WINDOW_HEADERS = {"window-start", "window-end", "window-id", "window-chunk"}


def replica(name: str, extra: str = "") -> str:
    return EXAMPLE + STATE + f"replica: {name}\n" + extra


async def one_reading(client, customer: int, kwh: int) -> None:
    assert await post(client, "/tenants", {"tenant_id": "t1", "customer_id": customer}) == {"status": "SUCCESS"}
    reading = {"tenant_id": "t1", "power_use": 1.5, "kwh_use": kwh}
    assert await post(client, "/poweruse", reading) == {"status": "SUCCESS"}


def keys(sidecar: RecordingSidecar) -> set[str]:
    return {key for _, key in sidecar.state}


def rows_of(sidecar: RecordingSidecar) -> list[tuple]:
    return sorted(
        (row["customer_id"], row["tenant_kwh_usage"]) for _, _, rows, _ in sidecar.invocations for row in rows
    )


async def test_without_a_replica_the_keys_and_the_headers_are_one_joiners():
    sidecar, clock = RecordingSidecar(), ManualClock()
    app = app_on(sidecar, clock, EXAMPLE + STATE)
    async with serve(app) as client:
        await one_reading(client, 7, 10)
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
        stats = (await client.get("/stats")).json()
    assert {"run", "journal.runs"} <= keys(sidecar)
    assert not [key for key in keys(sidecar) if key.startswith("join-tenants-poweruse")]
    [(_, _, _, headers)] = sidecar.invocations
    assert set(headers) >= WINDOW_HEADERS and "window-source" not in headers
    assert "replica" not in stats and "history_skipped" not in stats


async def test_a_replica_keeps_every_state_key_under_its_name_and_names_its_deliveries():
    sidecar, clock = RecordingSidecar(), ManualClock()
    app = app_on(sidecar, clock, replica("join-tenants-poweruse-1", "output: {envelope: true}\n"))
    async with serve(app) as client:
        await one_reading(client, 7, 10)
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
        stats = (await client.get("/stats")).json()
    # the run record, the journal, the checkpoint and (at stop) the handover: all under the replica's name;
    # the claim of the reading is shared by every replica (joiner.claims), and names this one
    own = {key for key in keys(sidecar) if not key.startswith("claim.")}
    assert own and all(key.startswith("join-tenants-poweruse-1.") for key in own), own
    [claim] = [key for key in keys(sidecar) if key.startswith("claim.poweruse.")]
    assert sidecar.state[("joiner-state", claim)] == b"join-tenants-poweruse-1"
    assert {"join-tenants-poweruse-1.run", "join-tenants-poweruse-1.open-windows"} <= keys(sidecar)
    [(_, _, body, headers)] = sidecar.invocations
    assert headers["window-source"] == "join-tenants-poweruse-1"
    assert headers["window-id"] == body["window_id"]  # the window's own id, the same on every replica
    assert body["window_source"] == "join-tenants-poweruse-1"
    assert stats["replica"] == "join-tenants-poweruse-1"


async def test_a_restarted_replica_takes_over_its_own_windows_and_journal_and_never_anothers():
    clock = ManualClock()
    shared = RecordingSidecar()  # one state store, as the replicas of one app id share it
    for name, customer in (("r-0", 7), ("r-1", 8)):
        app = app_on(shared, clock, replica(name))
        async with serve(app) as client:
            await one_reading(client, customer, customer * 10)
            left_by_a_crash = copy.deepcopy(shared.state)  # SIGKILL now: the open window is in its journal
        shared.state = left_by_a_crash
    after = RecordingSidecar()
    after.state = copy.deepcopy(shared.state)
    restarted = app_on(after, clock, replica("r-0"))
    async with serve(restarted) as client:
        await wait_for(lambda: restarted.state.joiner.taken_over.is_set(), what="the recovery done")
        await close_window(restarted, clock)
        await wait_for(lambda: after.invocations, what="the recovered window delivered")
        stats = (await client.get("/stats")).json()
    assert rows_of(after) == [(7, 70)]  # its own reading; r-1's stays for r-1
    assert stats["crashes_detected"] == 1 and stats["journal_replayed"] == 2
    assert any(key.startswith("r-1.journal.") for _, key in after.state)


AGGREGATE = "aggregate: {group_by: [customer_id], fields: {kwh: sum(tenant_kwh_usage), n: count()}}\n"


async def test_a_replica_delivers_its_share_of_an_aggregate_as_a_part_that_says_how_it_combines():
    sidecar, clock = RecordingSidecar(), ManualClock()
    app = app_on(sidecar, clock, replica("r-0", AGGREGATE + "output: {envelope: true}\n"))
    async with serve(app) as client:
        await one_reading(client, 7, 10)
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
    [(_, _, body, headers)] = sidecar.invocations
    assert body["partial"] == {"group_by": ["customer_id"], "fields": {"kwh": "sum", "n": "count"}}
    assert body["rows"] == [{"customer_id": 7, "kwh": 10, "n": 1}] and headers["window-source"] == "r-0"


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        ("", r"JOINER_REPLICA=r-0 with aggregate needs output.envelope: true"),
        (
            "output: {envelope: true}\naggregate: {fields: {latest: last(tenant_kwh_usage)}}\n",
            r"latest is last\(\), the last row in arrival order, which replicas do not share",
        ),
    ],
    ids=["no-envelope", "last"],
)
def test_an_aggregate_with_a_replica_that_cannot_combine_is_refused_naming_why(extra, refusal):
    from joiner.config import config_from_yaml

    aggregate = AGGREGATE if "aggregate" not in extra else ""
    with pytest.raises(ConfigError, match=refusal):
        config_from_yaml(EXAMPLE + aggregate + extra + "replica: r-0\n")


@pytest.mark.parametrize("name", ["", "a b", "r.0", "-r", "x" * 64])
def test_a_replica_name_that_cannot_be_a_key_and_a_header_is_refused(name):
    with pytest.raises(ConfigError, match="JOINER_REPLICA"):
        load_config({"JOINER_CONFIG": "services/joiner/joiner.yaml", "JOINER_REPLICA": name or " x y"})


async def test_a_new_replica_skips_tenant_history_in_a_processing_time_window():
    """A new consumer group reads the stream from its start: records published more than a window before
    the replica started are not joined (each reading would pair with every old copy of its tenant)."""
    sidecar, clock = RecordingSidecar(), ManualClock(1_700_000_000.0)
    app = app_on(sidecar, clock, replica("r-0"))
    old = cloud_event({"tenant_id": "t1", "customer_id": 1}, "tenants") | {"time": "2023-11-14T22:12:00Z"}
    recent = cloud_event({"tenant_id": "t1", "customer_id": 2}, "tenants") | {"time": "2023-11-14T22:13:19Z"}
    async with serve(app) as client:
        for event in (old, recent):
            assert (await client.post("/tenants", json=event)).json() == {"status": "SUCCESS"}
        assert await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 5}) == {
            "status": "SUCCESS"
        }
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
        stats = (await client.get("/stats")).json()
    assert rows_of(sidecar) == [(2, 5)]
    assert stats["history_skipped"] == 1 and stats["accepted"]["tenants"] == 1


async def test_a_new_replica_skips_tenant_history_in_a_bulk_delivery_too():
    sidecar, clock = RecordingSidecar(), ManualClock(1_700_000_000.0)
    app = app_on(sidecar, clock, replica("r-0"))
    old = cloud_event({"tenant_id": "t1", "customer_id": 1}, "tenants") | {"time": "2023-11-14T22:12:00Z"}
    recent = cloud_event({"tenant_id": "t1", "customer_id": 2}, "tenants") | {"time": "2023-11-14T22:13:19Z"}
    entries = [
        {"entryId": name, "event": event, "contentType": "application/cloudevents+json"}
        for name, event in (("old", old), ("recent", recent))
    ]
    body = {"id": "b1", "topic": "tenants", "pubsubname": "redis-stream", "type": "com.dapr.event.sent.bulk"}
    async with serve(app) as client:
        answer = (await client.post("/tenants", json={**body, "entries": entries})).json()
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 5})
        await close_window(app, clock)
        await wait_for(lambda: sidecar.invocations, what="the window delivered")
        stats = (await client.get("/stats")).json()
    assert answer == {"statuses": [{"entryId": "old", "status": "SUCCESS"}, {"entryId": "recent", "status": "SUCCESS"}]}
    assert rows_of(sidecar) == [(2, 5)]
    assert stats["history_skipped"] == 1


# -- billable-proc ------------------------------------------------------------------------------------

ROWS = [{"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1034}]
OTHER = [{"customer_id": 243, "tenant_id": "dc:eqix:us:chi1:10", "tenant_kwh_usage": 867}]
WINDOW = {"window-id": "1700000000000", "window-end": "1700000020.0", "window-chunk": "1/1"}


def billed_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Data received: ")]


async def test_two_replicas_parts_of_one_window_are_both_billed_and_a_retry_of_one_is_a_duplicate(caplog):
    caplog.set_level(logging.INFO, logger="message-proc")
    store = RecordingSidecar()
    settings = ProcessorSettings(PROC_STATE_STORE="billing-state")
    async with serve(create_app(settings, store=store)) as client:
        first = await client.post("/billables", json=ROWS, headers={**WINDOW, "window-source": "r-0"})
        second = await client.post("/billables", json=OTHER, headers={**WINDOW, "window-source": "r-1"})
        retry = await client.post("/billables", json=ROWS, headers={**WINDOW, "window-source": "r-0"})
        conflict = await client.post("/billables", json=OTHER, headers={**WINDOW, "window-source": "r-0"})
        stats = (await client.get("/stats")).json()
    assert [a.json() for a in (first, second, retry)] == [
        {"status": "ok"},
        {"status": "ok"},
        {"status": "ok", "duplicate": True},
    ]
    assert conflict.status_code == 200
    assert (stats["calls"], stats["duplicates"], stats["conflicts"]) == (3, 1, 1)
    assert len(billed_lines(caplog)) == 3
    assert {key for _, key in store.state} == {"billed:r-0.1700000000000.1/1", "billed:r-1.1700000000000.1/1"}


async def test_a_call_without_a_source_keeps_its_key_and_is_another_part_than_a_sourced_one():
    store = RecordingSidecar()
    settings = ProcessorSettings(PROC_STATE_STORE="billing-state")
    async with serve(create_app(settings, store=store)) as client:
        plain = await client.post("/billables", json=ROWS, headers=WINDOW)
        sourced = await client.post("/billables", json=ROWS, headers={**WINDOW, "window-source": "r-0"})
        retry = await client.post("/billables", json=ROWS, headers=WINDOW)
    assert [a.json() for a in (plain, sourced, retry)] == [
        {"status": "ok"},
        {"status": "ok"},
        {"status": "ok", "duplicate": True},
    ]
    assert {key for _, key in store.state} == {"billed.1700000000000.1/1", "billed:r-0.1700000000000.1/1"}


async def test_a_source_header_that_is_not_a_replica_name_is_refused():
    async with serve(create_app(ProcessorSettings())) as client:
        answer = await client.post("/billables", json=ROWS, headers={**WINDOW, "window-source": "a.b"})
        stats = (await client.get("/stats")).json()
    assert answer.status_code == 400 and "window-source" in answer.json()["error"]
    assert (stats["calls"], stats["rejected"]) == (0, 1)
