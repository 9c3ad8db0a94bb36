"""The joiner's stream processing, without I/O: what the service and ``joiner replay`` both run.

Per event: deduplicate (CloudEvent id, or a configured key field), place it in time (event time
or arrival; an event time too far ahead of the clock is bad input), set late ones aside, then
either update the table (``join: table``, first stream) or join it in its window. Windows close
when the clock (processing time) or the watermark (event time) passes their end, when input has
been idle, when they reach ``maxWindowEvents`` or ``maxWindowBytes``, or on ``flush``. A closed
window's rows are aggregated if configured and handed to ``on_window``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from joiner.config import JoinerConfig
from joiner.engine.aggregate import aggregate, parse_aggregate
from joiner.engine.dedup import Deduplicator, dedup_key
from joiner.engine.eventtime import Watermark, event_time, time_problem
from joiner.engine.join import JoinEngine, WindowState, key_from_json, key_to_json
from joiner.engine.state import MemoryStore, StateStore
from joiner.engine.table import TableJoin
from joiner.engine.windows import TumblingWindows, Window
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.expressions import compile_expression
from streaming_runtime.logs import ErrorReport, printable

log = logging.getLogger("joiner")

ACCEPTED, FILTERED, DUPLICATE, LATE, TABLE = "accepted", "filtered", "duplicate", "late", "table"
HANDOVER_VERSION = 1


@dataclass
class Stats:
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


@dataclass(frozen=True)
class LateEvent:
    stream: str
    id: str | None
    event_time: float
    window: Window
    data: Any

    def as_record(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "id": self.id,
            "event_time": self.event_time,
            "window_start": self.window.start,
            "window_end": self.window.end,
            "data": self.data,
        }


def _finite(value: float) -> float | None:
    """JSON has no infinity: None stands for 'nothing yet'."""
    return value if math.isfinite(value) else None


def _as_key(value: Any) -> Any:
    """A dedup key back from JSON, where its tuples became lists."""
    return tuple(_as_key(part) for part in value) if isinstance(value, list) else value


def build_engine(config: JoinerConfig) -> JoinEngine:
    """Compile both expressions (ConfigError on a parse error) and plan the join."""
    where = compile_expression(config.where, setting=config.where_setting)
    select = compile_expression(config.select, setting=config.select_setting)
    return JoinEngine((config.sources[0].name, config.sources[1].name), where, select)


class Processor:
    def __init__(
        self,
        config: JoinerConfig,
        engine: JoinEngine,
        on_window: Callable[[Window, list[Any]], None],
        on_late: Callable[[LateEvent], None] = lambda late: None,
        clock: Callable[[], float] | None = None,
        store: StateStore | None = None,
        errors: ErrorReport | None = None,
    ) -> None:
        import time

        self.config = config
        self.engine = engine
        self.streams = engine.streams
        self.on_window = on_window
        self.on_late = on_late
        self.clock = clock or time.time
        self.store = store or MemoryStore()
        self.errors = errors or ErrorReport(log)
        self.stats = Stats()
        self.windows = TumblingWindows(config.window_seconds, engine.new_state, self.store)
        self.time_spec = config.event_time
        self.watermark = Watermark(self.time_spec.grace if self.time_spec else 0.0)
        self.idle_after = (
            (self.time_spec.idle or config.window_seconds + self.time_spec.grace) if self.time_spec else None
        )
        self.last_arrival = self.clock()
        self.table = (
            TableJoin(
                engine,
                self.store,
                compile_expression(config.table_deleted_when, setting="table.deletedWhen")
                if config.table_deleted_when
                else None,
            )
            if config.join_mode == "table"
            else None
        )
        self.dedup = (
            Deduplicator(self.store, "dedup", config.dedup_ttl, config.dedup_max_entries, self.clock)
            if config.dedup_ttl
            else None
        )
        self.aggregate_spec = parse_aggregate(config.aggregate) if config.aggregate is not None else None

    @classmethod
    def check_config(cls, config: JoinerConfig, engine: JoinEngine) -> None:
        """Raise ConfigError now (before the server starts) for what only the processor validates:
        aggregate, table.deletedWhen, a table join without a key."""
        cls(config, engine, on_window=lambda window, rows: None)

    @contextlib.contextmanager
    def clock_at(self, now: float) -> Iterator[None]:
        """The clock reads ``now`` meanwhile: one delivery taken in at one time (as the journal records it,
        and as its replay takes it in again)."""
        saved = self.clock
        self.clock = lambda: now
        try:
            yield
        finally:
            self.clock = saved

    @property
    def event_time_mode(self) -> bool:
        return self.time_spec is not None

    def describe(self) -> str:
        time_mode = (
            f"event time from {'.'.join(self.time_spec.field)} (grace {self.time_spec.grace:g}s, idle {self.idle_after:g}s)"
            if self.time_spec
            else "processing time"
        )
        extras = [
            f"join: {self.config.join_mode}",
            time_mode,
            f"dedup {self.config.dedup_ttl:g}s" if self.dedup is not None else "no dedup",
            "aggregate" if self.aggregate_spec else "rows as selected",
        ]
        return f"{self.engine.describe()}; " + "; ".join(extras)

    # -- events ---------------------------------------------------------------------------------

    def offer(
        self, index: int, data: Any, event_id: str | None = None, cloudevent_time: str | None = None, size: int = 0
    ) -> str:
        """Take one event of stream ``index`` (``size``: its bytes as delivered, for maxWindowBytes);
        returns its outcome, raises MalformedEvent."""
        stream = self.streams[index]
        arrival = self.clock()
        self.last_arrival = arrival
        when = event_time(self.time_spec, data, cloudevent_time, arrival)
        if self.time_spec is not None and (problem := time_problem(self.time_spec, when, arrival)) is not None:
            if when > arrival:
                self.stats.future[stream] += 1
            raise MalformedEvent(f"{stream} event: {problem}")
        if self.dedup is not None:  # after the checks: an event refused as bad is not remembered as seen
            key = dedup_key(stream, event_id, data, self.config.dedup_key_fields.get(stream))
            if key is not None and self.dedup.seen(key):
                self.stats.duplicates[stream] += 1
                return DUPLICATE
        if self.table is not None and index == 0:
            outcome = self.table.update(data, when)
            self.stats.accepted[stream] += 1
            self.stats.table_updates += outcome == "updated"
            self.stats.table_deletes += outcome != "updated"
            if outcome != "rejected":
                self._observe(when)
            return TABLE
        if self.windows.is_late(when):
            late = LateEvent(stream, event_id, when, self.windows.window_at(when), data)
            self.stats.late[stream] += 1
            log.warning(
                "late event stream=%s id=%s event_time=%s window=%s (closed)", stream, event_id, when, late.window.id
            )
            self.on_late(late)
            return LATE
        window, state = self.windows.state_at(when)
        if self.table is not None:
            kept = self.table.accept(state, data, event_id, when)
        else:
            kept = self.engine.accept(state, index, data, event_id)
        self.stats.count(ACCEPTED if kept else FILTERED, stream)
        if not kept:
            return FILTERED  # nor does it move the watermark: only events that can be joined do
        state.bytes += size
        self._split_if_full(window, state)
        self._observe(when)
        return ACCEPTED

    def offer_many(
        self, index: int, entries: list[tuple[Any, str | None, str | None]], size: int = 0
    ) -> list[str | MalformedEvent]:
        """Take a batch of ``(data, id, cloudevent time)`` (``size``: the bytes of the delivery, shared
        among its entries); an outcome (or the MalformedEvent) per entry.

        In processing time with a window join, the batch goes through the engine's generated loop in
        one call (after dedup, which takes out the entries it remembers: a redelivered bulk is joined
        once); otherwise event by event, where an error of our own costs its entry alone."""
        share = size // len(entries) if entries else 0
        if self.event_time_mode or self.table is not None:
            outcomes: list[str | MalformedEvent] = []
            for data, event_id, ce_time in entries:
                try:
                    outcomes.append(self.offer(index, data, event_id, ce_time, share))
                except MalformedEvent as error:
                    outcomes.append(error)
                except Exception as error:  # noqa: BLE001 - the entries before it are buffered: not all DROP
                    self.errors(f"an event of {self.streams[index]}", error, f"id {printable(event_id, 80)}")
                    outcomes.append(MalformedEvent(f"an error of the joiner's own ({type(error).__name__})"))
            return outcomes
        stream = self.streams[index]
        self.last_arrival = now = self.clock()
        window, state = self.windows.state_at(now)
        answers: list[str | MalformedEvent] = [ACCEPTED] * len(entries)
        batch, positions = [], []
        key_field = self.config.dedup_key_fields.get(stream)
        for position, (data, event_id, _) in enumerate(entries):
            if self.dedup is not None and self.dedup.seen(dedup_key(stream, event_id, data, key_field)):
                self.stats.duplicates[stream] += 1
                answers[position] = DUPLICATE
                continue
            batch.append((data, event_id))
            positions.append(position)
        outcome = self.engine.accept_many(state, index, batch)
        self.stats.accepted[stream] += outcome.accepted
        self.stats.filtered[stream] += outcome.filtered
        state.bytes += share * outcome.accepted
        self._split_if_full(window, state)
        # the engine counts filtered events but does not name them: both are answered SUCCESS
        where = {id(entry): position for entry, position in zip(batch, positions)}
        for entry, reason in outcome.malformed:
            answers[where[id(entry)]] = MalformedEvent(reason)
        return answers

    # -- time -----------------------------------------------------------------------------------

    def _observe(self, when: float) -> None:
        if self.event_time_mode:
            self.watermark.observe(when)
            self._close_through(self.watermark.value)

    def tick(self) -> None:
        """Called by a timer: close what the clock (processing time) or idleness (event time) closes."""
        now = self.clock()
        if not self.event_time_mode:
            self._close_through(now)
        elif self.idle_after is not None and now - self.last_arrival >= self.idle_after and self.windows.open_count:
            self.stats.windows_idle_closed += self.windows.open_count
            log.info(
                "input idle for %.1fs: closing %d open window(s)", now - self.last_arrival, self.windows.open_count
            )
            for window, state in self.windows.close_all():
                self._close(window, state)

    def next_tick(self) -> float:
        """Seconds until ``tick`` has something to do (a bound, not a promise)."""
        now = self.clock()
        if not self.event_time_mode:
            # an open window's end, not only the current window's: when a timer fires a little early the
            # tick closes nothing, and the clock may pass that end before this is computed
            due = self.windows.window_at(now).end
            oldest = self.windows.earliest_end()
            return max(0.0, min(due, oldest) - now if oldest is not None else due - now)
        return max(0.05, min(1.0, (self.last_arrival + (self.idle_after or 1.0)) - now))

    def flush(self) -> None:
        """Close every open window (end of a replay, service shutdown)."""
        for window, state in self.windows.close_all():
            self._close(window, state)

    def _close_through(self, when: float) -> None:
        for window, state in self.windows.close_due(when):
            self._close(window, state)
        if self.table is not None and math.isfinite(self.windows.closed_through):
            # an on-time event may still come for the window that holds closed_through, from its start
            self.table.prune(self.windows.window_at(self.windows.closed_through).start)

    # -- handover of open windows (state.store) ----------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The open windows and the events they hold, as JSON: what the next run continues from; with
        event time also the watermark and how far windows were closed, with dedup what it remembers.

        Filtered events are not held, and rows are not kept: replaying the events remakes them."""
        return {
            "version": HANDOVER_VERSION,
            "join": self.config.join_mode,
            "watermark": _finite(self.watermark.highest) if self.event_time_mode else None,
            "closed_through": _finite(self.windows.closed_through),
            "dedup": [[key, recorded] for key, recorded in self.dedup.entries()] if self.dedup is not None else [],
            "streams": list(self.streams),
            "window_seconds": self.config.window_seconds,
            "windows": [
                {
                    "start": window.start,
                    "end": window.end,
                    "part": window.part,
                    "events": {
                        name: [[data, event_id] for data, event_id in self.engine.buffered(state, index)]
                        for index, name in enumerate(self.streams)
                    }
                    if self.table is None
                    else {
                        # a table join holds the joined stream's events with their times, no table events
                        self.streams[1]: [[data, event_id, when] for data, event_id, when in state.timed],
                    },
                }
                for window, state in self.windows.open_windows()
            ],
            "table": [
                [key_to_json(key), [[when, record] for when, record in versions]]
                for key, versions in self.table.versions()
            ]
            if self.table is not None
            else [],
        }

    def restore(self, snapshot: Any) -> int:
        """Reopen the windows of a snapshot and replay their events into them (into the same windows if
        deliveries opened them already); the number of events. A window whose end has passed closes at
        the next tick. ValueError when the snapshot is not one of this joiner's."""
        if not isinstance(snapshot, dict) or snapshot.get("version") != HANDOVER_VERSION:
            raise ValueError(f"not a handover snapshot of version {HANDOVER_VERSION}")
        if snapshot.get("streams") != list(self.streams):
            raise ValueError(f"it joins {snapshot.get('streams')}, this joiner {list(self.streams)}")
        if (
            snapshot.get("window_seconds") != self.config.window_seconds
            or snapshot.get("join") != self.config.join_mode
        ):
            return self._carry_over(snapshot)
        count = 0
        if self.table is not None:
            for key, versions in snapshot.get("table") or []:
                self.table.merge(key_from_json(key), [(float(when), record) for when, record in versions])
                count += len(versions)
        for entry in snapshot.get("windows") or []:
            window = Window(float(entry["start"]), float(entry["end"]), int(entry.get("part", 0)))
            state = self.windows.reopen(window)
            state.bytes += len(json.dumps(entry.get("events"), separators=(",", ":")))
            if self.table is not None:
                held = entry.get("events", {}).get(self.streams[1], [])
                state.timed.extend((data, event_id, float(when)) for data, event_id, when in held)
                state.count += len(held)
                count += len(held)
                continue
            for index, name in enumerate(self.streams):
                events = [(data, event_id) for data, event_id in entry["events"].get(name, [])]
                outcome = self.engine.accept_many(state, index, events)
                count += outcome.accepted
                for (_, event_id), reason in outcome.malformed:  # the expressions changed since
                    self.stats.dropped[name] += 1
                    log.warning("handed-over event dropped stream=%s id=%s reason=%s", name, event_id, reason)
        if snapshot.get("closed_through") is not None:
            self.windows.closed_through = max(self.windows.closed_through, float(snapshot["closed_through"]))
        if self.dedup is not None:
            self.dedup.merge([(_as_key(key), float(recorded)) for key, recorded in snapshot.get("dedup") or []])
        if self.event_time_mode and snapshot.get("watermark") is not None:
            self.watermark.observe(float(snapshot["watermark"]))
            self._close_through(self.watermark.value)  # what the watermark had passed closes now
        self.stats.restored += count
        return count

    def _carry_over(self, snapshot: dict[str, Any]) -> int:
        """A snapshot of the same streams under another window size or join mode: the configuration changed
        across the restart. Its windows were open, so none of their events has made a row yet: each is
        offered again, now, to this configuration (in event time it falls in the window of its own time),
        the table's latest versions too; then the dedup memory comes over. Nothing of it was billed, so
        nothing is billed twice, and nothing is dropped but what this configuration's own rules drop."""
        count = 0

        def offer(index: int, data: Any, event_id: Any) -> None:
            nonlocal count
            try:
                self.offer(index, data, event_id if isinstance(event_id, str) else None)
                count += 1
            except MalformedEvent as error:
                self.stats.dropped[self.streams[index]] += 1
                log.warning("handed-over event dropped stream=%s id=%s reason=%s", self.streams[index], event_id, error)

        for key, versions in snapshot.get("table") or []:
            if self.table is not None:
                self.table.merge(key_from_json(key), [(float(when), record) for when, record in versions])
                count += len(versions)
            elif versions:
                offer(0, max(versions, key=lambda version: float(version[0]))[1], None)  # its latest version
        for entry in snapshot.get("windows") or []:
            for index, name in enumerate(self.streams):
                for held in entry.get("events", {}).get(name, []):
                    offer(index, held[0], held[1])
        if self.dedup is not None:  # after the offers, or it would take the carried events for redeliveries
            self.dedup.merge([(_as_key(key), float(recorded)) for key, recorded in snapshot.get("dedup") or []])
        if self.event_time_mode and snapshot.get("watermark") is not None:
            self.watermark.observe(float(snapshot["watermark"]))
            self._close_through(self.watermark.value)
        log.info(
            "carried over %d event(s) of %d open window(s) saved under another configuration (%gs windows, "
            "join: %s) into this one (%gs, join: %s)",
            count,
            len(snapshot.get("windows") or []),
            snapshot.get("window_seconds"),
            snapshot.get("join"),
            self.config.window_seconds,
            self.config.join_mode,
        )
        self.stats.restored += count
        return count

    def _split_if_full(self, window: Window, state: WindowState) -> None:
        """At maxWindowEvents or maxWindowBytes, close the window early and go on in a new part of it.

        Nothing is lost: the rows made so far are sent; pairs between events of different parts
        are not made, which is what the count `windows_split` and the warning say."""
        if state.count < self.config.max_window_events and state.bytes < self.config.max_window_bytes:
            return
        self.stats.windows_split += 1
        bound = (
            f"{state.count} buffered events (maxWindowEvents)"
            if state.count >= self.config.max_window_events
            else f"{state.bytes} bytes of buffered events (maxWindowBytes)"
        )
        log.warning(
            "window %s reached %s: closing it early; "
            "later events of this window go to part %d and do not pair with earlier ones",
            window.id,
            bound,
            window.part + 1,
        )
        self._close(*self.windows.split(window))

    def _close(self, window: Window, state: WindowState) -> None:
        unmatched = (0, 0)
        if self.table is not None:
            self._join_table(window, state)
        else:
            unmatched = self.engine.unmatched(state)
            for name, count in zip(self.streams, unmatched):
                if count:
                    self.stats.unmatched[name] += count
        result = self.engine.result(state)
        self.stats.windows_closed += 1
        self.stats.pair_errors += len(result.errors)
        for error in result.errors[:5]:
            log.warning("pair skipped window=%s %s", window.id, error)
        rows = result.rows
        if self.aggregate_spec is not None and rows:
            aggregated = aggregate(rows, self.aggregate_spec)
            self.stats.aggregate_ignored += aggregated.ignored
            rows = aggregated.rows
        self.stats.rows_made += len(rows)
        log.info(
            "window closed id=%s events=%d pairs=%d rows=%d unmatched=%s",
            window.id,
            state.count,
            result.pairs,
            len(rows),
            ",".join(f"{name}:{count}" for name, count in zip(self.streams, unmatched)),
        )
        if rows:
            self.on_window(window, rows)

    def _join_table(self, window: Window, state: WindowState) -> None:
        assert self.table is not None
        misses = self.table.join(state)
        if misses:
            self.stats.table_misses += len(misses)
            shown = ", ".join(f"{event_id} (key {key!r})" for event_id, key in misses[:5])
            log.warning(
                "window %s: %d %s event(s) found no %s row at their time, so made no row: %s%s",
                window.id,
                len(misses),
                self.streams[1],
                self.streams[0],
                printable(shown, 400),
                " ..." if len(misses) > 5 else "",
            )
