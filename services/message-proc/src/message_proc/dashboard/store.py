"""What the dashboard shows of billing: the billed rows of the last hour of windows, per window and customer.

Fed from billable-proc's billed-call path (after a call is billed; a retry is a duplicate and never comes
here). A window sent in several chunks (``window-chunk``) is one window: its chunks add up. Memory is
bounded twice: windows whose end is more than ``horizon`` before the newest window's end are dropped, and
the oldest windows go first while more than ``max_windows`` windows or ``max_entries`` figures
(window, customer, tenant) are kept. The horizon is measured in the windows' own time, so a replay of old
windows is shown as it comes, not dropped at once.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HORIZON_SECONDS = 3600.0
MAX_WINDOWS = 3600  # an hour of 1 s windows
MAX_ENTRIES = 50_000  # (window, customer, tenant) figures
TABLE_WINDOWS = 20  # the newest windows listed row by row
CHART_CUSTOMERS = 8  # the customers with the most kWh get a line of the chart each
NO_CUSTOMER = "(none)"  # a row without customer_id or tenant_id


@dataclass
class Figures:
    readings: int = 0
    kwh: float = 0.0


@dataclass
class Window:
    key: str
    id: str | None
    start: float | None
    end: float
    received: float  # when its last chunk was billed (epoch seconds)
    calls: int = 0
    # customer -> tenant -> figures
    customers: dict[str, dict[str, Figures]] = field(default_factory=dict)
    entries: int = 0

    def add(self, rows: list[Any]) -> int:
        """Count ``rows`` in; returns how many new (customer, tenant) figures that made."""
        made = 0
        for row in rows:
            customer, tenant, kwh = _fields(row)
            tenants = self.customers.setdefault(customer, {})
            figures = tenants.get(tenant)
            if figures is None:
                figures = tenants[tenant] = Figures()
                made += 1
            figures.readings += 1
            figures.kwh += kwh
        self.entries += made
        return made


class BillingStore:
    def __init__(
        self, horizon: float = HORIZON_SECONDS, max_windows: int = MAX_WINDOWS, max_entries: int = MAX_ENTRIES
    ) -> None:
        self.horizon = horizon
        self.max_windows = max_windows
        self.max_entries = max_entries
        self.windows: OrderedDict[str, Window] = OrderedDict()  # in order of arrival
        self.entries = 0
        self.newest_end: float | None = None
        self.last_billed: float | None = None  # epoch seconds of the last billed call
        # end - start of the newest window that said its start (else the gaps between window ends tell)
        self.window_seconds: float | None = None
        self.version = 0  # counts the changes: what a stream of events waits on
        self.evicted = 0
        self._calls = 0
        self._snapshot: tuple[tuple[int, int, int], dict[str, Any]] | None = None  # the last one, by version

    def add(self, headers: Mapping[str, str], rows: list[Any], received: float) -> None:
        """A billed call: ``headers`` are its window-id, window-end and window-start (any may be missing),
        ``rows`` the rows of its body (message_proc.calls.rows_of)."""
        self._calls += 1
        end = _number(headers.get("window-end"))
        start = _number(headers.get("window-start"))
        window_id = headers.get("window-id")
        key = window_id if window_id is not None else (f"end:{end}" if end is not None else f"call:{self._calls}")
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = Window(key, window_id, start, end if end is not None else received, received)
        window.received = received
        window.calls += 1
        self.entries += window.add(rows)
        if start is not None and end is not None and end > start:
            self.window_seconds = end - start
        self.newest_end = window.end if self.newest_end is None else max(self.newest_end, window.end)
        self.last_billed = received
        self._evict(keep=key)
        self.version += 1

    def _evict(self, keep: str) -> None:
        assert self.newest_end is not None
        # from the oldest arrival on: windows come in order of their end but for a late or re-sent one,
        # which the snapshot leaves out once past the horizon and which goes when it reaches the front
        cutoff = self.newest_end - self.horizon
        while self.windows and next(iter(self.windows.values())).end < cutoff:
            self._drop(next(iter(self.windows)))
        while len(self.windows) > 1 and (len(self.windows) > self.max_windows or self.entries > self.max_entries):
            oldest = next(iter(self.windows))
            self._drop(oldest if oldest != keep else list(self.windows)[1])

    def _drop(self, key: str) -> None:
        self.entries -= self.windows.pop(key).entries
        self.evicted += 1

    def snapshot(self, table_windows: int = TABLE_WINDOWS, chart_customers: int = CHART_CUSTOMERS) -> dict[str, Any]:
        """The figures as JSON: totals per customer over the kept windows, the newest windows row by row,
        and the chart's series (kWh per window of the customers with the most kWh)."""
        if self._snapshot is not None and self._snapshot[0] == (self.version, table_windows, chart_customers):
            return self._snapshot[1]
        cutoff = (self.newest_end or 0.0) - self.horizon
        windows = sorted((w for w in self.windows.values() if w.end >= cutoff), key=lambda w: w.end)
        totals: dict[str, dict[str, Any]] = {}
        tenants_of: dict[str, set[str]] = {}
        for window in windows:
            for customer, tenants in window.customers.items():
                total = totals.setdefault(customer, {"customer": customer, "windows": 0, "readings": 0, "kwh": 0.0})
                total["windows"] += 1
                total["readings"] += sum(f.readings for f in tenants.values())
                total["kwh"] += sum(f.kwh for f in tenants.values())
                tenants_of.setdefault(customer, set()).update(tenants)
        for customer, total in totals.items():
            total["tenants"] = len(tenants_of[customer])
            total["kwh"] = _rounded(total["kwh"])
        ranked = sorted(totals.values(), key=lambda t: (-t["kwh"], t["customer"]))
        charted = [t["customer"] for t in ranked[:chart_customers]]
        snapshot = {
            "horizon_seconds": self.horizon,
            "window_seconds": self.window_seconds or _spacing(windows),
            "windows_kept": len(windows),
            "windows_evicted": self.evicted,
            "entries": self.entries,
            "newest_end": self.newest_end,
            "last_billed": self.last_billed,
            "customers": sorted(totals.values(), key=lambda t: _order(t["customer"])),
            "latest": [_window_rows(w) for w in reversed(windows[-table_windows:])],
            "chart": {
                "ends": [w.end for w in windows],
                "series": {
                    customer: [_rounded(sum(f.kwh for f in w.customers.get(customer, {}).values())) for w in windows]
                    for customer in charted
                },
                "more_customers": max(0, len(ranked) - len(charted)),
            },
        }
        self._snapshot = ((self.version, table_windows, chart_customers), snapshot)
        return snapshot


