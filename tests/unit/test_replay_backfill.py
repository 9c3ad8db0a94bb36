"""`python -m joiner replay` as a backfill tool: what batching, the fast decoder, blocks of lines, gzip and
progress change, and what they must not (the rows, late events, skipped lines and summary of one event
at a time)."""

from __future__ import annotations

import contextlib
import gzip
import heapq
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from joiner.config import config_from_yaml
from joiner.core import JoinCore, build_engine
from joiner.engine.eventtime import event_time
from joiner.replay import decode, output, replay, run
from joiner.replay.inputs import BLOCK_BYTES, Block, Reader
from streaming_runtime.cloudevents import loads
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.values import value_problem

DATA = Path(__file__).resolve().parents[1] / "data" / "replay"
WINDOW_CONFIG = (DATA / "joiner-window.yaml").read_text()


def replay_paths(config: str, inputs: list[tuple[str, Path]]) -> tuple[str, str, str]:
    out, late, err = io.StringIO(), io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        assert replay(config, inputs, out, late, "x") == 0
    return out.getvalue(), late.getvalue(), err.getvalue()


def one_at_a_time(config_text: str, inputs: list[tuple[str, Path]]) -> tuple[str, str, str]:
    """The replay as it was: heapq.merge of the good lines, one offer each, the clock at its event time."""
    config = config_from_yaml(config_text)
    assert config.event_time is not None
    streams = [source.name for source in config.sources]
    out, late, now = io.StringIO(), io.StringIO(), [0.0]
    core = JoinCore(
        config,
        build_engine(config),
        on_window=lambda window, rows: print(output.window_line(window, rows).decode(), file=out),
        on_late=lambda event: print(output.dumps(output.late_record(event)).decode(), file=late),
        clock=lambda: now[0],
    )

    def events(order: int, path: Path):
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            data = loads(line)
            yield event_time(config.event_time, data, None, 0.0), order, number, data

    for when, order, _, data in heapq.merge(*(events(o, p) for o, (_, p) in enumerate(inputs))):
        now[0] = when
        with contextlib.suppress(MalformedEvent):
            core.offer(streams.index(inputs[order][0]), data)
    core.flush()
    stats = core.stats
    summary = (
        f"replay: {sum(stats.accepted.values())} accepted, {sum(stats.filtered.values())} filtered, "
        f"{sum(stats.late.values())} late, {sum(stats.duplicates.values())} duplicate, 0 skipped; "
        f"{stats.windows_closed} windows"
    )
    return out.getvalue(), late.getvalue(), summary


def random_files(tmp_path: Path, seed: int) -> list[tuple[str, Path]]:
    """Tenants and readings out of order (some beyond the grace: late), two files of readings, and
    events at the same time in different files (the earlier file goes first)."""
    rng = random.Random(seed)
    base = 1_700_000_000
    files: list[tuple[str, Path]] = []
    for name, count in (("tenants", 60), ("poweruse", 400), ("poweruse", 300)):
        times = sorted(base + rng.randrange(0, 120) for _ in range(count))
        for _ in range(count // 10):  # a few out of order, by up to 12 s (grace 5 s)
            at = rng.randrange(count)
            times[at] -= rng.randrange(0, 12)
        lines = []
        for n, ts in enumerate(times):
            event = {"ts": ts, "tenant_id": f"t{rng.randrange(8)}"}
            if name == "tenants":
                event["customer_id"] = rng.randrange(100)
            else:
                event.update(power_use=rng.choice([0.5, 1.0, 1.5]), kwh_use=rng.randrange(100), reading_id=n % 50)
            lines.append(json.dumps(event))
        path = tmp_path / f"{name}-{len(files)}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        files.append((name, path))
    return files


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "extra",
    ["", "join: table\n", "dedup: {ttl: 7s, keyFields: {poweruse: reading_id}}\n"],
    ids=["window", "table", "dedup"],
)
def test_batches_give_what_one_event_at_a_time_gives(tmp_path, seed, extra):
    files = random_files(tmp_path, seed)
    out, late, err = replay_paths(WINDOW_CONFIG + extra, files)
    assert (out, late, err.splitlines()[-1]) == one_at_a_time(WINDOW_CONFIG + extra, files)
    assert late and out.count("\n") >= 5  # the case has late events and windows
    assert "duplicate" not in extra or " 0 duplicate" not in err


