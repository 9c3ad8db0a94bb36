"""Faults on the real runtime (daprd 1.18.2, redis-server, rabbitmq-server), each checked by numbers: every
reading carries its own number as ``kwh_use``, the expected rows are rebuilt from the numbers, and the
rows billable-proc logged are compared with them: 0 lost and 0 billed twice, or the test fails.

One stack of its own: billable-proc and the joiner (``join: table``, 2 s windows, dedup as shipped, the
open windows handed over through joiner-state, ``state.journal`` on, parked windows re-sent every 2 s), no
generators, but their sidecars: the test publishes through them, as the topic scopes allow. The faults run one after the other,
each on its own range of numbers; the table of published / expected / billed / lost / duplicated per fault
is printed at the end of the run.

A SIGKILL of the joiner in the middle of a window loses nothing with the journal.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.stack import Stack, data_received
from tests.e2e.support import no_redis_refusals, poll, publish_bulk, publish_url, publisher_stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOINER = "join-tenants-poweruse"
TENANTS = 10
RESULTS: list[tuple[str, int, int, int, int, int]] = []  # fault, published, expected, billed, lost, duplicated


def fault_table() -> list[str]:
    lines = [f"{'fault':<50} {'published':>9} {'expected':>8} {'billed':>7} {'lost':>5} {'twice':>5}"]
    lines += [
        f"{fault:<50} {published:>9} {expected:>8} {billed:>7} {lost:>5} {twice:>5}"
        for fault, published, expected, billed, lost, twice in RESULTS
    ]
    return lines


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("faults")
    overrides = {
        JOINER: {
            "JOINER_WINDOW_SIZE": "2s",
            "JOINER_JOIN_MODE": "table",
            "PARKED_RETRY_SECONDS": "2",
            "JOINER_JOURNAL": "true",
        }
    }
    with publisher_stack(run_dir, ("billable-proc", JOINER), overrides) as running:
        publish(
            running,
            "redis-stream",
            "tenants",
            [({"tenant_id": f"fault-t{n}", "customer_id": 5000 + n}, None) for n in range(TENANTS)],
        )
        poll(lambda: stats(running)["table_keys"] >= TENANTS, 30, "the tenants in the joiner's table", running)
        yield running
        no_redis_refusals(running)


# -- helpers ----------------------------------------------------------------------------------------


def stats(stack: Stack) -> dict:
    return stack.apps[JOINER].get("/stats").json()


def publish(stack: Stack, pubsub: str, topic: str, events: list[tuple[dict, str | None]]) -> None:
    """Through the publisher's sidecar, one call per event; ``(data, cloudevent id or None)``."""
    base, headers = publish_url(stack, pubsub, topic)
    with httpx.Client(timeout=10, headers=headers) as client:
        for data, event_id in events:
            params = {"metadata.cloudevent.id": event_id} if event_id else None
            answer = client.post(base, json=data, params=params)
            assert answer.status_code == 204, answer.text


def reading(number: int) -> dict:
    """Every third reading is under 1.0 and bills nothing; the others bill one row each (join: table)."""
    return {
        "panel_id": number,
        "tenant_id": f"fault-t{number % TENANTS}",
        "power_use": 0.5 if number % 3 == 0 else 1.5,
        "kwh_use": number,
    }


def expected(numbers: range) -> Counter:
    return Counter(n for n in numbers if n % 3)


def billed(stack: Stack, numbers: range) -> Counter:
    rows = (row for batch in data_received(stack.apps["billable-proc"].log_text()) for row in batch)
    return Counter(
        row["tenant_kwh_usage"]
        for row in rows
        if str(row["tenant_id"]).startswith("fault-t") and row["tenant_kwh_usage"] in numbers
    )


def settle_and_check(
    stack: Stack, fault: str, numbers: range, published: int, timeout: float = 60, may_lose: bool = False
) -> tuple[int, int]:
    """Wait until every expected row is billed (or, ``may_lose``, the joiner is quiet) and the joiner holds
    nothing undelivered; then compare. (lost, billed twice)."""
    want = expected(numbers)
    if not may_lose:
        poll(lambda: set(billed(stack, numbers)) >= set(want), timeout, f"{fault}: every expected row billed", stack)

    def quiet() -> bool:
        current = stats(stack)
        return current["outbox"] == 0 and current["windows_parked"] == 0 and current["buffered"] == 0

    poll(quiet, 30, f"{fault}: the joiner delivered everything", stack)
    got = billed(stack, numbers)
    lost = sum((want - got).values())
    twice = sum(count - 1 for count in got.values() if count > 1)
    RESULTS.append((fault, published, sum(want.values()), sum(got.values()), lost, twice))
    assert set(got) <= set(want)  # nothing from a reading that bills nothing
    if not may_lose:
        assert (lost, twice) == (0, 0), f"{fault}: {lost} rows lost, {twice} billed twice"
    return lost, twice


# -- the faults -------------------------------------------------------------------------------------


def test_no_fault(stack: Stack):
    numbers = range(1, 301)
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers])
    settle_and_check(stack, "none", numbers, len(numbers))


def test_every_reading_published_twice_with_its_id(stack: Stack):
    """A publisher's retry after a lost answer: the same message, the same CloudEvent id (dedup, as shipped)."""
    numbers = range(1001, 1201)
    events = [(reading(n), f"fault-reading-{n}") for n in numbers]
    publish(stack, "rabbit-stream", "poweruse", events + events)
    settle_and_check(stack, "the same CloudEvent id published twice", numbers, 2 * len(numbers))
    assert stats(stack)["duplicates"].get("poweruse", 0) >= len(numbers)


