"""`python -m joiner replay` over tests/data/replay: expectations computed by hand in the comments.

Window 20 s by `ts`, grace 5 s; t = ts - 1700000000 (window 0 = [0, 20), window 1 = [20, 40)).
Files merged by event time, each in its own order: T1 T2 P3 P4 T5 T12 P19 T21 P22 P18 P26 P10.
* P4 has power_use 0.5: filtered. T12 (B deleted) has no customer_id: skipped in window mode.
* P18 comes after P22 (watermark 22-5=17 < 20): window 0 is still open, so it joins there.
* P26 moves the watermark to 21: window 0 closes. P10 is then late.
"""

from __future__ import annotations

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
    return [json.loads(line) for line in out.getvalue().splitlines()], [json.loads(line) for line in late.getvalue().splitlines()]


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
        sys.executable, "-m", "joiner", "replay", "--config", str(DATA / "joiner-table.yaml"),
        "--input", f"tenants={DATA / 'tenants.jsonl'}", "--input", f"poweruse={DATA / 'poweruse.jsonl'}",
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