# the fast decoder takes a flat object; what it refuses is decoded the exact way: either way the outcome
# and the reason are those of Python's json and value_problem
LINES = [
    b'{"a": 9223372036854775807, "b": -9223372036854775807}',
    b'{"a": 9223372036854775808}',
    b'{"a": -9223372036854775808}',
    b'{"a": 18446744073709551616}',
    b'{"a": 1.7976931348623157e308, "b": 1e309, "c": -1e400}',
    b'{"a": -0.0, "b": 1.5e-400, "c": 0.1, "d": 1e22, "e": 5e-324}',
    b'{"a": "\\u00e9\\ud83d\\ude00", "b": "\xc3\xa9"}',
    b'{"a": "\\ud800"}',
    b'{"\\udc00": 1}',
    b'{"a": "A\xc3"}',
    b'{"a": [1, {"b": 2}], "c": {"d": null}}',
    b'{"a": ' + b"[" * 33 + b"]" * 33 + b"}",
    b'{"a": ' + b"[" * 20000 + b"]" * 20000 + b"}",
    b'{"a": 1, "a": 2, "b": true, "c": false, "d": null}',
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b"\xef\xbb\xbf{}",
    b'  {"a": 1}  \r\n',
    b"   \n",
    b'"text"',
    b"[1, 2]",
    b"12",
    b'{"a": 1} {"b": 2}',
    b'{"a": 01}',
]


