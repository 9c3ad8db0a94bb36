"""`python -m joiner replay` over tests/data/replay: expectations computed by hand in the comments.

Window 20 s by `ts`, grace 5 s; t = ts - 1700000000 (window 0 = [0, 20), window 1 = [20, 40)).
Files merged by event time, each in its own order: T1 T2 P3 P4 T5 T12 P19 T21 P22 P18 P26 P10.
* P4 has power_use 0.5: filtered. T12 (B deleted) has no customer_id: skipped in window mode.
* P18 comes after P22 (watermark 22-5=17 < 20): window 0 is still open, so it joins there.
* P26 moves the watermark to 21: window 0 closes. P10 is then late.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from joiner.replay import replay
from streaming_runtime.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "replay"
INPUTS = [("tenants", DATA / "tenants.jsonl"), ("poweruse", DATA / "poweruse.jsonl")]


def run(config_name: str, config_text: str | None = None) -> tuple[list[dict], list[dict]]:
    out, late = io.StringIO(), io.StringIO()
    text = config_text if config_text is not None else (DATA / config_name).read_text()
    assert replay(text, INPUTS, out, late, config_name) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()], [
        json.loads(line) for line in late.getvalue().splitlines()
    ]


def rows(window: dict) -> list[tuple]:
    return [(r["customer_id"], r["tenant_id"], r["tenant_kwh_usage"]) for r in window["rows"]]


def test_window_join_in_event_time_with_grace_and_a_late_event():
    windows, late = run("joiner-window.yaml")
    assert [(w["window_start"], w["window_end"]) for w in windows] == [
        ("2023-11-14T22:13:20Z", "2023-11-14T22:13:40Z"),
        ("2023-11-14T22:13:40Z", "2023-11-14T22:14:00Z"),
    ]
    # A was sent twice (T1, T5) in window 0: every A reading pairs with both, as in the original
    assert rows(windows[0]) == [(1, "A", 10), (1, "A", 10), (2, "B", 30), (1, "A", 50), (1, "A", 50)]
    assert rows(windows[1]) == [(9, "A", 40), (9, "A", 60)]
    assert [(entry["stream"], entry["data"]["kwh_use"], entry["window_start"]) for entry in late] == [
        ("poweruse", 70, "2023-11-14T22:13:20Z")
    ]


def test_table_join_bills_each_reading_once_with_the_tenant_valid_at_its_time():
    windows, late = run("joiner-table.yaml")
    # P3 and P18 see A as customer 1 (T1/T5), P22 and P26 see customer 9 (T21); B is deleted at 12,
    # so P19 finds no tenant.
    assert rows(windows[0]) == [(1, "A", 10), (1, "A", 50)]
    assert rows(windows[1]) == [(9, "A", 40), (9, "A", 60)]
    assert len(late) == 1


def test_aggregation_per_window():
    text = (DATA / "joiner-window.yaml").read_text() + (
        "aggregate:\n  group_by: [customer_id]\n"
        "  fields: {kwh: sum(tenant_kwh_usage), peak: max(tenant_kwh_usage), n: count()}\n"
    )
    windows, _ = run("aggregate", text)
    # window 0: customer 1 has 10+10+50+50 = 120 over 4 rows (peak 50); customer 2 has 30
    assert windows[0]["rows"] == [
        {"customer_id": 1, "kwh": 120, "peak": 50, "n": 4},
        {"customer_id": 2, "kwh": 30, "peak": 30, "n": 1},
    ]
    assert windows[1]["rows"] == [{"customer_id": 9, "kwh": 100, "peak": 60, "n": 2}]


def test_same_input_same_output_every_time():
    command = [
        sys.executable,
        "-m",
        "joiner",
        "replay",
        "--config",
        str(DATA / "joiner-table.yaml"),
        "--input",
        f"tenants={DATA / 'tenants.jsonl'}",
        "--input",
        f"poweruse={DATA / 'poweruse.jsonl'}",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.count("\n") == 2
    assert "1 late" in first.stderr and "Traceback" not in first.stderr


def test_replay_needs_an_event_time_field():
    text = (DATA / "joiner-window.yaml").read_text().replace("eventTime:\n  field: ts\n  grace: 5s\n", "")
    with pytest.raises(ConfigError, match="replay needs eventTime.field"):
        run("no-time", text)


def test_a_line_that_is_not_json_is_skipped_and_reported(tmp_path, capsys):
    broken = tmp_path / "poweruse.jsonl"
    broken.write_text((DATA / "poweruse.jsonl").read_text() + "{oops\n")
    out, late = io.StringIO(), io.StringIO()
    replay((DATA / "joiner-window.yaml").read_text(), [INPUTS[0], ("poweruse", broken)], out, late, "x")
    assert f"skipped {broken}:8: not JSON" in capsys.readouterr().err
    assert out.getvalue().count("\n") == 2


# -- bad lines: each one is skipped and reported, the others give the windows of the clean fixture ----------

WINDOW_CONFIG = (DATA / "joiner-window.yaml").read_text()


def replay_files(tenants: Path, poweruse: Path) -> tuple[str, str, str]:
    """stdout, late output and stderr of a window-join replay, which must return 0."""
    out, late, err = io.StringIO(), io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        assert replay(WINDOW_CONFIG, [("tenants", tenants), ("poweruse", poweruse)], out, late, "x") == 0
    return out.getvalue(), late.getvalue(), err.getvalue()


CLEAN_OUT, CLEAN_LATE, _ = replay_files(INPUTS[0][1], INPUTS[1][1])


def fixture_with(tmp_path: Path, name: str, inserts: dict[int, bytes]) -> Path:
    """A copy of fixture ``name`` with each inserted line at the line number it is keyed by."""
    lines = (DATA / name).read_bytes().splitlines(keepends=True)
    for number in sorted(inserts):
        lines.insert(number - 1, inserts[number] + b"\n")
    path = tmp_path / name
    path.write_bytes(b"".join(lines))
    return path


def skipped(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("skipped ")]


def test_a_line_that_is_not_utf8_is_skipped_and_the_lines_after_it_are_read(tmp_path):
    poweruse = fixture_with(tmp_path, "poweruse.jsonl", {1: b'{"ts": 1700000003, "tenant_id": "\xff"}'})
    out, late, err = replay_files(INPUTS[0][1], poweruse)
    assert f"skipped {poweruse}:1: not valid UTF-8 at byte 34 (0xff)" in skipped(err)
    assert (out, late) == (CLEAN_OUT, CLEAN_LATE)  # the file was read on past its first line
    assert "replay: 9 accepted, 1 filtered, 1 late, 0 duplicate, 2 skipped; 2 windows" in err


def test_an_event_time_of_1e35_ms_is_skipped(tmp_path):
    # a tenant and a reading at that time would pair, and printing their window overflowed datetime
    tenants = fixture_with(tmp_path, "tenants.jsonl", {6: b'{"ts": 1e35, "tenant_id": "A", "customer_id": 7}'})
    poweruse = fixture_with(
        tmp_path, "poweruse.jsonl", {8: b'{"ts": 1e35, "tenant_id": "A", "power_use": 2, "kwh_use": 5}'}
    )
    out, late, err = replay_files(tenants, poweruse)
    assert skipped(err)[-2:] == [
        f"skipped {tenants}:6: event time 1e+32 (epoch seconds) is outside the years 1970-9999",
        f"skipped {poweruse}:8: event time 1e+32 (epoch seconds) is outside the years 1970-9999",
    ]
    assert (out, late) == (CLEAN_OUT, CLEAN_LATE)


def test_event_times_whose_window_cannot_be_printed_are_skipped_and_the_last_printable_one_is_not(tmp_path):
    year_10000 = b'{"ts": 253402300800000, "tenant_id": "A", "customer_id": 7}'  # 10000-01-01T00:00:00Z in ms
    last_window = b'{"ts": "9999-12-31T23:59:50Z", "tenant_id": "A", "customer_id": 7}'  # it ends in 10000
    before_1970 = b'{"ts": -5, "tenant_id": "A", "customer_id": 7}'
    tenants = fixture_with(
        tmp_path,
        "tenants.jsonl",
        {
            1: year_10000,
            2: last_window,
            3: before_1970,
            9: b'{"ts": "9999-12-31T23:59:39Z", "tenant_id": "Z", "customer_id": 8}',
        },
    )
    poweruse = fixture_with(
        tmp_path,
        "poweruse.jsonl",
        {
            8: b'{"ts": "9999-12-31T23:59:39Z", "tenant_id": "Z", "power_use": 2, "kwh_use": 5}',
        },
    )
    out, late, err = replay_files(tenants, poweruse)
    assert skipped(err)[:3] == [
        f"skipped {tenants}:1: event time 253402300800.0 (epoch seconds) is outside the years 1970-9999",
        f"skipped {tenants}:2: event time 253402300790.0 (epoch seconds) is in a window that ends after the year 9999",
        f"skipped {tenants}:3: event time -5.0 (epoch seconds) is outside the years 1970-9999",
    ]
    # the window [23:59:20, 23:59:40) of 9999 is the last one that can be printed: it is
    *windows, last = [json.loads(line) for line in out.splitlines()]
    assert "\n".join(json.dumps(w, separators=(",", ":"), ensure_ascii=False) for w in windows) + "\n" == CLEAN_OUT
    assert (last["window_start"], last["window_end"], rows(last)) == (
        "9999-12-31T23:59:20Z",
        "9999-12-31T23:59:40Z",
        [(8, "Z", 5)],
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"1e400", "data.kwh_use is inf, not a finite number"),
        (str(2**64).encode(), "data.kwh_use is an integer beyond 64 bits"),
        (b'"\\ud800"', "data.kwh_use is not Unicode text (a lone surrogate)"),
        (b"[" * 40 + b"]" * 40, "data.kwh_use" + "[0]" * 31 + " is nested deeper than 32 levels"),
        (b"NaN", "not JSON: NaN is not a JSON value"),  # refused already by the strict parser
    ],
)
def test_a_value_the_joiner_calls_poison_is_skipped_with_its_reason(tmp_path, value, reason):
    line = b'{"ts": 1700000003, "tenant_id": "A", "power_use": 2, "kwh_use": ' + value + b"}"
    poweruse = fixture_with(tmp_path, "poweruse.jsonl", {2: line})
    out, late, err = replay_files(INPUTS[0][1], poweruse)
    assert f"skipped {poweruse}:2: {reason}" in skipped(err)
    assert (out, late) == (CLEAN_OUT, CLEAN_LATE)


def test_an_unexpected_error_on_one_line_is_reported_in_one_line_and_the_replay_goes_on(tmp_path, monkeypatch):
    import joiner.replay.inputs as inputs  # where Reader looks event_time up
    from joiner.engine.join import JoinEngine

    def check(self, index, data):  # met by the core on one entry of a batch, alone or in a batch
        if "crash_offer" in data:
            raise RuntimeError("offer broke\nhere")
        return real_check(self, index, data)

    def event_time(spec, data, *rest):
        if "crash_parse" in data:
            raise KeyError("parse")
        return real_event_time(spec, data, *rest)

    real_check, real_event_time = JoinEngine.check, inputs.event_time
    monkeypatch.setattr(JoinEngine, "check", check)
    monkeypatch.setattr(inputs, "event_time", event_time)
    poweruse = fixture_with(
        tmp_path,
        "poweruse.jsonl",
        {
            2: b'{"ts": 1700000003, "crash_offer": 1}',
            5: b'{"ts": "2023-11-14T22:13:23Z", "crash_parse": 1}',  # a time in text: through event_time
        },
    )
    out, late, err = replay_files(INPUTS[0][1], poweruse)
    assert f"skipped {poweruse}:2: unexpected RuntimeError: offer broke\\nhere" in skipped(err)
    assert f"skipped {poweruse}:5: unexpected KeyError: 'parse'" in skipped(err)
    assert (out, late) == (CLEAN_OUT, CLEAN_LATE)
    assert "Traceback" not in err


# bad lines mixed among the good ones of the fixture: (file, line number) -> line
MIXED = {
    ("tenants.jsonl", 1): b"\xfe\xff not text",
    ("tenants.jsonl", 4): b'{"ts": 1e35, "tenant_id": "A", "customer_id": 7}',
    ("tenants.jsonl", 7): b'{"ts": 253402300800000, "tenant_id": "A", "customer_id": 7}',
    ("poweruse.jsonl", 3): b'{"ts": 1e35, "tenant_id": "A", "power_use": 2, "kwh_use": 5}',
    ("poweruse.jsonl", 4): b'{"ts": 1700000003, "tenant_id": "A", "power_use": 2, "kwh_use": 1e999}',
    ("poweruse.jsonl", 6): b'{"ts": 1700000004, "tenant_id": "A\xc3", "power_use": 2, "kwh_use": 5}',
    ("poweruse.jsonl", 9): b'{"ts": 253402300800000, "tenant_id": "A", "power_use": 2, "kwh_use": 5}',
    ("poweruse.jsonl", 12): b'{"ts": 1700000005, "tenant_id": "A", "power_use": 2, "kwh_use": 18446744073709551616}',
}


def mixed_files(tmp_path: Path) -> tuple[Path, Path]:
    tenants, poweruse = (
        fixture_with(tmp_path, name, {number: line for (file, number), line in MIXED.items() if file == name})
        for name in ("tenants.jsonl", "poweruse.jsonl")
    )
    return tenants, poweruse


def assert_each_bad_line_reported(err: str, tmp_path: Path) -> None:
    lines = skipped(err)
    for file, number in MIXED:
        assert sum(line.startswith(f"skipped {tmp_path / file}:{number}: ") for line in lines) == 1, (file, number)
    assert len(lines) == len(MIXED) + 1  # and the fixture's own tenant without customer_id
    assert f"{len(MIXED) + 1} skipped; 2 windows" in err.splitlines()[-1]


def test_bad_lines_among_good_ones_leave_the_windows_of_the_clean_input(tmp_path):
    out, late, err = replay_files(*mixed_files(tmp_path))
    assert (out, late) == (CLEAN_OUT, CLEAN_LATE)
    assert_each_bad_line_reported(err, tmp_path)


def test_the_cli_over_bad_lines_exits_0_without_a_traceback(tmp_path):
    tenants, poweruse = mixed_files(tmp_path)
    late = tmp_path / "late.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "joiner",
            "replay",
            "--config",
            str(DATA / "joiner-window.yaml"),
            "--input",
            f"tenants={tenants}",
            "--input",
            f"poweruse={poweruse}",
            "--late",
            str(late),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == CLEAN_OUT and late.read_text() == CLEAN_LATE
    assert_each_bad_line_reported(result.stderr, tmp_path)


def test_blocks_of_lines_batches_and_buffered_output_change_nothing_not_even_the_order_of_skipped_lines(
    tmp_path, monkeypatch
):
    from joiner.replay import inputs, output, run

    tenants, poweruse = mixed_files(tmp_path)
    whole = replay_files(tenants, poweruse)
    monkeypatch.setattr(inputs, "BLOCK_BYTES", 1)  # a line per block: skipped lines met a block later
    monkeypatch.setattr(run, "BATCH_EVENTS", 1)
    monkeypatch.setattr(output, "OUTPUT_BYTES", 1)
    assert replay_files(tenants, poweruse) == whole
