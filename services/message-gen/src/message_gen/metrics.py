"""message-gen's Prometheus metrics: what it published to CLUSTER_STREAM/STREAM_TOPIC, and how long each
publish took. The labels ``pubsub`` and ``topic`` are the generator's settings: one series each per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from streaming_runtime.metrics import new_registry

LABELS = ("pubsub", "topic")
# one publish through the local sidecar: about a millisecond, seconds when the broker is slow
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GeneratorMetrics:
    def __init__(self, pubsub: str, topic: str) -> None:
        self.registry: CollectorRegistry = new_registry()
        published = Counter(
            "message_gen_published",
            "messages the sidecar took (each message of a bulk publish counts)",
            LABELS,
            registry=self.registry,
        )
        failures = Counter(
            "message_gen_publish_failures",
            "publishes that failed (the sidecar refused, or MESSAGE_EXPR failed on a message): tried again next tick",
            LABELS,
            registry=self.registry,
        )
        duration = Histogram(
            "message_gen_publish_duration_seconds",
            "seconds each publish call to the sidecar took (one message or a bulk), failed ones too",
            LABELS,
            buckets=PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self.published = published.labels(pubsub, topic)
        self.failures = failures.labels(pubsub, topic)
        self.duration = duration.labels(pubsub, topic)
