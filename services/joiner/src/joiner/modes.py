"""The join modes as strategies behind one interface, :class:`JoinMode`: what the processor does with an
event once it is placed in time, what a window's close makes, and what a handover carries.

* :class:`WindowJoin` (``join: window``): both streams are buffered in their window; a window's close
  pairs them (the engine's generated loops, or the C loop).
* :class:`TableJoin` (``join: table``): the first stream updates a table of versions by event time; the
  second is held in its window and, at the close, joins the version valid at each event's time.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from joiner.config import JoinerConfig, TableJoinConfig
from joiner.engine.join import Accepted, Entry, JoinEngine, WindowState, key_from_json, key_to_json
from joiner.engine.state import StateStore
from joiner.engine.table import VersionedTable
from joiner.engine.windows import TumblingWindows, Window
from joiner.stats import Stats
from streaming_runtime.expressions import compile_expression
from streaming_runtime.logs import printable

log = logging.getLogger("joiner")

TableVersions = list[list[Any]]  # [[key as JSON, [[time, record], ...]], ...]: a handover's table


class JoinMode(Protocol):
    name: str
    batches: bool  # a delivery's entries may go through the engine's loop in one call

    def is_table(self, index: int) -> bool:
        """Whether events of stream ``index`` update the table instead of being windowed."""

    def update(self, data: Any, when: float) -> str:
        """One record of the table stream: "updated", "deleted" or "rejected"; raises MalformedEvent."""

    def accept(self, state: WindowState, index: int, data: Any, event_id: str | None, when: float) -> bool:
        """Buffer one event in its window's ``state``: KEPT or FILTERED_OUT; raises MalformedEvent."""

    def accept_many(self, state: WindowState, index: int, entries: list[Entry], *, kept: bool = False) -> Accepted:
        """A batch, when :attr:`batches` (``kept``: say which entries it kept)."""

    def keeps(self, index: int, data: Any) -> bool:
        """Whether :meth:`accept` would keep the event, without taking it (when :attr:`batches`)."""

    def close(self, window: Window, state: WindowState) -> tuple[int, int]:
        """Make the window's rows (into ``state``); the unmatched events per stream, for the log."""

    def closed_through(self, windows: TumblingWindows) -> None:
        """``windows`` were closed through ``windows.closed_through``: no on-time event can come for a
        window before the one that holds it any more."""

    def held(self, state: WindowState) -> dict[str, list[list[Any]]]:
        """A window's buffered events, as a handover keeps them."""

    def hold(self, state: WindowState, held: dict[str, list[list[Any]]]) -> int:
        """Buffer a handover's events of one window again; the number taken."""

    def table(self) -> TableVersions:
        """The table, as a handover keeps it."""

    def merge_table(self, versions: TableVersions) -> int:
        """Add a handover's table; the number of versions taken."""

    @property
    def table_keys(self) -> int: ...


class WindowJoin:
    name = "window"
    batches = True

    def __init__(self, engine: JoinEngine, stats: Stats) -> None:
        self.engine = engine
        self.stats = stats

    def is_table(self, index: int) -> bool:
        return False

    def update(self, data: Any, when: float) -> str:
        raise TypeError("a window join has no table")

    def accept(self, state: WindowState, index: int, data: Any, event_id: str | None, when: float) -> bool:
        return self.engine.accept(state, index, data, event_id)

    def accept_many(self, state: WindowState, index: int, entries: list[Entry], *, kept: bool = False) -> Accepted:
        return self.engine.accept_many(state, index, entries, kept=kept)

    def keeps(self, index: int, data: Any) -> bool:
        return self.engine.keeps(index, data)

    def close(self, window: Window, state: WindowState) -> tuple[int, int]:
        unmatched = self.engine.unmatched(state)
        for name, count in zip(self.engine.streams, unmatched):
            if count:
                self.stats.unmatched[name] += count
        return unmatched

    def closed_through(self, windows: TumblingWindows) -> None:
        pass

    def held(self, state: WindowState) -> dict[str, list[list[Any]]]:
        return {
            name: [[data, event_id] for data, event_id in self.engine.buffered(state, index)]
            for index, name in enumerate(self.engine.streams)
        }

    def hold(self, state: WindowState, held: dict[str, list[list[Any]]]) -> int:
        count = 0
        for index, name in enumerate(self.engine.streams):
            outcome = self.engine.accept_many(state, index, [(data, event_id) for data, event_id in held.get(name, [])])
            count += outcome.accepted
            for (_, event_id), reason in outcome.malformed:  # the expressions changed since
                self.stats.dropped[name] += 1
                log.warning("handed-over event dropped stream=%s id=%s reason=%s", name, event_id, reason)
        return count

    def table(self) -> TableVersions:
        return []

    def merge_table(self, versions: TableVersions) -> int:
        raise TypeError("a window join has no table")

    @property
    def table_keys(self) -> int:
        return 0


