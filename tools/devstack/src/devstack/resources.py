"""The run's copy of the Dapr resources (``components/``), changed for what the run is: several joiner
replicas (:func:`broadcast_tables`), or the streams on Kafka instead of Redis and RabbitMQ
(:func:`kafka_streams`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

KAFKA_PUBSUB = "kafka-stream"
STREAM_PUBSUBS = ("redis-stream", "rabbit-stream")  # what the Kafka profile replaces


def broadcast_tables(resources: Path, into: Path) -> Path:
    """A copy of ``resources`` in ``into`` where each Redis pub/sub component's ``consumerID`` is
    ``{podName}``: each replica its own consumer group, so every replica reads every tenant record (daprd
    reads the template from its ``POD_NAME``, which the stack gives each sidecar)."""
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(resources, into)
    for path in sorted(into.glob("*.yaml")):
        documents = list(yaml.safe_load_all(path.read_text()))
        changed = False
        for document in documents:
            spec = document.get("spec") if isinstance(document, dict) else None
            if not isinstance(spec, dict) or spec.get("type") != "pubsub.redis":
                continue
            items = [item for item in spec.setdefault("metadata", []) if item.get("name") != "consumerID"]
            spec["metadata"] = [*items, {"name": "consumerID", "value": "{podName}"}]
            changed = True
        if changed:
            path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return into


def kafka_streams(resources: Path, into: Path, brokers: str) -> Path:
    """A copy of ``resources`` in ``into`` with both streams on one Kafka pub/sub (``kafka-stream``, at
    ``brokers``) instead of Redis and RabbitMQ: one component, so that daprd consumes both topics in one
    consumer group session and Kafka's range assignment gives partition *i* of both to the same replica (each
    replica owns its keys: co-partitioned, docs/scaling.md). The consumer group is the app id (Dapr's
    default), shared by the replicas. The Subscriptions read from it, without deadLetterTopic: with Kafka,
    daprd sends a message the app answers RETRY to the dead-letter topic instead of delivering it again."""
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(resources, into)
    for name in STREAM_PUBSUBS:
        (into / f"{name}.yaml").unlink(missing_ok=True)
    component = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": KAFKA_PUBSUB},
        "spec": {
            "type": "pubsub.kafka",
            "version": "v1",
            "metadata": [
                {"name": "brokers", "value": brokers},
                {"name": "authType", "value": "none"},
                {"name": "initialOffset", "value": "oldest"},  # a new group reads what was published before it
                {"name": "consumerGroupRebalanceStrategy", "value": "range"},  # co-partitioning needs range
            ],
        },
        "scopes": ["tenants-gen", "poweruse-gen", "join-tenants-poweruse"],
    }
    (into / f"{KAFKA_PUBSUB}.yaml").write_text(yaml.safe_dump(component, sort_keys=False))
    path = into / "subscriptions.yaml"
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document]
    for document in documents:
        spec = document.get("spec", {})
        if spec.get("pubsubname") in STREAM_PUBSUBS:
            spec["pubsubname"] = KAFKA_PUBSUB
            spec.pop("deadLetterTopic", None)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return into
