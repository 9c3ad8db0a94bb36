"""Three joiner replicas on the real runtime (daprd 1.18.2, redis-server, rabbitmq-server): docs/scaling.md.

One stack of its own: billable-proc, the joiner as replicas ``join-tenants-poweruse-0..2`` (one app id, each
its own daprd with ``POD_NAME`` and ``JOINER_REPLICA`` its name, the Redis pub/sub's ``consumerID`` set to
``{podName}``), the journal on as dapr.yaml has it, and the generators' sidecars: the test publishes the
events itself, each with ``"ts"`` (epoch ms) in windows it chose, so that the windows (event time, 2 s,
``window_id`` = start in ms) are the same on every replica and can be computed here by one joiner's core
in-process. Rows come in the envelope (``output.envelope``), which names the window and the replica.

Checked: per window, the rows billable-proc billed from all replicas together are, as a multiset, what one
joiner makes of the same inputs; every replica joined every tenant record (broadcast) and delivered rows
(readings shared); one replica SIGKILLed (its app, or its app and daprd) in the middle of a window and
restarted with its identity: every numbered reading billed exactly once across the replicas.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.stack import Stack, data_received
from joiner.config import load_config
from joiner.core import JoinCore, build_engine
from tests.e2e.support import no_redis_refusals, poll, publish_bulk, publisher_stack, redis_command

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOINER = "join-tenants-poweruse"
REPLICAS = [f"{JOINER}-{n}" for n in range(3)]
WINDOW = 2.0
JOINER_ENV = {
    "JOINER_WINDOW_SIZE": "2s",
    "JOINER_TIME_FIELD": "ts",
    "JOINER_TIME_FORMAT": "epoch_ms",
    "JOINER_GRACE": "6s",  # the two brokers deliver independently: a reading may come after the next window's tenants
    "JOINER_IDLE_TIMEOUT": "5s",  # the last windows close once the input stops
    "JOINER_OUTPUT_ENVELOPE": "true",
    "PARKED_RETRY_SECONDS": "2",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("replicas")
    with publisher_stack(run_dir, ("billable-proc", JOINER), {JOINER: JOINER_ENV}, joiner_replicas=3) as running:
        yield running
        no_redis_refusals(running)


# -- helpers ----------------------------------------------------------------------------------------


def example_messages(app_id: str) -> list[dict]:
    """The MESSAGE_EXPR of a generator in dapr.yaml (a JSON array, with the trailing comma it has)."""
    spec = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    text = next(app["env"]["MESSAGE_EXPR"] for app in spec["apps"] if app["appID"] == app_id)
    return json.loads(re.sub(r",\s*]", "]", text))


def stats(stack: Stack, replica: str) -> dict:
    return stack.apps[replica].get("/stats").json()


NEXT_WINDOW: list[float] = []  # where the next test's windows start (event time): after the last test's grace


def windows_for(count: int) -> float:
    """The start of ``count`` windows of event time no earlier test used, the first 30 s in the past (or
    later, within the joiner's allowance for future times): never late for an earlier test's watermark."""
    recent = (math.floor(time.time() / WINDOW) - 15) * WINDOW
    start = max([recent, *NEXT_WINDOW])
    NEXT_WINDOW[:] = [start + (count + 4) * WINDOW]  # 4 windows: past the 6 s grace
    return start


def stamped(messages: list[dict], start: float, spread: int) -> list[dict]:
    """The messages with ``ts`` (epoch ms) spread over the first half of the window starting at ``start``."""
    return [{**message, "ts": int(start * 1000) + (n % spread) * 10} for n, message in enumerate(messages)]


def envelopes(stack: Stack) -> list[dict]:
    """What billable-proc billed, as the envelopes it logged."""
    return [body for body in data_received(stack.apps["billable-proc"].log_text()) if isinstance(body, dict)]


def canonical(row: Any) -> str:
    return json.dumps(row, sort_keys=True)


def one_joiner(tenants: list[dict], readings: list[dict]) -> dict[str, Counter]:
    """What one joiner's core makes of these inputs (the same settings, in-process): rows per window id."""
    config = load_config({"JOINER_CONFIG": str(ROOT / "services/joiner/joiner.yaml"), **JOINER_ENV})
    out: dict[str, Counter] = {}
    core = JoinCore(
        config,
        build_engine(config),
        on_window=lambda w, rows: out.setdefault(w.id, Counter()).update(canonical(row) for row in rows),
    )
    for n, tenant in enumerate(tenants):
        core.offer(0, tenant, f"t{n}")
    for n, reading in enumerate(readings):
        core.offer(1, reading, f"r{n}")
    core.flush()
    return {window: rows for window, rows in out.items() if rows}


def quiet(stack: Stack) -> bool:
    """Every replica (one added by a test too) has closed and delivered everything it had."""
    for replica in stack.instances_of(JOINER):
        current = stats(stack, replica)
        if current["outbox"] or current["windows_parked"] or current["buffered"]:
            return False
    return True


# -- the tests --------------------------------------------------------------------------------------


def test_each_replica_has_a_consumer_group_of_its_own(stack: Stack):
    def groups() -> set[str]:
        return set(redis_command(stack, "XINFO", "GROUPS", "tenants").splitlines())

    poll(lambda: set(REPLICAS) <= groups(), 30, "a consumer group per replica (consumerID {podName})", stack)
    assert JOINER not in groups()  # not the app id's shared group
    for replica in REPLICAS:
        assert stats(stack, replica)["replica"] == replica


def test_three_replicas_bill_what_one_joiner_makes_of_the_example(stack: Stack):
    tenants_of, readings_of = example_messages("tenants-gen"), example_messages("poweruse-gen")
    windows = 4
    start = windows_for(windows)
    tenants: list[dict] = []
    readings: list[dict] = []
    for k in range(windows):  # each window: the example's tenants, then its readings, as the generators send
        tenants += stamped(tenants_of, start + k * WINDOW, 5)
        readings += stamped(readings_of * 3, start + k * WINDOW, 8)  # 24 a window: every replica gets some
    before = {replica: stats(stack, replica) for replica in REPLICAS}
    for k in range(windows):
        publish_bulk(stack, "redis-stream", "tenants", tenants[k * 5 : (k + 1) * 5])
        publish_bulk(stack, "rabbit-stream", "poweruse", readings[k * 24 : (k + 1) * 24])
    want = one_joiner(tenants, readings)
    assert len(want) == windows and all(want.values())
    ids = set(want)

    def billed() -> dict[str, Counter]:
        got: dict[str, Counter] = {}
        for envelope in envelopes(stack):
            if envelope["window_id"] in ids:
                got.setdefault(envelope["window_id"], Counter()).update(canonical(row) for row in envelope["rows"])
        return got

    poll(lambda: billed() == want, 90, "every window's rows billed from the replicas", stack)
    poll(lambda: quiet(stack), 30, "the replicas delivered everything", stack)
    assert billed() == want  # and nothing more came meanwhile
    sources = Counter(envelope["window_source"] for envelope in envelopes(stack) if envelope["window_id"] in ids)
    assert set(sources) == set(REPLICAS), sources  # the readings were shared: every replica billed some
    for replica in REPLICAS:
        now = stats(stack, replica)
        accepted = now["accepted"].get("tenants", 0) - before[replica]["accepted"].get("tenants", 0)
        assert accepted == len(tenants), f"{replica} joined {accepted} of {len(tenants)} tenant records"
        assert now["late"].get("poweruse", 0) == 0
    proc = stack.apps["billable-proc"].get("/stats").json()
    assert proc["conflicts"] == 0


TENANTS = 10


def numbered(number: int) -> dict:
    """Every third reading is under 1.0 and bills nothing; the others one row, ``tenant_kwh_usage`` its number."""
    return {
        "panel_id": number,
        "tenant_id": f"replica-t{number % TENANTS}",
        "power_use": 0.5 if number % 3 == 0 else 1.5,
        "kwh_use": number,
    }


def accepted(stack: Stack, *replicas: str) -> int:
    """Readings the replicas took in: kept for a window, or filtered out (under 1.0)."""
    return sum(
        stats(stack, replica)[outcome].get("poweruse", 0)
        for replica in replicas
        for outcome in ("accepted", "filtered")
    )


def publish_windows(stack: Stack, window, ks: range) -> None:
    """Windows ``ks`` of :func:`numbered_windows`: each one's tenants, then its readings."""
    for k in ks:
        tenants, readings = window(k)
        publish_bulk(stack, "redis-stream", "tenants", tenants)
        publish_bulk(stack, "rabbit-stream", "poweruse", readings)


def numbered_windows(numbers: range, windows: int, start: float):
    """``window(k)``: the tenants and the ``k``-th share of the numbered readings, stamped in window ``k``."""
    per_window = len(numbers) // windows

    def window(k: int) -> tuple[list[dict], list[dict]]:
        at = start + k * WINDOW
        tenants = stamped([{"tenant_id": f"replica-t{n}", "customer_id": 7000 + n} for n in range(TENANTS)], at, 10)
        readings = stamped([numbered(n) for n in numbers[k * per_window : (k + 1) * per_window]], at, 50)
        return tenants, readings

    return window


@pytest.mark.parametrize(
    ("victim", "sidecar", "numbers"),
    [(REPLICAS[1], False, range(1, 601)), (REPLICAS[2], True, range(1001, 1601))],
    ids=["app", "app-and-daprd"],
)
def test_a_replica_killed_mid_window_and_restarted_bills_every_reading_once(
    stack: Stack, victim: str, sidecar: bool, numbers: range
):
    """SIGKILL of one replica's app (or app and daprd) while its windows are open: its restart (same name,
    so the same state-store keys and the same consumer group) restores its checkpoint and replays its
    journal."""
    windows = 6
    per_window = len(numbers) // windows
    start = windows_for(windows)

    window = numbered_windows(numbers, windows, start)

    before = accepted(stack, *REPLICAS)
    # windows 0-2 all published before the kill, so that none of their events comes while the others may
    # close them for idleness; the victim holds them open (their grace has not passed) when it is killed
    publish_windows(stack, window, range(3))
    taken = 3 * per_window
    poll(lambda: accepted(stack, *REPLICAS) - before >= taken, 30, "the readings accepted", stack)
    held = stats(stack, victim)
    assert held["buffered"] > 0 and held["outbox"] == 0, held  # open windows, nothing delivered of them yet
    stack.kill_replica(victim, sidecar=sidecar)
    stack.restart_replica(victim)
    poll(lambda: stats(stack, victim)["crashes_detected"] == 1, 30, "the restart reporting the crash", stack)
    assert stats(stack, victim)["replica"] == victim
    publish_windows(stack, window, range(3, windows))

    assert_billed_once(stack, numbers)
    assert stats(stack, victim)["journal_replayed"] > 0  # what it held came back from its own journal


def test_every_reading_delivered_twice_is_billed_once_across_the_replicas(stack: Stack):
    """Each numbered reading published twice with one CloudEvent id, as a lost acknowledgement redelivers it:
    a copy that reaches another replica than the first finds the event claimed (joiner.claims) and is not
    joined there; one that reaches the same replica is its dedup's."""
    numbers = range(2001, 2301)
    start = windows_for(2)
    tenants = stamped([{"tenant_id": f"replica-t{n}", "customer_id": 7000 + n} for n in range(TENANTS)], start, 10)
    readings = stamped([numbered(n) for n in numbers], start, 50)
    ids = [f"twice-{n}" for n in numbers]

    def elsewhere() -> int:
        return sum(stats(stack, replica).get("claimed_elsewhere", {}).get("poweruse", 0) for replica in REPLICAS)

    before = elsewhere()
    publish_bulk(stack, "redis-stream", "tenants", tenants)
    publish_bulk(stack, "rabbit-stream", "poweruse", readings, ids=ids)
    publish_bulk(stack, "rabbit-stream", "poweruse", readings, ids=ids)
    assert_billed_once(stack, numbers)
    # second copies that reached another replica than the first were claimed there (how many: the queue's
    # spread over the replicas decides, and a busy machine makes it uneven)
    assert elsewhere() - before > 0


def assert_billed_once(stack: Stack, numbers: range) -> None:
    """Every numbered reading that bills (see :func:`numbered`) billed exactly once, over all replicas."""
    want = Counter(n for n in numbers if n % 3)

    def billed() -> Counter:  # rows of these numbers, from every replica
        rows = (row for envelope in envelopes(stack) for row in envelope["rows"])
        return Counter(
            row["tenant_kwh_usage"]
            for row in rows
            if str(row["tenant_id"]).startswith("replica-t") and row["tenant_kwh_usage"] in numbers
        )

    poll(lambda: set(billed()) >= set(want), 120, "every expected row billed", stack)
    poll(lambda: quiet(stack), 30, "the replicas delivered everything", stack)
    got = billed()
    lost = sum((want - got).values())
    twice = sum(count - 1 for count in got.values() if count > 1)
    assert set(got) <= set(want)
    assert (lost, twice) == (0, 0), f"{lost} rows lost, {twice} billed twice"


def test_a_replica_removed_keeps_its_windows_until_it_is_added_back_and_nothing_is_billed_twice(stack: Stack):
    """The replica count changes (docs/scaling.md, "Autoscaling"): one replica stopped for good (SIGTERM, then
    its daprd) hands its open windows over under its name while the two others take the readings; added back
    mid-stream with its name, it continues those windows and takes its share again. Every reading billed once."""
    victim = REPLICAS[0]
    numbers = range(4001, 4601)
    windows = 6
    per_window = len(numbers) // windows
    start = windows_for(windows)

    window = numbered_windows(numbers, windows, start)

    before = accepted(stack, *REPLICAS)
    publish_windows(stack, window, range(3))
    poll(lambda: accepted(stack, *REPLICAS) - before >= 3 * per_window, 30, "the readings accepted", stack)
    assert stats(stack, victim)["buffered"] > 0  # it holds open windows
    stack.stop_app(victim)  # removed: its shutdown hands its windows over under its name
    stack.apps[victim].sidecar.stop()
    handover = redis_command(stack, "EXISTS", f"{JOINER}||{victim}.open-windows")
    assert handover.strip() == "1", handover
    others = [replica for replica in REPLICAS if replica != victim]
    taken = accepted(stack, *others)
    publish_windows(stack, window, range(3, 5))
    poll(
        lambda: accepted(stack, *others) - taken >= 2 * per_window,
        30,
        "the two others take all",
        stack,
        down=(victim,),  # removed by the test
    )
    stack.restart_replica(victim)  # added back mid-stream, with its name
    poll(lambda: stats(stack, victim)["restored"] > 0, 30, "the windows it handed over taken back", stack)
    tenants, readings = window(5)
    publish_bulk(stack, "redis-stream", "tenants", tenants)
    publish_bulk(stack, "rabbit-stream", "poweruse", readings)
    assert_billed_once(stack, numbers)


def test_a_replica_added_mid_stream_reads_the_tenants_and_takes_its_share(stack: Stack):
    """A fourth replica started in the middle of the stream (a new name: a new Redis consumer group, which
    reads the tenants stream from its start, docs/scaling.md): it takes every tenant record and a share of the
    readings, and every reading is billed once. Runs last: the stack keeps four replicas from then on."""
    numbers = range(5001, 5601)
    windows = 6
    per_window = len(numbers) // windows
    window = numbered_windows(numbers, windows, windows_for(windows))

    before = accepted(stack, *REPLICAS)
    publish_windows(stack, window, range(3))
    poll(lambda: accepted(stack, *REPLICAS) - before >= 3 * per_window, 30, "the readings accepted", stack)
    added = stack.add_replica()
    assert added == f"{JOINER}-3" and stats(stack, added)["replica"] == added
    # its own group starts at the stream's first entry: the records of every earlier test come to it too
    poll(lambda: stats(stack, added)["accepted"].get("tenants", 0) >= 3 * TENANTS, 60, "the history read", stack)
    publish_windows(stack, window, range(3, windows))
    assert_billed_once(stack, numbers)
    assert accepted(stack, added) > 0  # it took a share of the readings published after it came
