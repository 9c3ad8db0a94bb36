"""The joiner's core: its stream processing without I/O, what the service and ``joiner replay`` both run.

Per event: deduplicate (CloudEvent id, or a configured key field), place it in time (event time
or arrival; an event time too far ahead of the clock is bad input), set late ones aside, then hand
it to the join mode (:mod:`joiner.modes`: update the table, or buffer it in its window). Windows close
when the clock (processing time) or the watermark (event time) passes their end, when input has
been idle, when they reach ``maxWindowEvents`` or ``maxWindowBytes``, or on ``flush``. A closed
window's rows are aggregated if configured and handed to ``on_window``.

The configuration is trusted: :mod:`joiner.config` validated it (expressions, aggregate, table key).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from joiner.config import JoinerConfig
from joiner.engine.aggregate import aggregate
from joiner.engine.dedup import Deduplicator, dedup_key
from joiner.engine.eventtime import EARLIEST_TIME, LATEST_TIME, Watermark, event_time, time_problem, time_reader
from joiner.engine.join import Accepted, JoinEngine, WindowState
from joiner.engine.native import number_span
from joiner.engine.state import MemoryStore, StateStore
from joiner.engine.windows import TumblingWindows, Window
from joiner.handover import snapshot
from joiner.modes import JoinMode, join_mode
from joiner.stats import ACCEPTED, DUPLICATE, FILTERED, LATE, TABLE, Stats
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.logs import ErrorReport, printable

log = logging.getLogger("joiner")

_Placed = tuple[int, float, tuple[Any, str | None]]  # an entry of a batch: (position, event time, (data, id))
_Offered = tuple[Any, str | None, str | None]  # what offer_many takes: (data, id, CloudEvent time)
_Answer = str | MalformedEvent
HELD_TICK = 0.01  # seconds: how soon a tick looks again at a window held open (JoinCore.hold)
HALVES_FROM = 64  # entries: an event-time batch that cannot be taken at once is halved down to this

__all__ = ["ACCEPTED", "DUPLICATE", "FILTERED", "LATE", "TABLE", "JoinCore", "LateEvent", "build_engine"]


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


def build_engine(config: JoinerConfig) -> JoinEngine:
    """The join's engine: both expressions compiled and the join planned."""
    return JoinEngine(config.streams, config.compiled_where(), config.compiled_select())


