"""Two joiner replicas' parts of one window (docs/scaling.md): the dashboard adds them up, and the devstack's
copy of the resources gives each replica a Redis consumer group of its own."""

from __future__ import annotations

from pathlib import Path

import yaml

from devstack.resources import broadcast_tables, kafka_streams
from message_proc.dashboard.store import BillingStore

ROOT = Path(__file__).resolve().parents[2]


def test_the_dashboard_adds_the_parts_of_one_window_from_two_replicas():
    store = BillingStore()
    window = {"window-id": "1700000000000", "window-start": "1700000000.0", "window-end": "1700000020.0"}
    store.add(
        {**window, "window-chunk": "1/1", "window-source": "r-0"},
        [{"customer_id": 924, "tenant_id": "a", "tenant_kwh_usage": 10}],
        1.0,
    )
    store.add(
        {**window, "window-chunk": "1/1", "window-source": "r-1"},
        [{"customer_id": 924, "tenant_id": "b", "tenant_kwh_usage": 5}],
        2.0,
    )
    [latest] = store.snapshot()["latest"]
    assert (latest["id"], latest["calls"]) == ("1700000000000", 2)
    assert latest["rows"] == [{"customer": "924", "tenants": 2, "readings": 2, "kwh": 15}]


def test_the_devstack_gives_each_replica_a_redis_consumer_group_of_its_own(tmp_path):
    copy = broadcast_tables(ROOT / "components", tmp_path / "resources")
    redis = yaml.safe_load((copy / "redis-stream.yaml").read_text())
    metadata = {item["name"]: item.get("value") for item in redis["spec"]["metadata"]}
    assert metadata["consumerID"] == "{podName}"
    # RabbitMQ keeps the app id's consumerID: one queue, the readings shared among the replicas
    assert (copy / "rabbit-stream.yaml").read_text() == (ROOT / "components" / "rabbit-stream.yaml").read_text()
    assert "consumerID" not in (ROOT / "components" / "redis-stream.yaml").read_text()  # the original untouched


def test_the_kafka_profile_puts_both_streams_on_one_kafka_component(tmp_path):
    copy = kafka_streams(ROOT / "components", tmp_path / "resources", "127.0.0.1:9092")
    assert not (copy / "redis-stream.yaml").exists() and not (copy / "rabbit-stream.yaml").exists()
    kafka = yaml.safe_load((copy / "kafka-stream.yaml").read_text())
    metadata = {item["name"]: item["value"] for item in kafka["spec"]["metadata"]}
    assert kafka["spec"]["type"] == "pubsub.kafka" and metadata["brokers"] == "127.0.0.1:9092"
    assert metadata["consumerGroupRebalanceStrategy"] == "range" and "consumerGroup" not in metadata
    subscriptions = list(yaml.safe_load_all((copy / "subscriptions.yaml").read_text()))
    assert {s["spec"]["pubsubname"] for s in subscriptions} == {"kafka-stream"}
    assert not [s for s in subscriptions if "deadLetterTopic" in s["spec"]]  # Kafka would dead-letter a RETRY
    assert (copy / "joiner-state.yaml").exists()  # the state stores stay on Redis
