"""``python -m joiner replay``: the joiner's processing over files of events, for backfills and checks.

    python -m joiner replay --config joiner.yaml \\
        --input tenants=tenants.jsonl --input poweruse=poweruse.jsonl.gz [--late late.jsonl]

Each input file holds one JSON object per line; a file ending ``.gz`` (or starting with gzip's magic
bytes) is read through gzip. Files are read in order and merged by event time (at each step the
earliest head of the files goes next; each file keeps its own order, so events that are out of order
within a file stay so and meet the grace period and lateness as they would live). The configuration
must name the event time field (``eventTime.field``): a replay has no arrival time. One JSON line per
closed window is printed on stdout, in closing order:
``{"window_start": ..., "window_end": ..., "window_id": ..., "rows": [...]}``; late events go to
``--late`` (or stderr). Same input, same output, every time.

A bad line is skipped, reported on stderr as ``skipped <file>:<line>: <reason>``, and the replay goes
on: a line that is not UTF-8, not JSON, or holds a value the joiner refuses as poison
(:func:`~streaming_runtime.values.value_problem`: non-finite numbers, integers beyond 64 bits, lone
surrogates, deep nesting); one without an event time, or with one outside the years 1970-9999 (the
window start and end are printed in RFC 3339, which has four-digit years; times before the epoch are
taken for mistakes); one the processor refuses as malformed; and one that meets an unexpected error
(reported with the exception's type). Blank lines are ignored. A summary line ends stderr; a replay
that runs longer than a few seconds also says every few seconds how far it is.

As a backfill tool it streams: files are read 256 KiB at a time, and what it holds is the open
windows, not the input. Lines are decoded with msgspec, a block of them in one call where each is a
flat object of plain values with a number for its time; what it cannot take goes the way of the live
joiner (Python's json and value_problem), for the same outcome and reason. Windows are written with
msgspec too, in large writes, as bytes: the values Python's json would write, very large and very small
floats in their shortest form (``1e16``, not ``1e+16``). Consecutive events of one stream in the merged
order go to the core in one call (:meth:`~joiner.core.JoinCore.offer_many`), its clock at the batch's
latest event time; a stream deduplicated by ``dedup.keyFields`` is batched by equal event times, so that
each key is remembered at its own time.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import math
import sys
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any, TextIO, Union

import msgspec

from joiner.config import config_from_yaml
from joiner.core import ACCEPTED, DUPLICATE, FILTERED, LATE, TABLE, JoinCore, LateEvent, build_engine
from joiner.engine.eventtime import EARLIEST_TIME, LATEST_TIME, EventTimeSpec, event_time
from joiner.engine.windows import Window
from streaming_runtime.cloudevents import loads
from streaming_runtime.errors import ConfigError, MalformedEvent
from streaming_runtime.logs import ErrorReport, printable
from streaming_runtime.values import value_problem

# what rfc3339 can print, as the live joiner bounds event times (datetime has years 1..9999)
EARLIEST, LATEST = EARLIEST_TIME, LATEST_TIME
BLOCK_BYTES = 1 << 18  # lines read at a time per file
BATCH_EVENTS = 4096  # events per call to the core at most
OUTPUT_BYTES = 1 << 20  # written when this much has gathered
PROGRESS_SECONDS = 5.0
OUTCOMES = frozenset((ACCEPTED, FILTERED, DUPLICATE, LATE, TABLE))
OWN_ERROR = "an error of the joiner's own"  # how the core answers an entry it met an unexpected error on

# -- decoding -----------------------------------------------------------------------------------------

# A flat object of values every JSON reader reads alike (what almost every event is), decoded and checked
# in one step: msgspec refuses non-finite numbers, bad surrogates and bad UTF-8, the bounds refuse
# integers beyond 64 bits (as value_problem does), and a nested value is not of this type. Everything
# it does not take goes the exact way below, so the outcome and the reasons are those of the live joiner.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63) + 1, le=2**63 - 1)]
_FLAT = msgspec.json.Decoder(dict[str, Union[_Int64, float, str, bool, None]])  # noqa: UP007 - a runtime type
_ANY = msgspec.json.Decoder()


def decode_exactly(raw: bytes) -> tuple[Any] | str | None:
    """``(data,)`` of a line the flat decoder did not take, else the reason it is skipped; None if blank."""
    try:
        data = _ANY.decode(raw)  # nested data, mostly: msgspec reads it as Python's json does
    except Exception:  # noqa: BLE001 - any refusal (even a RecursionError) is explained below
        pass
    else:
        if value_problem(data) is None:
            return (data,)
    # a refusal: in the words of the live joiner, which reads with Python's json
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:  # byte counted from 1, as JSON errors count columns
        return f"not valid UTF-8 at byte {error.start + 1} (0x{raw[error.start]:02x})"
    if not line.strip():
        return None
    try:
        data = loads(line)
    except ValueError as error:
        return f"not JSON: {error}"
    if (problem := value_problem(data)) is not None:
        return problem  # what the live joiner drops as poison: it could not be written out in a row
    return (data,)


def time_reason(when: float, spec: EventTimeSpec, window_at: Callable[[float], Window]) -> str | None:
    """Why an event time cannot place its line, or None."""
    if when != when:  # NaN: neither the field nor a CloudEvent time
        return f"no event time in field {'.'.join(spec.field)}"
    # checked before window_at, whose float arithmetic gives absurd (even zero-width) windows out there
    if not EARLIEST <= when <= LATEST:
        return f"event time {when!r} (epoch seconds) is outside the years 1970-9999"
    if window_at(when).end > LATEST:
        return f"event time {when!r} (epoch seconds) is in a window that ends after the year 9999"
    return None


def unexpected(error: BaseException) -> str:
    return f"unexpected {type(error).__name__}: {error}"


# -- reading --------------------------------------------------------------------------------------------


Entry = tuple[Any, str | None, str | None]  # what JoinCore.offer_many takes: (data, id, CloudEvent time)


@dataclass(slots=True)
class Block:
    """The good lines of a block of one file: event times, line numbers and data side by side, and the
    skipped lines met after each of them (before the next good one), by position."""

    times: list[float] = field(default_factory=list)
    numbers: Sequence[int] = field(default_factory=list)
    data: list[Any] = field(default_factory=list)
    after: dict[int, list[str]] = field(default_factory=dict)
    ordered: bool = False  # its times never go down: the merge may search them


@contextlib.contextmanager
def open_input(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, through gzip when its name or its first bytes say so."""
    with path.open("rb") as raw:
        if path.suffix == ".gz" or raw.peek(2)[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw


def text_blocks(source: IO[bytes]) -> Iterator[bytes]:
    """Whole lines of ``source``, about BLOCK_BYTES at a time, without the newline after the last one."""
    head: list[bytes] = []  # the start of a line begun in earlier reads (kept in parts: a line may be huge)
    while chunk := source.read(BLOCK_BYTES):
        end = chunk.rfind(b"\n")
        if end < 0:
            head.append(chunk)
            continue
        yield b"".join([*head, chunk[:end]]) if head else chunk[:end]
        head = [chunk[end + 1 :]]
    if rest := b"".join(head):
        yield rest


_NUMBERS = frozenset((float, int))


class Reader:
    """One input file as blocks of parsed lines. The lines skipped before its first good one go to ``report``
    as met: the files' first blocks are read in file order before anything is merged (:func:`heads_of`)."""

    def __init__(
        self,
        path: Path,
        spec: EventTimeSpec,
        window_at: Callable[[float], Window],
        size: float,
        report: Callable[[str], None],
    ) -> None:
        self.path, self.spec, self.window_at, self.report = path, spec, window_at, report
        # below this no window can end after LATEST (with a margin for float rounding): window_at, which
        # makes a Window, is needed only above
        self.safe = LATEST - 2 * size - 1.0
        # event_time's commonest case, inline: epoch seconds in a top-level field (1e11 and above would be
        # milliseconds in the format auto; anything else goes through event_time)
        self.field = spec.field[0] if len(spec.field) == 1 and spec.format in ("auto", "epoch_s") else None
        self.events = 0  # good lines read so far

    def blocks(self) -> Iterator[Block]:
        """Each block once the skipped lines after its last good line are known (one block of lookahead)."""
        held: Block | None = None
        number = 0
        with open_input(self.path) as source:
            for text in text_blocks(source):
                if (whole := self._whole(text, number)) is not None:
                    block, number = whole, number + len(whole.times)
                else:
                    block = Block()
                    number = self._parse(text.split(b"\n"), number, block, held)
                self.events += len(block.times)
                if block.times:
                    block.ordered = block.times == sorted(block.times)
                    if held is not None:
                        yield held
                    held = block
        if held is not None:
            yield held

    def _whole(self, text: bytes, number: int) -> Block | None:
        """The block in a few calls, when it is what a backfill mostly is: one flat object per line, no
        blank line, every event time a number of epoch seconds that passes the checks. None for any other
        block, which goes line by line to the same outcome.

        When every newline stands between a ``}`` and a ``{``, no object spans lines (a flat object has no
        ``}`` of its own outside its strings, and a string holds no newline): with as many objects as lines,
        each line is one object, the one the flat decoder gives for it alone."""
        newlines = text.count(b"\n")
        if self.field is None or text[:1] != b"{" or text[-1:] != b"}" or text.count(b"}\n{") != newlines:
            return None
        try:
            data = _FLAT.decode_lines(text)
        except msgspec.DecodeError:
            return None
        if len(data) != newlines + 1:
            return None
        values: list[Any] = [item.get(self.field) for item in data]
        kinds = set(map(type, values))  # bool is a kind of its own: event_time takes it for no time
        if not kinds <= _NUMBERS or not (min(values) >= EARLIEST and max(values) < min(1e11, self.safe)):
            return None
        times = values if kinds == {float} else [float(value) for value in values]
        return Block(times, range(number + 1, number + newlines + 2), data)

    def _parse(self, lines: list[bytes], number: int, block: Block, held: Block | None) -> int:
        flat, spec, safe, name, earliest, nan = _FLAT.decode, self.spec, self.safe, self.field, EARLIEST, math.nan
        numbers: list[int] = []
        block.numbers = numbers
        add_time, add_number, add_data = block.times.append, numbers.append, block.data.append
        for raw in lines:
            number += 1
            try:
                try:
                    data = flat(raw)
                except msgspec.DecodeError:
                    decoded = decode_exactly(raw)
                    if decoded is None:
                        continue
                    if isinstance(decoded, str):
                        self._skip(number, decoded, block, held)
                        continue
                    data = decoded[0]
                value = data.get(name) if data.__class__ is dict and name is not None else None
                if (value.__class__ is float or value.__class__ is int) and -1e11 < value < 1e11:
                    when = float(value)
                else:
                    when = event_time(spec, data, None, nan)
                if not earliest <= when <= safe and (problem := time_reason(when, spec, self.window_at)):
                    self._skip(number, problem, block, held)
                    continue
            except Exception as error:  # a bug met on one line: that line is skipped, not the replay
                self._skip(number, unexpected(error), block, held)
                continue
            add_time(when)
            add_number(number)
            add_data(data)
        return number

    def _skip(self, number: int, reason: str, block: Block, held: Block | None) -> None:
        problem = f"{self.path}:{number}: {printable(reason)}"
        if block.times:
            block.after.setdefault(len(block.times) - 1, []).append(problem)
        elif held is not None:
            held.after.setdefault(len(held.times) - 1, []).append(problem)
        else:
            self.report(problem)


# -- merging ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Head:
    """Where the merge is in one file."""

    order: int
    blocks: Iterator[Block]
    block: Block
    at: int = 0


def heads_of(readers: list[Reader]) -> list[Head]:
    """Each file's first block, read in file order (so that the lines skipped before each file's first
    good line are known before anything is merged, as ``heapq.merge`` reads its first items)."""
    heads = []
    for order, reader in enumerate(readers):
        blocks = reader.blocks()
        if (first := next(blocks, None)) is not None:
            heads.append(Head(order, blocks, first))
    return heads


def merged_runs(heads: list[Head]) -> Iterator[tuple[int, Block, int, int]]:
    """``(file order, block, start, stop)``: consecutive events of one file in the merged order, which is
    that of the key (event time, file order, line number), as ``heapq.merge`` would give them one by one."""
    while heads:
        head = min(heads, key=lambda h: (h.block.times[h.at], h.order))
        block, start = head.block, head.at
        times, stop = block.times, len(block.times)
        others = [(h.block.times[h.at], h.order) for h in heads if h is not head]
        if others:
            bound, bound_order = min(others)
            earlier = head.order < bound_order  # at the same time the earlier file goes first
            if block.ordered:
                stop = (bisect_right if earlier else bisect_left)(times, bound, start + 1)
            else:
                stop = start + 1
                while stop < len(times) and (times[stop] < bound or (earlier and times[stop] == bound)):
                    stop += 1
        yield head.order, block, start, stop
        if stop < len(times):
            head.at = stop
        elif (following := next(head.blocks, None)) is not None:
            head.block, head.at = following, 0
        else:
            heads.remove(head)


# -- output ----------------------------------------------------------------------------------------------

_ENCODE = msgspec.json.Encoder().encode


def dumps(record: Any) -> bytes:
    try:
        return _ENCODE(record)
    except (TypeError, ValueError, OverflowError):  # what msgspec cannot write (a key that is not text)
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


class Lines:
    """Lines written to ``out`` in large writes: as bytes to its binary buffer where it has one (stdout, a
    file), so that a window's line, megabytes long, is not copied into text and back."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.binary: IO[bytes] | None = getattr(out, "buffer", None)
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, line: bytes) -> None:
        self.parts.append(line)
        self.parts.append(b"\n")
        self.size += len(line)
        if self.size >= OUTPUT_BYTES:
            self.flush()

    def text(self, line: str) -> None:
        self.add(line.encode())

    def flush(self) -> None:
        if self.parts:
            parts, self.parts, self.size = self.parts, [], 0
            if self.binary is not None:
                self.out.flush()  # what was written as text before goes first
                self.binary.writelines(parts)
                self.binary.flush()
            else:
                self.out.write(b"".join(parts).decode())
        self.out.flush()


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def window_line(window: Window, rows: list[Any]) -> bytes:
    return dumps(
        {"window_start": rfc3339(window.start), "window_end": rfc3339(window.end), "window_id": window.id, "rows": rows}
    )


def _late_record(late: LateEvent) -> dict[str, Any]:
    record = late.as_record()
    record["window_start"], record["window_end"] = rfc3339(late.window.start), rfc3339(late.window.end)
    return record


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


# -- the replay ------------------------------------------------------------------------------------------


class Replay:
    """Events in merged order, in batches of one stream, into the core; skipped lines reported as met."""

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
            if self.runs and (
                self.streams[self.runs[0][0]] != self.streams[order] or self.count + stop - start > BATCH_EVENTS
            ):
                self.flush()
            if not self.by_time[order]:
                self.runs.append((order, block, start, stop))
                self.count += stop - start
                continue
            times = block.times
            while start < stop:  # cut where the event time changes
                end = start + 1
                while end < stop and times[end] == times[start]:
                    end += 1
                self.flush()
                self.runs.append((order, block, start, end))
                self.count = end - start
                start = end
        self.flush()

    def flush(self) -> None:
        """The batch gathered into the core, and what its lines cost reported in their order."""
        if not self.runs:
            return
        runs, self.runs, self.count = self.runs, [], 0
        index = self.streams[runs[0][0]]
        # made here, not kept in the blocks: tuples that live long make the collector run (it counts them)
        entries: list[Entry] = [(data, None, None) for _, block, start, stop in runs for data in block.data[start:stop]]
        self.now[0] = max(max(block.times[start:stop]) for _, block, start, stop in runs)
        try:
            answers = self.core.offer_many(index, entries)
        except Exception as error:  # as in Reader: these lines lost, not the windows of all the others
            answers = [MalformedEvent(f"{OWN_ERROR} ({type(error).__name__})")] * len(entries)
            self.errors.met.extend([error] * len(entries))
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
        on_late=lambda event: late.add(dumps(_late_record(event))),
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m joiner replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, type=Path, help="a Joiner YAML (with eventTime.field)")
    parser.add_argument(
        "--input",
        required=True,
        action="append",
        metavar="STREAM=FILE",
        help="a stream's events, one JSON object per line, gzipped or not (repeat per stream)",
    )
    parser.add_argument("--late", type=Path, help="write late events here (default: stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="joiner replay: %(message)s")  # late events are output, not logged
    inputs = []
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"joiner replay: --input {item!r}: expected STREAM=FILE", file=sys.stderr)
            return 2
        if not Path(path).is_file():
            print(f"joiner replay: --input {item!r}: no such file", file=sys.stderr)
            return 2
        inputs.append((name, Path(path)))
    try:
        config_text = args.config.read_text()
    except OSError as error:
        print(f"joiner replay: --config {args.config}: {error.strerror}", file=sys.stderr)
        return 2
    late = open(args.late, "w", encoding="utf-8") if args.late else contextlib.nullcontext(sys.stderr)  # noqa: SIM115
    with late as late_out:
        try:
            return replay(config_text, inputs, sys.stdout, late_out, str(args.config))
        except ConfigError as error:
            print(f"joiner replay: configuration error: {error}", file=sys.stderr)
            return 2
