"""billable-proc's Prometheus metrics.

The call counters are the ``/stats`` ones (``calls``, ``rejected``, ...), read from its counts at each
scrape, so nothing is counted twice. What ``/stats`` has not, :meth:`BillingMetrics.observe` adds from
each billed call (:class:`~message_proc.calls.BilledCall`): the kWh billed per customer, and how long
after its window's end the call arrived.

Customers are a label, so their number is bounded: the first ``max_customers`` seen get their own series,
the kWh of any other is added under ``customer_id="other"`` (said once in the log). A row without a
customer id (an integer, or a string of at most ``MAX_CUSTOMER_CHARS``) or without a non-negative number
of kWh is billed as any row is, and not added.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from message_proc.calls import BilledCall
from streaming_runtime.metrics import LATENCY_BUCKETS, new_registry

log = logging.getLogger("message-proc")

OTHER = "other"
NUMBERS = (int, float)
CUSTOMER_IDS = (int, str)
MAX_CUSTOMER_CHARS = 64
CALL_COUNTERS = {
    "calls": "calls billed (their rows logged), conflicts included",
    "rows": "rows billed",
    "rejected": "calls refused as such: a body that is not JSON or too large, a header too long (400, 413)",
    "duplicates": "retries of a call billed before (same window-id, window-chunk and body): answered ok, not billed",
    "conflicts": "calls with the window-id and window-chunk of one billed before but other rows: billed, logged as errors",
    "unavailable": "calls not billed because the record of billed calls (PROC_STATE_STORE) was unavailable (503)",
    "unexpected_errors": "calls answered 500 by an error of billable-proc's own",
    "parts": "parts of a window's aggregate from joiner replicas, held to be combined (message_proc.combine)",
    "windows_combined": "windows whose parts were combined and billed once",
    "late_parts": "parts that came after their window was combined: billed on their own",
}


class CallCounters:
    """The ``/stats`` counts, read at each scrape."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        for name, help_text in CALL_COUNTERS.items():
            yield CounterMetricFamily(f"billable_proc_{name}", help_text, value=self.counts.get(name, 0))


class BillingMetrics:
    def __init__(self, counts: Mapping[str, int], max_customers: int) -> None:
        self.registry: CollectorRegistry = new_registry(CallCounters(counts))
        self.max_customers = max_customers
        self.customers: set[str] = set()
        self.capped = False  # once the cap is reached: logged once
        self.kwh = Counter(
            "billable_proc_kwh",
            "kWh billed (tenant_kwh_usage) per customer_id; past PROC_METRICS_MAX_CUSTOMERS customers, under 'other'",
            ["customer_id"],
            registry=self.registry,
        )
        self.window_delay = Histogram(
            "billable_proc_window_delay_seconds",
            "seconds from a billed call's window-end header to its arrival (0 for a window closed before its end)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, call: BilledCall) -> None:
        end = _number(call.headers.get("window-end"))
        if end is not None:
            self.window_delay.observe(max(0.0, call.arrived - end))
        # summed per customer first, then labelled: this runs on every row of every window
        per_customer: dict[Any, float] = {}
        for row in call.rows:
            if type(row) is dict:
                kwh: Any = row.get("tenant_kwh_usage")
                if type(kwh) in NUMBERS and 0 <= kwh < math.inf:  # not bool, NaN or inf
                    customer = row.get("customer_id")
                    if type(customer) in CUSTOMER_IDS:  # not bool; nor a list, which no dict can key
                        per_customer[customer] = per_customer.get(customer, 0) + kwh
        totals: dict[str, float] = {}
        for value, kwh in per_customer.items():
            if (customer := _customer(value)) is not None:
                label = self._label(customer)
                totals[label] = totals.get(label, 0) + kwh
        for label, kwh in totals.items():
            self.kwh.labels(label).inc(kwh)

    def _label(self, customer: str) -> str:
        if customer in self.customers:
            return customer
        if len(self.customers) < self.max_customers:
            self.customers.add(customer)
            return customer
        if not self.capped:
            self.capped = True
            log.warning(
                "more than %d customers billed: the kWh of the others are counted under customer_id=%r in "
                "/metrics (PROC_METRICS_MAX_CUSTOMERS); their rows are billed as usual",
                self.max_customers,
                OTHER,
            )
        return OTHER


def _customer(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_CUSTOMER_CHARS:
        return value
    return None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