def _window_rows(window: Window) -> dict[str, Any]:
    return {
        "id": window.id,
        "start": window.start,
        "end": window.end,
        "received": window.received,
        "calls": window.calls,
        "rows": [
            {
                "customer": customer,
                "tenants": len(tenants),
                "readings": sum(f.readings for f in tenants.values()),
                "kwh": _rounded(sum(f.kwh for f in tenants.values())),
            }
            for customer, tenants in sorted(window.customers.items(), key=lambda item: _order(item[0]))
        ],
    }


def _fields(row: Any) -> tuple[str, str, float]:
    """(customer, tenant, kWh) of a row; what a row lacks is NO_CUSTOMER or 0 kWh, never an error."""
    if not isinstance(row, dict):
        return NO_CUSTOMER, NO_CUSTOMER, 0.0
    customer = row.get("customer_id")
    tenant = row.get("tenant_id")
    kwh = _number(row.get("tenant_kwh_usage"))
    return (
        NO_CUSTOMER if customer is None else str(customer)[:200],
        NO_CUSTOMER if tenant is None else str(tenant)[:200],
        kwh if kwh is not None else 0.0,
    )


def _number(value: Any) -> float | None:
    """A finite number from a JSON value or a header's text; None for anything else (booleans too)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _rounded(kwh: float) -> float | int:
    value = round(float(kwh), 6)
    return int(value) if value.is_integer() else value


def _order(customer: str) -> tuple[int, float, str]:
    """Numeric ids in numeric order, then the others by text."""
    number = _number(customer)
    return (0, number, customer) if number is not None else (1, 0.0, customer)


def _spacing(windows: list[Window]) -> float | None:
    """The window length when no window said its start: the smallest gap between window ends."""
    gaps = [b.end - a.end for a, b in zip(windows, windows[1:]) if b.end > a.end]
    return min(gaps) if gaps else None
