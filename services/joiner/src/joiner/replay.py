"""``python -m joiner replay``: the joiner's processing over files of events, for backfills and checks.

    python -m joiner replay --config joiner.yaml \\
        --input tenants=tenants.jsonl --input poweruse=poweruse.jsonl [--late late.jsonl]

Each input file holds one JSON object per line. Files are read in order and merged by event time
(at each step the earliest head of the files goes next; each file keeps its own order, so events
that are out of order within a file stay so and meet the grace period and lateness as they would
live). The configuration must name the event time field (``eventTime.field``): a replay has no
arrival time. One JSON line per closed window is printed on stdout, in closing order:
``{"window_start": ..., "window_end": ..., "window_id": ..., "rows": [...]}``; late events go to
``--late`` (or stderr). Same input, same output, every time.

A bad line is skipped, reported on stderr as ``skipped <file>:<line>: <reason>``, and the replay goes
on: a line that is not UTF-8, not JSON, or holds a value the joiner refuses as poison
(:func:`~streaming_runtime.values.value_problem`: non-finite numbers, integers beyond 64 bits, lone
surrogates, deep nesting); one without an event time, or with one outside the years 1970-9999 (the
window start and end are printed in RFC 3339, which has four-digit years; times before the epoch are
taken for mistakes); one the processor refuses as malformed; and one that meets an unexpected error
(reported with the exception's type). Blank lines are ignored. A summary line ends stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from joiner.config import config_from_yaml
from joiner.core import JoinCore, LateEvent, build_engine
from joiner.engine.eventtime import EARLIEST_TIME, LATEST_TIME, EventTimeSpec, event_time
from joiner.engine.windows import Window
from streaming_runtime.cloudevents import loads
from streaming_runtime.errors import ConfigError, MalformedEvent
from streaming_runtime.logs import printable
from streaming_runtime.values import value_problem

# what rfc3339 can print, as the live joiner bounds event times (datetime has years 1..9999)
EARLIEST, LATEST = EARLIEST_TIME, LATEST_TIME


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def window_line(window: Window, rows: list[Any]) -> str:
    record = {
        "window_start": rfc3339(window.start),
        "window_end": rfc3339(window.end),
        "window_id": window.id,
        "rows": rows,
    }
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def parse_line(raw: bytes, spec: EventTimeSpec, window_at: Callable[[float], Window]) -> tuple[float, Any] | str | None:
    """``(event time, data)`` of one input line, else the reason it is skipped; None for a blank line."""
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
    when = event_time(spec, data, None, math.nan)
    if when != when:  # NaN: neither the field nor a CloudEvent time
        return f"no event time in field {'.'.join(spec.field)}"
    # checked before window_at, whose float arithmetic gives absurd (even zero-width) windows out there
    if not EARLIEST <= when <= LATEST:
        return f"event time {when!r} (epoch seconds) is outside the years 1970-9999"
    if window_at(when).end > LATEST:
        return f"event time {when!r} (epoch seconds) is in a window that ends after the year 9999"
    return when, data


def read_events(
    path: Path, index: int, order: int, spec: EventTimeSpec, window_at: Callable[[float], Window], problems: list[str]
) -> Iterator[tuple[float, int, int, int, Any]]:
    """(event time, file order, line number, stream index, data) per good line; problems are collected."""
    # bytes, decoded line by line: text mode would raise for the first bad byte and end the whole file
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                parsed = parse_line(raw, spec, window_at)
            except Exception as error:  # a bug met on one line: that line is skipped, not the replay
                parsed = unexpected(error)
            if isinstance(parsed, str):
                problems.append(f"{path}:{number}: {printable(parsed)}")
            elif parsed is not None:
                yield (parsed[0], order, number, index, parsed[1])


def unexpected(error: Exception) -> str:
    return f"unexpected {type(error).__name__}: {error}"


def replay(config_text: str, inputs: list[tuple[str, Path]], out: TextIO, late_out: TextIO, origin: str) -> int:
    config = config_from_yaml(config_text, origin)
    if config.event_time is None:
        raise ConfigError(f"{origin}: replay needs eventTime.field (files have no arrival time)")
    streams = [source.name for source in config.sources]
    for name, _ in inputs:
        if name not in streams:
            raise ConfigError(f"--input {name}=...: {name!r} is not one of the streams {streams}")
    now = [float("-inf")]
    processor = JoinCore(
        config,
        build_engine(config),
        on_window=lambda window, rows: print(window_line(window, rows), file=out),
        on_late=lambda late: print(json.dumps(_late_record(late), separators=(",", ":")), file=late_out),
        clock=lambda: now[0],
    )
    problems: list[str] = []
    sources = [
        read_events(path, streams.index(name), order, config.event_time, processor.windows.window_at, problems)
        for order, (name, path) in enumerate(inputs)
    ]
    for when, order, number, index, data in heapq.merge(*sources, key=lambda item: item[:3]):
        now[0] = when  # the processor's clock is event time: dedup TTLs count in event time too
        try:
            processor.offer(index, data, None, None)
        except MalformedEvent as error:
            problems.append(f"{inputs[order][1]}:{number}: {printable(error)}")
        except Exception as error:  # as in read_events: one line lost, not the windows of all the others
            problems.append(f"{inputs[order][1]}:{number}: {printable(unexpected(error))}")
    processor.flush()
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    stats = processor.stats
    print(
        f"replay: {sum(stats.accepted.values())} accepted, {sum(stats.filtered.values())} filtered, "
        f"{sum(stats.late.values())} late, {sum(stats.duplicates.values())} duplicate, {len(problems)} skipped; "
        f"{stats.windows_closed} windows",
        file=sys.stderr,
    )
    return 0


def _late_record(late: LateEvent) -> dict[str, Any]:
    record = late.as_record()
    record["window_start"], record["window_end"] = rfc3339(late.window.start), rfc3339(late.window.end)
    return record


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
        help="a stream's events, one JSON object per line (repeat per stream)",
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