def test_billable_proc_down_for_longer_than_the_retries(stack: Stack):
    """Its windows are parked after 5 attempts (~7.5 s) and re-sent once billable-proc is back."""
    numbers = range(2001, 2301)
    failed_before = stats(stack)["deliveries_failed"]
    stack.stop_app("billable-proc")
    try:
        publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers])
        poll(
            lambda: stats(stack)["deliveries_failed"] > failed_before,
            60,
            "a window parked",
            stack,
            down=["billable-proc"],
        )
        assert stack.apps[JOINER].get("/readyz").status_code == 503
    finally:
        stack.start_app("billable-proc")
    settle_and_check(stack, "billable-proc down longer than the retries", numbers, len(numbers))
    assert stats(stack)["windows_resent"] >= 1 and stack.apps[JOINER].get("/readyz").status_code == 200


def test_a_burst_of_50000_readings(stack: Stack):
    """Windows of thousands of rows go in calls under billable-proc's 1 MiB limit."""
    numbers = range(100_001, 150_001)
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers])
    settle_and_check(stack, "a burst of 50,000 readings", numbers, len(numbers), timeout=240)


def test_billable_proc_restarted_in_the_middle_of_a_retry(stack: Stack):
    """billable-proc goes away while a window is due, and comes back while the joiner is retrying it."""
    numbers = range(3001, 3301)
    stack.stop_app("billable-proc")
    try:
        publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers])
        poll(
            lambda: stack.apps[JOINER].get("/readyz").status_code == 503,
            30,
            "a delivery attempt failed",
            stack,
            down=["billable-proc"],
        )
    finally:
        stack.start_app("billable-proc")
    settle_and_check(stack, "billable-proc restarted in the middle of a retry", numbers, len(numbers))


def test_the_joiner_stopped_and_started_in_the_middle_of_a_window(stack: Stack):
    """SIGTERM, as a rolling update does: the open window and the table go over through joiner-state."""
    numbers = range(40_001, 40_301)
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[:150]])
    poll(lambda: stats(stack)["accepted"].get("poweruse", 0) > 0, 20, "readings accepted", stack)
    stack.restart_app(JOINER)
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[150:]])
    settle_and_check(stack, "joiner SIGTERM and restart", numbers, len(numbers))


def test_the_joiner_killed_loses_nothing_with_the_journal(stack: Stack):
    """SIGKILL in the middle of a window: the next start restores the checkpoint and replays the journal."""
    numbers = range(50_001, 50_301)
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[:150]])
    poll(lambda: stats(stack)["accepted"].get("poweruse", 0) >= 150, 20, "readings accepted", stack)
    stack.kill_app(JOINER)
    stack.start_app(JOINER)
    poll(lambda: stats(stack)["crashes_detected"] == 1, 30, "the restart reporting the crash", stack)
    assert stats(stack)["table_keys"] >= TENANTS  # the table came back with the checkpoint
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[150:]])
    settle_and_check(stack, "joiner SIGKILL and restart (journal)", numbers, len(numbers))


def test_the_joiners_daprd_down_for_longer_than_the_retries(stack: Stack):
    """The joiner's sidecar killed while a window is open: that window cannot go out (parked), the journal
    cannot be written (nothing arrives anyway); once daprd is back the parked window is re-sent."""
    numbers = range(80_001, 80_301)
    failed_before = stats(stack)["deliveries_failed"]
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[:150]])
    poll(lambda: stats(stack)["accepted"].get("poweruse", 0) > 0, 20, "readings accepted", stack)
    stack.kill_sidecar(JOINER)
    try:
        poll(lambda: stats(stack)["deliveries_failed"] > failed_before, 60, "a window parked", stack, down=[JOINER])
    finally:
        stack.start_sidecar(JOINER)
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[150:]])
    settle_and_check(stack, "joiner's daprd down longer than the retries", numbers, len(numbers), timeout=120)


def publish_bulk_until_taken(stack: Stack, events: list[dict], timeout: float = 90) -> None:
    """As a publisher does while its broker is down: a batch the sidecar refuses is sent again."""
    url, headers = publish_url(stack, "rabbit-stream", "poweruse", bulk=True)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30, headers=headers) as client:
        for start in range(0, len(events), 100):
            entries = [
                {"entryId": str(n), "event": event, "contentType": "application/json"}
                for n, event in enumerate(events[start : start + 100])
            ]
            while client.post(url, json=entries).status_code != 204:
                assert time.monotonic() < deadline, "the broker did not take the readings again"
                time.sleep(0.5)  # a publisher's backoff, not a synchronisation


def test_redis_killed_and_restarted(stack: Stack):
    """kill -9 of Redis (tenants stream, joiner-state, billing-state): billable-proc answers 503 while its
    record of billed calls is away, the joiner parks and re-sends; Redis's append-only file keeps the rest."""
    numbers = range(60_001, 60_301)
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[:150]])
    stack.redis.kill()
    try:
        publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[150:]])
        poll(lambda: stats(stack)["accepted"].get("poweruse", 0) > 0, 20, "readings accepted", stack)
    finally:
        stack.redis.restart()
    settle_and_check(stack, "Redis kill -9 and restart", numbers, len(numbers), timeout=120)


def test_rabbitmq_killed_and_restarted(stack: Stack):
    """kill -9 of RabbitMQ: confirmed, persistent readings survive; a redelivered one is recognised by its id."""
    numbers = range(70_001, 70_301)
    publish_bulk(stack, "rabbit-stream", "poweruse", [reading(n) for n in numbers[:150]])
    stack.rabbitmq.kill()
    stack.rabbitmq.restart()  # StackError, naming it, if it does not come back
    publish_bulk_until_taken(stack, [reading(n) for n in numbers[150:]])
    settle_and_check(stack, "RabbitMQ kill -9 and restart", numbers, len(numbers), timeout=120)
