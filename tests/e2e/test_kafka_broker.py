"""The private Kafka broker of devstack (``start_kafka``), on the real thing: Apache Kafka at the version of
kafka.version, from Maven Central (scripts/install-kafka.sh), one node in KRaft mode on loopback.

It is spoken to with Kafka's own tools on the same jars (the console producer and consumer, run by java)
and with devstack's Metadata request: no Kafka client library in the project.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.brokers import Broker
from devstack.kafka import kafka_java, kafka_metadata, start_kafka
from devstack.processes import port_open

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def kafka(tmp_path_factory) -> Iterator[Broker]:
    broker = start_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()


def produce(broker: Broker, topic: str, records: list[tuple[str, str]]) -> None:
    lines = "".join(f"{key}|{value}\n" for key, value in records)
    argv = kafka_java(
        "org.apache.kafka.tools.ConsoleProducer",
        *("--bootstrap-server", broker.url, "--topic", topic),
        *("--reader-property", "parse.key=true", "--reader-property", "key.separator=|"),
        *("--producer-property", "acks=all"),
    )
    done = subprocess.run(argv, input=lines, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def consume(broker: Broker, topic: str, count: int) -> list[tuple[int, str, str]]:
    """The first ``count`` records of ``topic``: (partition, key, value)."""
    argv = kafka_java(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        *("--bootstrap-server", broker.url, "--topic", topic, "--from-beginning"),
        *("--max-messages", str(count), "--timeout-ms", "30000"),
        *("--formatter-property", "print.key=true", "--formatter-property", "print.partition=true"),
        *("--formatter-property", "key.separator=|", "--group", f"test-{uuid.uuid4().hex[:8]}"),
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = []
    for line in done.stdout.splitlines():
        partition, key, value = line.split("|", 2)  # Partition:N|key|value
        records.append((int(partition.removeprefix("Partition:")), key, value))
    return records


def test_it_runs_in_kraft_mode_and_answers_metadata(kafka: Broker) -> None:
    metadata = kafka_metadata(kafka.port)
    assert metadata.brokers == {1: kafka.url}
    assert metadata.cluster_id
    assert kafka.process is not None
    assert "[KafkaRaftServer nodeId=1] Kafka Server started" in kafka.process.log_path.read_text()
    assert kafka.secrets == {"KAFKA_BROKERS": kafka.url}


def test_a_topic_is_created_on_first_produce_with_three_partitions_and_gives_back_what_was_produced(
    kafka: Broker,
) -> None:
    topic = f"tenants-{uuid.uuid4().hex[:8]}"
    assert topic not in kafka_metadata(kafka.port).partitions
    produce(kafka, topic, [("dc:eqix:us:chi1:12", '{"tenant_id":"dc:eqix:us:chi1:12","customer_id":924}')])
    assert kafka_metadata(kafka.port, [topic]).partitions == {topic: 3}
    [(_, key, value)] = consume(kafka, topic, 1)
    assert (key, value) == ("dc:eqix:us:chi1:12", '{"tenant_id":"dc:eqix:us:chi1:12","customer_id":924}')


def test_one_key_lands_in_the_same_partition_of_two_topics(kafka: Broker) -> None:
    """Co-partitioning: with equal partition counts, Kafka's default partitioner (murmur2 of the key) puts a
    key in the same partition number of every topic."""
    keys = [f"dc:t{i}" for i in range(12)]
    placed = {}
    for name in ("tenants", "poweruse"):
        topic = f"{name}-{uuid.uuid4().hex[:8]}"
        produce(kafka, topic, [(key, name) for key in keys])
        placed[name] = {key: partition for partition, key, _ in consume(kafka, topic, len(keys))}
    assert placed["tenants"] == placed["poweruse"]
    assert set(placed["tenants"]) == set(keys)
    assert len(set(placed["tenants"].values())) > 1  # spread over the partitions, not all in one


def test_it_stops_cleanly_and_leaves_no_java_process(tmp_path: Path) -> None:
    broker = start_kafka(tmp_path)
    assert broker.process is not None and broker.process.pid is not None
    pid = broker.process.pid
    broker.stop()
    assert broker.process.death() is not None
    assert not port_open(broker.port)
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(tmp_path).encode() in cmdline:
                left.append(int(entry.name))
    assert left == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
