"""Three joiner replicas on Kafka (docs/scaling.md): both streams on one `pubsub.kafka` component of the real
daprd, a real Kafka broker in KRaft mode (devstack.kafka) with 3 partitions per topic, every tenant record
and reading keyed by its ``tenant_id``. Each replica owns the keys of its partitions (range assignment gives
partition *i* of both topics to one replica): no tenant is broadcast (``JOINER_BROADCAST=none``), and the
rows of all replicas together are what one joiner makes of the same inputs."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from devstack.kafka import kafka_java
from devstack.stack import Stack
from tests.e2e.support import poll, publish_bulk, publisher_stack
from tests.e2e.test_replicas import (
    JOINER,
    JOINER_ENV,
    REPLICAS,
    canonical,
    envelopes,
    one_joiner,
    quiet,
    stamped,
    stats,
    windows_for,
)

pytestmark = pytest.mark.e2e

KAFKA = "kafka-stream"
TENANTS = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("replicas-kafka")
    overrides = {JOINER: {**JOINER_ENV, "JOINER_BROADCAST": "none"}}
    with publisher_stack(
        run_dir, ("billable-proc", JOINER), overrides, joiner_replicas=3, streams_on="kafka"
    ) as running:
        poll(lambda: group_settled(running), 90, "each replica assigned a partition of both topics", running)
        yield running


def group_settled(stack: Stack) -> bool:
    """The joiner's consumer group has a member per replica, each with one partition of each topic."""
    assert stack.kafka is not None
    described = subprocess.run(
        kafka_java(
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            stack.kafka.url,
            "--describe",
            "--group",
            JOINER,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    owners: dict[str, set[str]] = {}
    for line in described.splitlines():
        fields = line.split()
        partition_line = len(fields) >= 7 and fields[1] in ("tenants", "poweruse") and re.fullmatch(r"\d+", fields[2])
        if partition_line and fields[6] != "-":  # CONSUMER-ID: "-" while the partition has no owner
            owners.setdefault(fields[1], set()).add(fields[6])
    return len(owners.get("tenants", ())) == 3 and owners.get("tenants") == owners.get("poweruse")


def test_three_replicas_on_kafka_each_own_their_keys_and_bill_what_one_joiner_makes(stack: Stack):
    windows = 3
    start = windows_for(windows)
    tenants: list[dict] = []
    readings: list[dict] = []
    for k in range(windows):
        at = start + k * 2.0
        tenants += stamped([{"tenant_id": f"kafka-t{n}", "customer_id": 8000 + n} for n in range(TENANTS)], at, 10)
        readings += stamped(
            [{"tenant_id": f"kafka-t{n % TENANTS}", "power_use": 1.5, "kwh_use": 100 * k + n} for n in range(60)],
            at,
            50,
        )
    before = {replica: stats(stack, replica) for replica in REPLICAS}
    for k in range(windows):
        publish_bulk(stack, KAFKA, "tenants", tenants[k * TENANTS : (k + 1) * TENANTS], key="tenant_id")
        publish_bulk(stack, KAFKA, "poweruse", readings[k * 60 : (k + 1) * 60], key="tenant_id")
    want = one_joiner(tenants, readings)
    assert len(want) == windows and all(want.values())

    def billed() -> dict[str, Counter]:
        got: dict[str, Counter] = {}
        for envelope in envelopes(stack):
            if envelope["window_id"] in want:
                got.setdefault(envelope["window_id"], Counter()).update(canonical(row) for row in envelope["rows"])
        return got

    poll(lambda: billed() == want, 90, "every window's rows billed from the replicas", stack)
    poll(lambda: quiet(stack), 30, "the replicas delivered everything", stack)
    assert billed() == want
    taken = {
        replica: stats(stack, replica)["accepted"].get("tenants", 0) - before[replica]["accepted"].get("tenants", 0)
        for replica in REPLICAS
    }
    # partitioned, not broadcast: each tenant record reached one replica, and more than one replica had some
    assert sum(taken.values()) == len(tenants), taken
    assert sum(1 for count in taken.values() if count) >= 2, taken
