"""Input files as blocks of parsed lines: gzip or not, read a block at a time, decoded, their event times
checked, the skipped lines kept beside the good ones."""

from __future__ import annotations

import contextlib
import gzip
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from joiner.engine.eventtime import EventTimeSpec, event_time
from joiner.engine.windows import Window
from joiner.replay.decode import EARLIEST, FLAT, LATEST, decode_exactly, time_reason, unexpected
from streaming_runtime.logs import printable

BLOCK_BYTES = 1 << 18  # lines read at a time per file


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
            data = FLAT.decode_lines(text)
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
        flat, spec, safe, name, earliest, nan = FLAT.decode, self.spec, self.safe, self.field, EARLIEST, math.nan
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
