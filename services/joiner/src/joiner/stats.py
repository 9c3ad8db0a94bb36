"""The joiner's counters: what its core counts (:class:`Stats`) and what ``/stats`` and ``/metrics`` read
(:class:`JoinerStats`, the one object both routes take their figures from)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

# what happened to an event offered to the core
ACCEPTED, FILTERED, DUPLICATE, LATE, TABLE = "accepted", "filtered", "duplicate", "late", "table"


@dataclass
class Stats:
    """Counted by the core (:class:`joiner.core.JoinCore`) and its join mode."""

    accepted: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    duplicates: Counter = field(default_factory=Counter)
    late: Counter = field(default_factory=Counter)
    future: Counter = field(default_factory=Counter)  # dropped: event time beyond eventTime.maxFutureSkew
    table_updates: int = 0
    table_deletes: int = 0
    table_misses: int = 0  # join: table: readings that found no table row at their time
    unmatched: Counter = field(default_factory=Counter)  # join: window: events no event of the other stream keyed
    windows_closed: int = 0
    windows_split: int = 0
    windows_idle_closed: int = 0
    rows_made: int = 0
    pair_errors: int = 0
    restored: int = 0  # events of open windows handed over by the previous run (state.store)
    aggregate_ignored: int = 0

    def count(self, outcome: str, stream: str) -> None:
        counter = {
            ACCEPTED: self.accepted,
            FILTERED: self.filtered,
            DUPLICATE: self.duplicates,
            LATE: self.late,
            TABLE: self.accepted,
        }[outcome]
        counter[stream] += 1

    def as_dict(self) -> dict[str, Any]:
        return {name: (dict(value) if isinstance(value, Counter) else value) for name, value in self.__dict__.items()}


class Figures(Protocol):
    """A part of the service that reports figures of its own (the core, the sender, the journal...)."""

    def figures(self) -> dict[str, Any]: ...


class JoinerStats:
    """Every figure of the service, from the parts that keep them: ``/stats`` shows :meth:`as_dict`, and
    ``/metrics`` exposes the same dictionary (:mod:`joiner.metrics`)."""

    def __init__(self, *parts: Figures) -> None:
        self.parts = parts

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in self.parts:
            out.update(part.figures())
        return out
