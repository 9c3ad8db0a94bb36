"""``/metrics``: the joiner's counters in the Prometheus text format, read from its stats at each scrape.

The same numbers as ``/stats``, named as Prometheus users expect (``joiner_`` prefix, ``_total`` for
counters, a ``stream`` label per input stream), so that the joiner can be scraped beside daprd's own
metrics. Nothing is counted twice: the collector reads the processor's counters when scraped. The one
metric that is not a figure of ``/stats`` is the histogram of delivery latency, which the sender observes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from streaming_runtime.metrics import LATENCY_BUCKETS, new_registry

PER_STREAM = {
    "accepted": "events taken into a window (or the table)",
    "filtered": "events a condition on their own stream rejected (never in a row)",
    "dropped": "malformed events answered DROP (to the dead-letter topic)",
    "duplicates": "redeliveries recognised by dedup",
    "late": "events for a window already closed",
    "unmatched": "events no event of the other stream shared a key with when their window closed (join: window)",
    "future": "events dropped for an event time beyond eventTime.maxFutureSkew (also in dropped)",
    "bulk_deliveries": "bulk deliveries received",
    "claimed_elsewhere": "events another replica had claimed (a redelivery it bills): answered, not joined",
}
COUNTERS = {
    "windows_closed": "windows closed",
    "windows_split": "windows closed early at maxWindowEvents or maxWindowBytes",
    "windows_idle_closed": "windows closed because input went idle (event time)",
    "rows_made": "rows made by closed windows",
    "rows_emitted": "rows delivered to a target",
    "deliveries_failed": "window deliveries given up after their retries, or that could not be sent (then parked)",
    "windows_resent": "parked windows delivered by a re-send",
    "windows_lost": "undelivered windows given up: parked rows over their bound, or a stop without state.store",
    "unexpected_errors": "errors of the joiner's own met on some input (that delivery was dropped)",
    "late_published": "late events published to the late topic",
    "dead_lettered": "dropped events published to their stream's deadLetter topic",
    "dead_letters_lost": "dropped events whose deadLetter copy could not be queued or published",
    "pair_errors": "pairs whose where or select failed",
    "table_updates": "table records applied (join: table)",
    "table_deletes": "table keys removed (join: table)",
    "table_misses": "events that found no table row at their time when their window closed (join: table)",
    "restored": "events of open windows taken over from the previous run (state.store)",
    "handovers_set_aside": "handovers of open windows this joiner cannot continue (other streams, or damaged): "
    "moved aside in the state store, not taken over",
    "crashes_detected": "starts after a run that ended without stopping (state.store: the run record)",
    "events_lost_in_crash": "events the crashed run held at its last beat (an estimate), lost",
    "claim_failures": "claims of shared-stream events the state store did not answer (those events got RETRY)",
    "claims_unchecked": "replayed events taken in without a claim, the state store not answering (could double)",
}
GAUGES = {
    "buffered": "events held by the open windows",
    "buffered_bytes": "bytes (as delivered) of the events held by the open windows",
    "outbox": "closed windows waiting to be delivered",
    "windows_parked": "windows a target did not take after their retries, kept to be re-sent (/deadletters)",
    "parked_bytes": "bytes (JSON) of the parked windows' rows",
    "table_keys": "keys in the table (join: table)",
}


class StatsCollector:
    """Reads ``stats()`` (the ``/stats`` document) at each scrape."""

    def __init__(self, stats: Callable[[], dict[str, Any]], streams: tuple[str, str], plan: str) -> None:
        self.stats = stats
        self.streams = streams
        self.plan = plan

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        for name, help_text in PER_STREAM.items():
            family = CounterMetricFamily(f"joiner_{name}", help_text, labels=["stream"])
            for stream in self.streams:
                family.add_metric([stream], stats.get(name, {}).get(stream, 0))
            yield family
        for name, help_text in COUNTERS.items():
            yield CounterMetricFamily(f"joiner_{name}", help_text, value=stats.get(name, 0))
        for name, help_text in GAUGES.items():
            yield GaugeMetricFamily(f"joiner_{name}", help_text, value=stats.get(name, 0))
        yield InfoMetricFamily("joiner_plan", "how the join runs (the start-up plan line)", value={"plan": self.plan})


def delivery_latency() -> Histogram:
    """Observed by the sender (:mod:`joiner.sender`) when a target has taken all of a window's rows; not
    registered anywhere until :func:`registry_of` puts it in the app's registry."""
    return Histogram(
        "joiner_delivery_latency_seconds",
        "seconds from a window's close to its rows delivered to a target (parked windows: when re-sent)",
        ["target"],
        buckets=LATENCY_BUCKETS,
        registry=None,
    )


def registry_of(collector: StatsCollector, latency: Histogram) -> CollectorRegistry:
    return new_registry(collector, latency)
