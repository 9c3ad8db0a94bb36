"""The replay itself: the merged events into the core in batches, the skipped lines and
the core's refusals reported in their order, progress and the summary."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from joiner.config import config_from_yaml
from joiner.core import ACCEPTED, DUPLICATE, FILTERED, LATE, TABLE, JoinCore, build_engine
from joiner.replay.decode import unexpected
from joiner.replay.inputs import Block, Reader
from joiner.replay.merge import heads_of, merged_runs
from joiner.replay.output import Lines, dumps, late_record, window_line
from streaming_runtime.errors import ConfigError, MalformedEvent
from streaming_runtime.logs import ErrorReport, printable

BATCH_EVENTS = 4096  # events per call to the core at most
PROGRESS_SECONDS = 5.0
OUTCOMES = frozenset((ACCEPTED, FILTERED, DUPLICATE, LATE, TABLE))
OWN_ERROR = "an error of the joiner's own"  # how the core answers an entry it met an unexpected error on

Entry = tuple[Any, str | None, str | None]  # what JoinCore.offer_many takes: (data, id, CloudEvent time)


class Unexpected(ErrorReport):
    """The core's unexpected errors, kept for the skipped lines they cost instead of logged."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("joiner"))
        self.met: list[BaseException] = []

    def __call__(self, where: str, error: BaseException, detail: str = "") -> None:
        self.met.append(error)

    def reason(self, answer: MalformedEvent) -> str:
        """The reason for an entry the core answered ``answer``: its error, if it was one of its own."""
        text = str(answer)
        if text.startswith(OWN_ERROR):
            for position, error in enumerate(self.met):
                if text == f"{OWN_ERROR} ({type(error).__name__})":
                    del self.met[position]
                    return unexpected(error)
        return text


class Replay:
    """Events in merged order, in batches of both streams, into the core; skipped lines reported as met."""

    def __init__(self, core: JoinCore, now: list[float], inputs: list[tuple[int, Path]], err: Lines):
        """``inputs``: (stream index, file) in the order given; ``now``: the core's clock, set per batch."""
        self.core, self.now, self.err = core, now, err
        self.streams = [index for index, _ in inputs]
        spec, windows = core.time_spec, core.windows
        assert spec is not None
        self.readers = [Reader(path, spec, windows.window_at, windows.size, self.report) for _, path in inputs]
        assert isinstance(core.errors, Unexpected)
        self.errors = core.errors
        self.skipped = 0
        # a stream deduplicated by a key field remembers keys at the clock's time: it is batched by equal
        # event times, so that each event is remembered at its own
        keyed = core.config.dedup_key_fields if core.dedup is not None else {}
        self.by_time = [core.streams[index] in keyed for index in self.streams]
        self.runs: list[tuple[int, Block, int, int]] = []
        self.count = 0
        self.started = self.reported = time.monotonic()

    def run(self) -> None:
        for order, block, start, stop in merged_runs(heads_of(self.readers)):
            if self.count + stop - start > BATCH_EVENTS:
                self.flush()
            if not self.by_time[order]:
                self.runs.append((order, block, start, stop))
                self.count += stop - start
                continue
            times = block.times
            self.flush()
            while start < stop:  # cut where the event time changes; each goes alone, at its own time
                end = start + 1
                while end < stop and times[end] == times[start]:
                    end += 1
                self.runs.append((order, block, start, end))
                self.count = end - start
                self.flush()
                start = end
        self.flush()

    def flush(self) -> None:
        """The runs gathered into the core, a batch per stretch of one stream in their order, and what
        their lines cost reported in their order."""
        if not self.runs:
            return
        runs, self.runs, self.count = self.runs, [], 0
        batches: list[tuple[int, list[Entry]]] = []
        for order, block, start, stop in runs:
            index = self.streams[order]
            if not batches or batches[-1][0] != index:
                batches.append((index, []))
            # made here, not kept in the blocks: tuples that live long make the collector run (it counts them)
            batches[-1][1].extend([(data, None, None) for data in block.data[start:stop]])
        # the replay's clock: the latest event time read (dedup's TTLs count in event time)
        self.now[0] = max(max(block.times[start:stop]) for _, block, start, stop in runs)
        try:
            answers = [answer for batch in self.core.offer_runs(batches) for answer in batch]
        except Exception as error:  # as in Reader: these lines lost, not the windows of all the others
            lost = sum(len(entries) for _, entries in batches)
            answers = [MalformedEvent(f"{OWN_ERROR} ({type(error).__name__})")] * lost
            self.errors.met.extend([error] * lost)
        if not OUTCOMES.issuperset(answers) or any(block.after for _, block, _, _ in runs):
            position = 0
            for order, block, start, stop in runs:
                path = self.readers[order].path
                for at in range(start, stop):
                    answer = answers[position]
                    position += 1
                    if isinstance(answer, MalformedEvent):
                        self.report(f"{path}:{block.numbers[at]}: {printable(self.errors.reason(answer))}")
                    for problem in block.after.get(at, ()):
                        self.report(problem)
        self._progress()

    def report(self, problem: str) -> None:
        self.skipped += 1
        self.err.text(f"skipped {problem}")

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self.reported < PROGRESS_SECONDS:
            return
        self.reported = now
        read = sum(reader.events for reader in self.readers)
        self.err.text(
            f"replay: {read:,} events read, {self.core.stats.windows_closed:,} windows closed, "
            f"{read / (now - self.started):,.0f} events/s"
        )
        self.err.flush()


def replay(config_text: str, inputs: list[tuple[str, Path]], out: TextIO, late_out: TextIO, origin: str) -> int:
    config = config_from_yaml(config_text, origin)
    if config.event_time is None:
        raise ConfigError(f"{origin}: replay needs eventTime.field (files have no arrival time)")
    streams = [source.name for source in config.sources]
    for name, _ in inputs:
        if name not in streams:
            raise ConfigError(f"--input {name}=...: {name!r} is not one of the streams {streams}")
    now = [float("-inf")]
    windows, err = Lines(out), Lines(sys.stderr)
    late = err if late_out is sys.stderr else Lines(late_out)
    processor = JoinCore(
        config,
        build_engine(config),
        on_window=lambda window, rows: windows.add(window_line(window, rows)),
        on_late=lambda event: late.add(dumps(late_record(event))),
        clock=lambda: now[0],  # event time: dedup TTLs count in event time too
        errors=Unexpected(),
    )
    run = Replay(processor, now, [(streams.index(name), path) for name, path in inputs], err)
    try:
        run.run()
        processor.flush()
    finally:
        windows.flush()
        late.flush()
    stats = processor.stats
    err.text(
        f"replay: {sum(stats.accepted.values())} accepted, {sum(stats.filtered.values())} filtered, "
        f"{sum(stats.late.values())} late, {sum(stats.duplicates.values())} duplicate, {run.skipped} skipped; "
        f"{stats.windows_closed} windows"
    )
    err.flush()
    return 0
