"""Forgetting redelivered events: a bounded, time-limited memory of the events already accepted.

Dapr delivers at least once: a publisher retry or a redelivery after a lost answer brings the same
event again, and joining it twice would bill twice. The joiner therefore remembers a key per
accepted event (:func:`dedup_key`) for ``ttl_seconds`` and drops an event whose key it still
remembers.

The memory lives in a :class:`~joiner.engine.state.StateStore` namespace (key -> time it was
recorded), so a durable store can carry it over a restart. Because the clock is monotonic, the
store's insertion order is time order: expired entries are always at the front, and each call
removes them from there, so the cost stays O(1) amortised (each entry is removed at most once).
``max_entries`` bounds the memory: when it is full, the oldest entries go first, even before their
TTL, and are counted in ``evicted`` — a rising count means the bound is too small for the TTL and
rate, and a redelivery may then slip through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from typing import Any

from joiner.engine.paths import MISSING, field_at
from joiner.engine.state import StateStore


class Deduplicator:
    """Answers "was this key accepted within the last ``ttl_seconds``?" and records it if not.

    An entry recorded at ``t`` is remembered for ``[t, t + ttl)`` (half-open, like the windows). A
    duplicate does not refresh the time: a key seen continuously is accepted again once per TTL,
    so a stuck redelivery loop cannot keep an entry alive for ever.
    """

    def __init__(
        self,
        store: StateStore,
        namespace: str,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float],
    ) -> None:
        # Guards for the caller: the settings themselves are checked (with ConfigError) by config.
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries!r}")
        self._store = store
        self._namespace = namespace
        self._ttl = float(ttl_seconds)
        self._max_entries = max_entries
        self._clock = clock
        self.duplicates = 0
        """Keys answered True (dropped as redeliveries)."""
        self.evicted = 0
        """Entries forgotten for the ``max_entries`` bound before their TTL ran out."""
        self.expired = 0
        """Entries forgotten because their TTL ran out."""

    def seen(self, key: Hashable | None) -> bool:
        """True when ``key`` was recorded within the TTL (a duplicate); otherwise record it, False.

        ``None`` (what :func:`dedup_key` gives for an event nothing identifies) is never a duplicate
        and is not recorded: otherwise every such event would look like a repeat of the first.
        """
        if key is None:
            return False
        now = self._clock()
        self._forget_expired(now)
        recorded = self._store.get(self._namespace, key, MISSING)
        if recorded is not MISSING:
            if now - recorded < self._ttl:
                self.duplicates += 1
                return True
            # Only reachable if the clock went backwards and left an expired entry behind a newer one.
            self._store.delete(self._namespace, key)
            self.expired += 1
        while self._store.size(self._namespace) >= self._max_entries:
            oldest = next(self._store.items(self._namespace))
            self._store.delete(self._namespace, oldest[0])
            self.evicted += 1
        self._store.put(self._namespace, key, now)
        return False

    def entries(self) -> list[tuple[Hashable, float]]:
        """``(key, time recorded)`` of what it remembers, oldest first (for a handover)."""
        return list(self._store.items(self._namespace))

    def merge(self, entries: list[tuple[Hashable, float]]) -> None:
        """Remember ``entries`` too (a previous run's), keeping the time order the expiry relies on;
        the earlier time wins for a key both have, and the bound holds."""
        merged: dict[Hashable, float] = {}
        for key, recorded in [*self.entries(), *entries]:
            merged[key] = min(recorded, merged.get(key, recorded))
        for key, _ in self.entries():
            self._store.delete(self._namespace, key)
        ordered = sorted(merged.items(), key=lambda item: item[1])
        self.evicted += max(0, len(ordered) - self._max_entries)
        for key, recorded in ordered[-self._max_entries :]:
            self._store.put(self._namespace, key, recorded)

    def __len__(self) -> int:
        """Entries currently remembered (expired ones are removed on the next ``seen``)."""
        return self._store.size(self._namespace)

    def _forget_expired(self, now: float) -> None:
        while True:
            oldest = next(self._store.items(self._namespace), None)
            if oldest is None or now - oldest[1] < self._ttl:
                return
            self._store.delete(self._namespace, oldest[0])
            self.expired += 1


def dedup_key(stream: str, event_id: str | None, data: Any, key_field: str | None) -> Hashable | None:
    """The key that identifies an event for deduplication, or None when nothing identifies it.

    * ``(stream, "field", (type name, value))`` when ``key_field`` (a dotted path into the event's
      data, e.g. ``reading.id``) is configured and holds a non-null value. The type name keeps
      ``1``, ``1.0`` and ``True`` apart (Python would consider them equal keys); a list or object
      value is keyed by its canonical JSON (sorted keys), so equal content gives equal keys.
    * ``(stream, "id", event_id)`` otherwise, when the CloudEvent has a non-empty id. Publishers
      reuse the id on retry, and daprd's redelivery keeps it.
    * ``None`` when neither exists: such an event cannot be deduplicated and must be accepted.

    The stream is part of the key because ids and key values are only unique within a stream.
    Every key is made of str, int, float and bool, so a durable store can encode it as JSON.
    """
    if key_field:
        value = field_at(data, key_field.split("."))
        if value is not MISSING and value is not None:
            return (stream, "field", _typed(value))
    if event_id:
        return (stream, "id", event_id)
    return None


def _typed(value: Any) -> tuple[str, Any]:
    if isinstance(value, (str, int, float)):  # bool is an int: its type name keeps it apart
        return (type(value).__name__, value)
    return (
        type(value).__name__,
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr),
    )