class TableJoin:
    name = "table"
    batches = False  # each event is placed at its own time

    def __init__(self, engine: JoinEngine, config: TableJoinConfig, store: StateStore, stats: Stats) -> None:
        deleted_when = (
            compile_expression(config.table_deleted_when, setting="table.deletedWhen")
            if config.table_deleted_when
            else None
        )
        self.engine = engine
        self.stats = stats
        self.versions = VersionedTable(engine, store, deleted_when)

    def is_table(self, index: int) -> bool:
        return index == 0

    def update(self, data: Any, when: float) -> str:
        outcome = self.versions.update(data, when)
        self.stats.table_updates += outcome == "updated"
        self.stats.table_deletes += outcome != "updated"
        return outcome

    def accept(self, state: WindowState, index: int, data: Any, event_id: str | None, when: float) -> bool:
        return self.versions.accept(state, data, event_id, when)

    def accept_many(self, state: WindowState, index: int, entries: list[Entry], *, kept: bool = False) -> Accepted:
        raise TypeError("a table join takes events one by one, each at its time")

    def keeps(self, index: int, data: Any) -> bool:
        raise TypeError("a table join takes events one by one, each at its time")

    def close(self, window: Window, state: WindowState) -> tuple[int, int]:
        misses = self.versions.join(state)
        if misses:
            streams = self.engine.streams
            self.stats.table_misses += len(misses)
            shown = ", ".join(f"{event_id} (key {key!r})" for event_id, key in misses[:5])
            log.warning(
                "window %s: %d %s event(s) found no %s row at their time, so made no row: %s%s",
                window.id,
                len(misses),
                streams[1],
                streams[0],
                printable(shown, 400),
                " ..." if len(misses) > 5 else "",
            )
        return (0, 0)

    def closed_through(self, windows: TumblingWindows) -> None:
        # an on-time event may still come for the window that holds closed_through, from its start
        self.versions.prune(windows.window_at(windows.closed_through).start)

    def held(self, state: WindowState) -> dict[str, list[list[Any]]]:
        # the joined stream's events with their times; no table events are held in windows
        return {self.engine.streams[1]: [[data, event_id, when] for data, event_id, when in state.timed]}

    def hold(self, state: WindowState, held: dict[str, list[list[Any]]]) -> int:
        events = held.get(self.engine.streams[1], [])
        state.timed.extend((data, event_id, float(when)) for data, event_id, when in events)
        state.count += len(events)
        return len(events)

    def table(self) -> TableVersions:
        return [
            [key_to_json(key), [[when, record] for when, record in versions]]
            for key, versions in self.versions.versions()
        ]

    def merge_table(self, versions: TableVersions) -> int:
        count = 0
        for key, entries in versions:
            self.versions.merge(key_from_json(key), [(float(when), record) for when, record in entries])
            count += len(entries)
        return count

    @property
    def table_keys(self) -> int:
        return self.versions.size


def join_mode(config: JoinerConfig, engine: JoinEngine, store: StateStore, stats: Stats) -> JoinMode:
    if isinstance(config, TableJoinConfig):
        return TableJoin(engine, config, store, stats)
    return WindowJoin(engine, stats)