class JoinCore:
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
        self.config = config
        self.engine = engine
        self.streams = engine.streams
        self.on_window = on_window
        self.on_late = on_late
        self.clock = clock or time.time
        # processing time: windows close no later than this (a delivery in flight that is still to go in)
        self.hold: Callable[[], float] = lambda: math.inf
        self.store = store or MemoryStore()
        self.errors = errors or ErrorReport(log)
        self.stats = Stats()
        self.mode: JoinMode = join_mode(config, engine, self.store, self.stats)
        self.windows = TumblingWindows(config.window_seconds, engine.new_state, self.store)
        self.time_spec = config.event_time
        self._read_time = time_reader(self.time_spec) if self.time_spec else lambda data, ce_time, arrival: arrival
        self.watermark = Watermark(self.time_spec.grace if self.time_spec else 0.0)
        self.idle_after = (
            (self.time_spec.idle or config.window_seconds + self.time_spec.grace) if self.time_spec else None
        )
        self.last_arrival = self.clock()
        self.dedup = (
            Deduplicator(self.store, "dedup", config.dedup_ttl, config.dedup_max_entries, self.clock)
            if config.dedup_ttl
            else None
        )

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
            f"join: {self.mode.name}",
            time_mode,
            f"dedup {self.config.dedup_ttl:g}s" if self.dedup is not None else "no dedup",
            "aggregate" if self.config.aggregate else "rows as selected",
        ]
        return f"{self.engine.describe()}; " + "; ".join(extras)

    def figures(self) -> dict[str, Any]:
        """The counters, and what is buffered now (for /stats and /metrics)."""
        states = self.windows.states()
        return {
            **self.stats.as_dict(),
            "buffered": sum(state.count for state in states),
            "buffered_bytes": sum(state.bytes for state in states),
            "table_keys": self.mode.table_keys,
        }

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
        if self._duplicate(stream, event_id, data):  # after the checks: an event refused is not remembered
            return DUPLICATE
        if self.mode.is_table(index):
            outcome = self.mode.update(data, when)
            self.stats.accepted[stream] += 1
            if outcome != "rejected":
                self._observe(when)
            return TABLE
        if self.windows.is_late(when):
            return self._late(stream, event_id, when, self.windows.window_at(when), data)
        window, state = self.windows.state_at(when)
        kept = self.mode.accept(state, index, data, event_id, when)
        self.stats.count(ACCEPTED if kept else FILTERED, stream)
        if not kept:
            return FILTERED  # nor does it move the watermark: only events that can be joined do
        state.bytes += size
        self._split_if_full(window, state)
        self._observe(when)
        return ACCEPTED

    def offer_many(self, index: int, entries: list[_Offered], size: int = 0) -> list[_Answer]:
        """Take a batch of ``(data, id, cloudevent time)`` (``size``: the bytes of the delivery, shared
        among its entries); an outcome (or the MalformedEvent) per entry.

        With a join mode that batches, each window's share of the batch goes through the engine's
        generated loop (or the C loop) in one call, after dedup, which takes out the entries it remembers
        (a redelivered bulk is joined once); in event time the batch is cut where a window could close
        within it, so that lateness and the watermark are exactly those of one event at a time. A table
        join takes it event by event, where an error of our own costs its entry alone."""
        share = size // len(entries) if entries else 0
        if not self.mode.batches:
            return [self._offer_one(index, entry, share) for entry in entries]
        if self.event_time_mode:
            return self._offer_timed(index, entries, share)
        stream = self.streams[index]
        self.last_arrival = now = self.clock()
        answers: list[_Answer] = [ACCEPTED] * len(entries)
        if self.dedup is None:
            window, state = self.windows.state_at(now)
            whole = [(data, event_id) for data, event_id, _ in entries]
            self._outcome(index, window, state, whole, self.mode.accept_many(state, index, whole), answers, share)
            return answers
        batch: list[_Placed] = []
        for position, (data, event_id, _) in enumerate(entries):
            if self._duplicate(stream, event_id, data):
                answers[position] = DUPLICATE
                continue
            batch.append((position, now, (data, event_id)))
        self._take(index, now, batch, answers, share)
        return answers

    def _offer_timed(self, index: int, entries: list[_Offered], share: int) -> list[_Answer]:
        """``offer_many`` in event time: each entry is placed in time, checked, deduplicated and judged
        late in order, as :meth:`offer` does; those kept for their windows are gathered into a run, taken
        in per window, and the watermark moves once at the end of the run to the latest kept event time.

        That is exact while no window can close within the run. Before an entry with which the run's
        highest event time (kept or not: a bound on the watermark) minus grace could reach the end of
        an open window, or of the entry's own (it could be late), the run is taken in and the windows due
        closed first: windows close, and late events come out, in the order one by one gives them."""
        stream, spec, grace = self.streams[index], self.time_spec, self.watermark.grace
        assert spec is not None
        arrival = self.clock()
        self.last_arrival = arrival
        answers: list[_Answer] = [ACCEPTED] * len(entries)
        if self._at_once(index, entries, arrival, answers, share):
            return answers
        if len(entries) >= HALVES_FROM and self.dedup is None:
            # a batch across a window's end (a backfill's batches are long): each half is again one batch, as
            # consecutive batches are the events one by one; only the part near the end takes the loop below
            middle = len(entries) // 2
            return self._offer_timed(index, entries[:middle], share) + self._offer_timed(index, entries[middle:], share)
        by_window: dict[float, list[_Placed]] = {}
        read_time, skew, size, floor = self._read_time, spec.max_future_skew, self.windows.size, math.floor
        closed = self.windows.closed_through
        highest, first_end = self.watermark.highest, self.windows.earliest_end() or math.inf
        bound = highest - grace  # what the watermark may have reached before this entry, one by one
        for position, (data, event_id, ce_time) in enumerate(entries):
            when = read_time(data, ce_time, arrival)
            if when - arrival > skew or not EARLIEST_TIME <= when <= LATEST_TIME:
                if when > arrival:
                    self.stats.future[stream] += 1
                answers[position] = MalformedEvent(f"{stream} event: {time_problem(spec, when, arrival)}")
                continue
            start = floor(when / size) * size  # as TumblingWindows.window_at
            end = start + size
            if bound >= first_end or (end > closed and bound >= end):
                self._take_run(index, by_window, answers, share)  # a window may close here: close it first
                by_window = {}
                closed = self.windows.closed_through
                highest, first_end = self.watermark.highest, self.windows.earliest_end() or math.inf
                bound = highest - grace
            if self.dedup is not None and self._duplicate(stream, event_id, data):
                answers[position] = DUPLICATE
                continue
            if end <= closed:
                answers[position] = self._late(stream, event_id, when, self.windows.window_at(when), data)
                continue
            placed = by_window.get(start)
            if placed is None:
                placed = by_window[start] = []
            placed.append((position, when, (data, event_id)))
            if when > highest:
                highest, bound = when, when - grace
            if end < first_end:
                first_end = end
        self._take_run(index, by_window, answers, share)
        return answers

    def offer_runs(self, runs: list[tuple[int, list[_Offered]]]) -> list[list[_Answer]]:
        """Consecutive batches of either stream (``(stream index, entries)``), answered as ``offer_many``
        one after the other answers them. In event time, runs that all fall in one open window in which
        nothing can close go through the arrival loop without the per-batch steps (placing, the watermark
        after each): where two streams interleave, as a backfill's table side does at each window's
        start, batches are short and those steps were most of their cost."""
        if len(runs) > 1 and (answers := self._runs_at_once(runs)) is not None:
            return answers
        return [self.offer_many(index, entries) for index, entries in runs]

    def _runs_at_once(self, runs: list[tuple[int, list[_Offered]]]) -> list[list[_Answer]] | None:
        name = self._fast_time_field()
        if name is None or not self.mode.batches:
            return None
        lowest, latest = math.inf, -math.inf
        for _, entries in runs:
            span = number_span(entries, name)
            if span is None:
                return None
            lowest, latest = min(lowest, span[0]), max(latest, span[1])
        arrival = self.clock()
        if not self._in_one_open_window(lowest, latest, arrival):
            return None
        self.last_arrival = arrival
        answered, kept = [], []
        for index, entries in runs:
            answers: list[_Answer] = [ACCEPTED] * len(entries)
            kept += self._take_at_once(index, entries, lowest, answers, 0)
            answered.append(answers)
        self._observe_latest(kept, name)
        return answered

    def _at_once(self, index: int, entries: list[_Offered], arrival: float, answers: list[_Answer], share: int) -> bool:
        """The common batch, taken without a step per entry in Python: every event time a number of epoch
        seconds in the field, all in one window that is open, no dedup, and the batch's latest time minus
        grace short of every open window's end (so nothing closes, nothing is late, within it). False,
        having done nothing, for any other batch."""
        name = self._fast_time_field()
        if name is None:
            return False
        span = number_span(entries, name)
        if span is None or not self._in_one_open_window(span[0], span[1], arrival):
            return False
        self._observe_latest(self._take_at_once(index, entries, span[0], answers, share), name)
        return True

    def _fast_time_field(self) -> str | None:
        """The event-time field the fast path reads (a top-level number of epoch seconds), or None."""
        spec = self.time_spec
        if self.dedup is not None or spec is None or len(spec.field) != 1 or spec.format not in ("auto", "epoch_s"):
            return None
        return spec.field[0]

    def _in_one_open_window(self, lowest: float, latest: float, arrival: float) -> bool:
        """Whether events with times from ``lowest`` to ``latest`` are all in one open window and none of
        them can close a window (or be late) as they arrive."""
        spec = self.time_spec
        assert spec is not None
        # epoch milliseconds in auto format, and times a window cannot hold, take the exact path
        if (
            lowest < EARLIEST_TIME
            or latest > LATEST_TIME
            or latest >= 100_000_000_000
            or latest - arrival > spec.max_future_skew
        ):
            return False
        size = self.windows.size
        start = math.floor(lowest / size) * size
        end = start + size
        if math.floor(latest / size) * size != start or end <= self.windows.closed_through:
            return False
        return max(self.watermark.highest, latest) - self.watermark.grace < min(end, self.windows.earliest_end() or end)

    def _take_at_once(
        self, index: int, entries: list[_Offered], at: float, answers: list[_Answer], share: int
    ) -> list[Any]:
        """``entries`` into the window that holds the time ``at`` in one call; what the loop kept (its
        buffered entries, ``[0]`` the event)."""
        window, state = self.windows.state_at(at)  # per call: a window split when full has a new state
        batch = [(data, event_id) for data, event_id, _ in entries]
        outcome = self.mode.accept_many(state, index, batch, kept=True)
        self._outcome(index, window, state, batch, outcome, answers, share)
        return outcome.kept

    def _observe_latest(self, kept: list[Any], name: str) -> None:
        """Only events that can be joined move the watermark: the latest of those the loop kept."""
        span = number_span(kept, name)
        if span is not None:
            self._observe(span[1])

    def _take_run(self, index: int, by_window: dict[float, list[_Placed]], answers: list[_Answer], share: int) -> None:
        kept: list[_Placed] = []
        for placed in by_window.values():
            self._take(index, placed[0][1], placed, answers, share)
            kept += placed
        self._observe_latest_kept(index, kept, answers)

    def _observe_latest_kept(self, index: int, placed: list[_Placed], answers: list[_Answer]) -> None:
        """Only events that can be joined move the watermark: the latest of ``placed`` that the join kept
        (most often the latest of all, so that one is tried before the others are sorted)."""
        if not placed:
            return
        latest = max(placed, key=lambda item: item[1])
        for position, when, (data, _) in [latest, *sorted(placed, key=lambda item: item[1], reverse=True)]:
            if not isinstance(answers[position], MalformedEvent) and self.mode.keeps(index, data):
                self._observe(when)
                return

    def _take(self, index: int, at: float, placed: list[_Placed], answers: list[_Answer], share: int) -> None:
        """One window's share of a batch (the window that holds the time ``at``), through the join mode's
        loop in one call."""
        window, state = self.windows.state_at(at)
        batch = [entry for _, _, entry in placed]
        outcome = self.mode.accept_many(state, index, batch)
        self._outcome(index, window, state, batch, outcome, answers, share, [position for position, _, _ in placed])

    def _outcome(
        self,
        index: int,
        window: Window,
        state: WindowState,
        batch: list[tuple[Any, str | None]],
        outcome: Accepted,
        answers: list[_Answer],
        share: int,
        positions: list[int] | None = None,
    ) -> None:
        """Count what the loop took, split the window if full, answer what it refused (``positions``: the
        answer of each entry of ``batch``, when not the same)."""
        stream = self.streams[index]
        if outcome.accepted:  # a Counter keeps a key added with 0: /stats would show streams with none
            self.stats.accepted[stream] += outcome.accepted
        if outcome.filtered:
            self.stats.filtered[stream] += outcome.filtered
        state.bytes += share * outcome.accepted
        self._split_if_full(window, state)
        # the engine counts filtered events but does not name them: both are answered SUCCESS
        if not outcome.malformed and not outcome.failed:
            return
        where = {id(entry): positions[n] if positions else n for n, entry in enumerate(batch)}
        for entry, reason in outcome.malformed:
            answers[where[id(entry)]] = MalformedEvent(reason)
        for entry, error in outcome.failed:
            self.errors(f"an event of {stream}", error, f"id {printable(entry[1], 80)}")
            answers[where[id(entry)]] = MalformedEvent(f"an error of the joiner's own ({type(error).__name__})")

    def _duplicate(self, stream: str, event_id: str | None, data: Any) -> bool:
        if self.dedup is None:
            return False
        key = dedup_key(stream, event_id, data, self.config.dedup_key_fields.get(stream))
        if key is not None and self.dedup.seen(key):
            self.stats.duplicates[stream] += 1
            return True
        return False

    def _late(self, stream: str, event_id: str | None, when: float, window: Window, data: Any) -> str:
        late = LateEvent(stream, event_id, when, window, data)
        self.stats.late[stream] += 1
        log.warning("late event stream=%s id=%s event_time=%s window=%s (closed)", stream, event_id, when, window.id)
        self.on_late(late)
        return LATE

    def _offer_one(self, index: int, entry: _Offered, size: int) -> str | MalformedEvent:
        data, event_id, ce_time = entry
        try:
            return self.offer(index, data, event_id, ce_time, size)
        except MalformedEvent as error:
            return error
        except Exception as error:  # noqa: BLE001 - the entries before it are buffered: not all DROP
            self.errors(f"an event of {self.streams[index]}", error, f"id {printable(event_id, 80)}")
            return MalformedEvent(f"an error of the joiner's own ({type(error).__name__})")

    # -- time -----------------------------------------------------------------------------------

    def _observe(self, when: float) -> None:
        if self.event_time_mode:
            self.watermark.observe(when)
            self.close_through(self.watermark.value)

    def tick(self) -> None:
        """Called by a timer: close what the clock (processing time) or idleness (event time) closes."""
        now = self.clock()
        if not self.event_time_mode:
            self.close_through(min(now, self.hold()))
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
            wait = max(0.0, min(due, oldest) - now if oldest is not None else due - now)
            # a window held open for a delivery in flight (joiner.claims): looked at again soon
            return HELD_TICK if wait == 0.0 and self.hold() < now else wait
        return max(0.05, min(1.0, (self.last_arrival + (self.idle_after or 1.0)) - now))

    def flush(self) -> None:
        """Close every open window (end of a replay, service shutdown)."""
        for window, state in self.windows.close_all():
            self._close(window, state)

    def close_through(self, when: float) -> None:
        """Close the windows that end by ``when``."""
        for window, state in self.windows.close_due(when):
            self._close(window, state)
        if math.isfinite(self.windows.closed_through):
            self.mode.closed_through(self.windows)

    # -- handover of open windows (state.store): see joiner.handover ---------------------------------

    def snapshot(self) -> dict[str, Any]:
        return snapshot.take(self)

    def restore(self, saved: Any) -> int:
        return snapshot.restore(self, saved)

    # -- closing a window -------------------------------------------------------------------------

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
        unmatched = self.mode.close(window, state)
        result = self.engine.result(state)
        self.stats.windows_closed += 1
        self.stats.pair_errors += len(result.errors)
        for error in result.errors[:5]:
            log.warning("pair skipped window=%s %s", window.id, error)
        rows = result.rows
        if self.config.aggregate is not None and rows:
            aggregated = aggregate(rows, self.config.aggregate, partial=self.config.replica is not None)
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