def exactly(raw: bytes) -> tuple | str | None:
    """What the replay did before the fast decoder, for one line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8 at byte {error.start + 1} (0x{raw[error.start]:02x})"
    if not line.strip():
        return None
    try:
        data = loads(line)
    except ValueError as error:
        return f"not JSON: {error}"
    return problem if (problem := value_problem(data)) is not None else (data,)


@pytest.mark.parametrize("raw", LINES, ids=range(len(LINES)))
def test_the_fast_decoder_reads_and_refuses_as_the_live_joiner_does(raw):
    try:
        fast: tuple | str | None = (decode.FLAT.decode(raw),)
    except Exception:  # noqa: BLE001
        fast = decode.decode_exactly(raw)
    expected = exactly(raw)
    assert fast == expected
    if isinstance(expected, tuple):  # the same types too (1 is not 1.0, and -0.0 keeps its sign)
        assert json.dumps(fast[0]) == json.dumps(expected[0])  # type: ignore[index]


@pytest.mark.parametrize(
    "ts", [1700000003, 1700000003.25, -5, 0, 99_999_999_999, 99_999_999_999.9, 100_000_000_000, 1.7e12, True, "x"]
)
def test_the_inline_event_time_is_event_time(tmp_path, ts):
    config = config_from_yaml(WINDOW_CONFIG)
    assert config.event_time is not None
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"ts": ts}) + "\n")
    windows = JoinCore(config, build_engine(config), on_window=lambda *_: None).windows
    skipped: list[str] = []
    reader = Reader(path, config.event_time, windows.window_at, windows.size, skipped.append)
    times = [when for block in reader.blocks() for when in block.times]
    expected = event_time(config.event_time, {"ts": ts}, None, float("nan"))
    if decode.time_reason(expected, config.event_time, windows.window_at) is None:
        assert times == [expected] and type(times[0]) is float
    else:
        assert times == [] and len(skipped) == 1


def test_gzip_input_by_its_name_or_its_first_bytes(tmp_path):
    inputs = [("tenants", DATA / "tenants.jsonl"), ("poweruse", DATA / "poweruse.jsonl")]
    plain = replay_paths(WINDOW_CONFIG, inputs)
    named = tmp_path / "tenants.jsonl.gz"
    named.write_bytes(gzip.compress((DATA / "tenants.jsonl").read_bytes()))
    unnamed = tmp_path / "poweruse.jsonl"
    unnamed.write_bytes(gzip.compress((DATA / "poweruse.jsonl").read_bytes()))
    out, late, err = replay_paths(WINDOW_CONFIG, [("tenants", named), ("poweruse", unnamed)])
    assert (out, late) == plain[:2]
    assert err == plain[2].replace(str(DATA / "tenants.jsonl"), str(named))


def test_progress_every_few_seconds_and_none_in_a_short_run(monkeypatch):
    inputs = [("tenants", DATA / "tenants.jsonl"), ("poweruse", DATA / "poweruse.jsonl")]
    quiet = replay_paths(WINDOW_CONFIG, inputs)[2]
    assert "events read" not in quiet
    monkeypatch.setattr(run, "PROGRESS_SECONDS", 0.0)
    *progress, summary = [line for line in replay_paths(WINDOW_CONFIG, inputs)[2].splitlines() if "replay:" in line]
    assert progress and all("events read" in line and "windows closed" in line for line in progress)
    assert progress[-1].startswith("replay: 12 events read, 1 windows closed, ") and progress[-1].endswith(" events/s")
    assert summary == quiet.splitlines()[-1]


def test_the_replay_command_imports_neither_the_web_app_nor_the_dapr_sdk():
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "joiner",
            "replay",
            "--config",
            str(DATA / "joiner-window.yaml"),
            "--input",
            f"tenants={DATA / 'tenants.jsonl'}",
            "--input",
            f"poweruse={DATA / 'poweruse.jsonl'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "joiner.replay" in imported and "msgspec" in imported
    web = {name for name in imported if name.split(".")[0] in ("fastapi", "starlette", "uvicorn", "dapr", "httpx")}
    assert web == set() and "joiner.app" not in imported


def test_a_file_is_read_a_block_at_a_time_not_whole(tmp_path):
    config = config_from_yaml(WINDOW_CONFIG)
    assert config.event_time is not None
    path = tmp_path / "poweruse.jsonl"
    line = '{"ts": 1700000003, "tenant_id": "A", "power_use": 1.2, "kwh_use": 10}\n'
    path.write_text(line * 100_000)  # 7 MB
    windows = JoinCore(config, build_engine(config), on_window=lambda *_: None).windows
    reader = Reader(path, config.event_time, windows.window_at, windows.size, print)
    blocks = reader.blocks()
    first = next(blocks)
    # the first block is handed on once the second is read (for the lines skipped after its last good one)
    assert len(first.times) < BLOCK_BYTES // len(line) + 2 and reader.events < 2 * len(first.times) + 2
    assert sum(len(block.times) for block in blocks) + len(first.times) == 100_000


# blocks the whole-block path must leave to the lines, or read as they do; two objects on one line and an
# object over two lines together keep the count of objects equal to the count of lines
BLOCKS = {
    "clean": b'{"ts": 1700000001, "tenant_id": "A", "customer_id": 1}\n{"ts": 1700000002.5, "tenant_id": "B"}',
    "two on a line, one over two": b'{"ts": 1700000001} {"ts": 1700000002}\n{"ts": 1700000003,\n"a": 1}',
    "braces in strings": b'{"ts": 1700000001, "s": "}"}\n{"ts": 1700000002, "s": "{"}',
    "a string over two lines": b'{"ts": 1700000001, "s": "}\n{"}',
    "a blank line": b'{"ts": 1700000001}\n\n{"ts": 1700000002}',
    "crlf": b'{"ts": 1700000001}\r\n{"ts": 1700000002}\r',
    "nested": b'{"ts": 1700000001, "a": {"b": 1}}\n{"ts": 1700000002}',
    "ms and booleans": b'{"ts": 1700000001000}\n{"ts": true}\n{"ts": 1700000002}',
    "text time": b'{"ts": "2023-11-14T22:13:21Z"}\n{"ts": 1700000002}',
    "out of range": b'{"ts": -1}\n{"ts": 1700000002}',
    "no time": b'{"tenant_id": "A"}\n{"ts": 1700000002}',
    "poison": b'{"ts": 1700000001, "a": 1e400}\n{"ts": 1700000002, "a": 9223372036854775808}',
}


@pytest.mark.parametrize("text", BLOCKS.values(), ids=BLOCKS.keys())
def test_a_whole_block_reads_as_its_lines_do(tmp_path, monkeypatch, text):
    config = config_from_yaml(WINDOW_CONFIG)
    assert config.event_time is not None
    path = tmp_path / "events.jsonl"
    path.write_bytes(text + b"\n")
    windows = JoinCore(config, build_engine(config), on_window=lambda *_: None).windows

    def read() -> tuple[list, list[str]]:
        skipped: list[str] = []
        reader = Reader(path, config.event_time, windows.window_at, windows.size, skipped.append)
        blocks = [(b.times, list(b.numbers), b.data, b.after) for b in reader.blocks()]
        return blocks, skipped

    whole = read()
    monkeypatch.setattr(Reader, "_whole", lambda *_: None)
    assert whole == read()
    if text == BLOCKS["clean"]:  # and the clean block did take the whole-block path
        monkeypatch.undo()
        assert isinstance(Reader(path, config.event_time, windows.window_at, 20, print)._whole(text, 0), Block)
