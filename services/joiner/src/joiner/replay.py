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
"""

from __future__ import annotations

import argparse
import heapq
import logging
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from joiner.config import config_from_yaml
from joiner.engine.eventtime import event_time
from joiner.engine.windows import Window
from joiner.processor import LateEvent, Processor, build_engine
from streaming_runtime.cloudevents import loads
from streaming_runtime.errors import ConfigError, MalformedEvent


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def window_line(window: Window, rows: list[Any]) -> str:
    record = {"window_start": rfc3339(window.start), "window_end": rfc3339(window.end), "window_id": window.id, "rows": rows}
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def read_events(path: Path, index: int, order: int, spec, problems: list[str]) -> Iterator[tuple[float, int, int, int, Any]]:
    """(event time, file order, line number, stream index, data) per good line; problems are collected."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = loads(line)
            except ValueError as error:
                problems.append(f"{path}:{number}: not JSON: {error}")
                continue
            when = event_time(spec, data, None, float("nan"))
            if when != when:  # NaN: neither the field nor a CloudEvent time
                problems.append(f"{path}:{number}: no event time in field {'.'.join(spec.field)}")
                continue
            yield (when, order, number, index, data)


def replay(config_text: str, inputs: list[tuple[str, Path]], out: TextIO, late_out: TextIO, origin: str) -> int:
    config = config_from_yaml(config_text, origin)
    if config.event_time is None:
        raise ConfigError(f"{origin}: replay needs eventTime.field (files have no arrival time)")
    streams = [source.name for source in config.sources]
    for name, _ in inputs:
        if name not in streams:
            raise ConfigError(f"--input {name}=...: {name!r} is not one of the streams {streams}")
    now = [float("-inf")]
    processor = Processor(
        config, build_engine(config),
        on_window=lambda window, rows: print(window_line(window, rows), file=out),
        on_late=lambda late: print(json.dumps(_late_record(late), separators=(",", ":")), file=late_out),
        clock=lambda: now[0],
    )
    problems: list[str] = []
    sources = [
        read_events(path, streams.index(name), order, config.event_time, problems)
        for order, (name, path) in enumerate(inputs)
    ]
    for when, _, number, index, data in heapq.merge(*sources, key=lambda item: item[:3]):
        now[0] = when  # the processor's clock is event time: dedup TTLs count in event time too
        try:
            processor.offer(index, data, None, None)
        except MalformedEvent as error:
            problems.append(f"{inputs[[n for n, _ in inputs].index(streams[index])][1]}:{number}: {error}")
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
    parser = argparse.ArgumentParser(prog="python -m joiner replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="a Joiner YAML (with eventTime.field)")
    parser.add_argument("--input", required=True, action="append", metavar="STREAM=FILE",
                        help="a stream's events, one JSON object per line (repeat per stream)")
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
    late_out = open(args.late, "w", encoding="utf-8") if args.late else sys.stderr
    try:
        return replay(config_text, inputs, sys.stdout, late_out, str(args.config))
    except ConfigError as error:
        print(f"joiner replay: configuration error: {error}", file=sys.stderr)
        return 2
    finally:
        if args.late:
            late_out.close()
