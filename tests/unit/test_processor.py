"""The joiner's processing without I/O: time, lateness, idleness, dedup, join modes (hand-computed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from joiner.config import config_from_yaml
from joiner.processor import DUPLICATE, LATE, Processor, build_engine
from streaming_runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = (ROOT / "services" / "joiner" / "joiner.yaml").read_text()


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def processor(extra: str = "", clock: Clock | None = None) -> tuple[Processor, list, list]:
    spec = yaml.safe_load(BASE)["spec"]
    spec.update(yaml.safe_load(extra) or {})
    config = config_from_yaml(yaml.safe_dump(spec))
    windows, late = [], []
    proc = Processor(config, build_engine(config), on_window=lambda w, rows: windows.append((w, rows)),
                     on_late=late.append, clock=clock or Clock())
    return proc, windows, late


def example_messages() -> dict[str, list]:
    from streaming_runtime.expressions import compile_expression

    run_file = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    return {
        app["env"]["STREAM_TOPIC"]: compile_expression(app["env"]["MESSAGE_EXPR"], setting="m").evaluate(None)
        for app in run_file["apps"] if "MESSAGE_EXPR" in app.get("env", {})
    }


def billable(windows) -> list[tuple]:
    return sorted((r["customer_id"], r["tenant_id"], r["tenant_kwh_usage"]) for _, rows in windows for r in rows)


@pytest.mark.parametrize("mode, copies", [("window", 3), ("table", 1)])
def test_example_data_in_both_join_modes(mode, copies):
    """Tenants re-sent three times in one window: the window join bills each reading three times
    (as the original's output did), the table join once."""
    clock = Clock()
    proc, windows, _ = processor(f"join: {mode}", clock)
    data = example_messages()
    for _ in range(3):
        for tenant in data["tenants"]:
            proc.offer(0, tenant)
    for reading in data["poweruse"]:
        proc.offer(1, reading)
    clock.now += 20
    proc.tick()
    expected = [(243, "dc:kddi:cn:hnk2:11", 1119), (243, "dc:kddi:cn:hnk2:11", 1201),
                (924, "dc:eqix:us:chi1:12", 1034), (924, "dc:eqix:us:chi1:12", 1134)]
    assert billable(windows) == sorted(expected * copies)


def test_processing_time_windows_close_on_the_clock():
    clock = Clock(1_700_000_005.0)
    proc, windows, _ = processor("", clock)
    proc.offer(0, {"tenant_id": "t", "customer_id": 1})
    proc.offer(1, {"tenant_id": "t", "power_use": 2, "kwh_use": 5})
    clock.now = 1_700_000_019.9
    proc.tick()
    assert windows == []
    clock.now = 1_700_000_020.0
    proc.tick()
    assert [(w.start, w.end) for w, _ in windows] == [(1_700_000_000.0, 1_700_000_020.0)]


def test_a_tick_just_before_a_window_end_does_not_skip_that_window():
    # timers fire up to a millisecond early (uvloop counts in ms): the tick closes nothing, and by the
    # time the next wait is computed the clock has passed the end. The window still open must close
    # at once, not one window length later (seen as 2 s late rows in bench/pipeline.py).
    clock = Clock(1_700_000_005.0)
    proc, windows, _ = processor("", clock)
    proc.offer(0, {"tenant_id": "t", "customer_id": 1})
    proc.offer(1, {"tenant_id": "t", "power_use": 2, "kwh_use": 5})
    clock.now = 1_700_000_019.9995
    proc.tick()
    assert windows == []
    clock.now = 1_700_000_020.0002
    assert proc.next_tick() == 0.0
    proc.tick()
    assert [(w.start, w.end) for w, _ in windows] == [(1_700_000_000.0, 1_700_000_020.0)]
    assert proc.next_tick() == pytest.approx(19.9998)  # nothing open: the end of the current window


def test_idle_input_closes_event_time_windows_and_later_events_are_late():
    clock = Clock(5_000.0)
    proc, windows, late = processor("eventTime: {field: ts, grace: 5s, idle: 30s}", clock)
    proc.offer(0, {"ts": 1_700_000_001, "tenant_id": "t", "customer_id": 1})
    proc.offer(1, {"ts": 1_700_000_002, "tenant_id": "t", "power_use": 2, "kwh_use": 5})
    clock.now += 29
    proc.tick()
    assert windows == []  # the watermark (2 - 5) has not passed the end, and 29 s is not idle yet
    clock.now += 1
    proc.tick()
    assert billable(windows) == [(1, "t", 5)]
    assert proc.stats.windows_idle_closed == 1
    assert proc.offer(1, {"ts": 1_700_000_003, "tenant_id": "t", "power_use": 2, "kwh_use": 6}) == LATE
    assert [(entry.stream, entry.data["kwh_use"]) for entry in late] == [("poweruse", 6)]


def test_cloudevent_time_is_used_when_the_field_is_missing():
    proc, windows, _ = processor("eventTime: {field: ts}")
    proc.offer(0, {"tenant_id": "t", "customer_id": 1}, "e1", "2023-11-14T22:13:21Z")  # 1700000001
    proc.offer(1, {"ts": 1_700_000_002_000, "tenant_id": "t", "power_use": 2, "kwh_use": 5})  # epoch ms
    proc.offer(1, {"ts": "2023-11-14T22:13:45+00:00", "tenant_id": "x", "power_use": 2, "kwh_use": 5})  # next window
    assert [(w.start, billable([(w, rows)])) for w, rows in windows] == [(1_700_000_000.0, [(1, "t", 5)])]


def test_a_redelivered_event_is_joined_once():
    clock = Clock()
    proc, windows, _ = processor("dedup: {ttl: 1m}", clock)
    proc.offer(0, {"tenant_id": "t", "customer_id": 1}, "tenant-1")
    reading = {"tenant_id": "t", "power_use": 2, "kwh_use": 5}
    assert proc.offer(1, reading, "reading-1") == "accepted"
    assert proc.offer(1, reading, "reading-1") == DUPLICATE
    clock.now += 20
    proc.tick()
    assert billable(windows) == [(1, "t", 5)]
    assert proc.stats.duplicates == {"poweruse": 1}


def test_dedup_by_key_field_when_the_publisher_gives_no_id_and_forgets_after_the_ttl():
    clock = Clock()
    proc, _, _ = processor("dedup: {ttl: 10s, keyFields: {poweruse: reading_id}}", clock)
    reading = {"reading_id": 7, "tenant_id": "t", "power_use": 2, "kwh_use": 5}
    assert proc.offer(1, reading) == "accepted"
    assert proc.offer(1, dict(reading)) == DUPLICATE
    clock.now += 11
    assert proc.offer(1, dict(reading)) == "accepted"


def test_table_join_needs_a_key_between_the_streams():
    spec = yaml.safe_load(BASE)["spec"]
    spec["join"] = "table"
    spec["stream"]["where"] = "poweruse.power_use >= 1.0"
    config = config_from_yaml(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="join: table needs an equality between the two streams"):
        Processor.check_config(config, build_engine(config))


def test_aggregate_errors_stop_the_configuration():
    spec = yaml.safe_load(BASE)["spec"]
    spec["aggregate"] = {"group_by": ["customer_id"], "fields": {"kwh": "total(tenant_kwh_usage)"}}
    config = config_from_yaml(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"aggregate.fields.kwh: .*total\(tenant_kwh_usage\)"):
        Processor.check_config(config, build_engine(config))


# -- handover of open windows (state.store) ------------------------------------------------------


def test_a_handed_over_window_continues_where_the_last_run_stopped():
    import json

    clock = Clock(1_700_000_005.0)
    before, windows_before, _ = processor("", clock)
    before.offer(0, {"tenant_id": "t1", "customer_id": 1}, "tenant-1")
    before.offer(0, {"tenant_id": "t2", "customer_id": 2}, "tenant-2")
    before.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10}, "reading-1")
    before.offer(1, {"tenant_id": "t1", "power_use": 0.5, "kwh_use": 11}, "filtered")
    snapshot = json.loads(json.dumps(before.snapshot()))  # as the state store keeps it
    assert [len(w["events"]["tenants"]) for w in snapshot["windows"]] == [2]
    assert [[event_id for _, event_id in w["events"]["poweruse"]] for w in snapshot["windows"]] == [["reading-1"]]

    clock.now = 1_700_000_012.0  # the next run, same window
    after, windows_after, _ = processor("", clock)
    after.offer(1, {"tenant_id": "t2", "power_use": 2.0, "kwh_use": 20}, "reading-2")  # before the restore
    assert after.restore(snapshot) == 3
    after.offer(1, {"tenant_id": "t1", "power_use": 1.1, "kwh_use": 30}, "reading-3")
    clock.now = 1_700_000_020.0
    after.tick()
    assert windows_before == []
    assert billable(windows_after) == [(1, "t1", 10), (1, "t1", 30), (2, "t2", 20)]
    assert after.stats.restored == 3


def test_a_handed_over_window_whose_end_has_passed_closes_at_the_next_tick():
    clock = Clock(1_700_000_005.0)
    before, _, _ = processor("", clock)
    before.offer(0, {"tenant_id": "t1", "customer_id": 1})
    before.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
    snapshot = before.snapshot()
    clock.now = 1_700_000_047.0  # the service was down for two windows
    after, windows, _ = processor("", clock)
    after.restore(snapshot)
    assert after.next_tick() == 0.0
    after.tick()
    assert [(w.start, w.end) for w, _ in windows] == [(1_700_000_000.0, 1_700_000_020.0)]
    assert billable(windows) == [(1, "t1", 10)]


@pytest.mark.parametrize(
    "change, reason",
    [({"window_seconds": 30}, "over 30s windows"), ({"streams": ["a", "b"]}, "joins ['a', 'b']"),
     ({"version": 99}, "not a handover snapshot")],
)
def test_a_snapshot_of_another_joiner_is_refused(change, reason):
    proc, _, _ = processor("")
    proc.offer(0, {"tenant_id": "t1", "customer_id": 1})
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        processor("")[0].restore({**proc.snapshot(), **change})


def test_the_handover_carries_the_dedup_memory():
    import json

    clock = Clock()
    spec = "dedup: {ttl: 1m, keyFields: {poweruse: reading_id}}"
    before, _, _ = processor(spec, clock)
    before.offer(0, {"tenant_id": "t1", "customer_id": 1}, "tenant-1")
    before.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10, "reading_id": 7})
    snapshot = json.loads(json.dumps(before.snapshot()))
    clock.now += 5
    after, windows, _ = processor(spec, clock)
    after.restore(snapshot)
    assert after.offer(0, {"tenant_id": "t1", "customer_id": 1}, "tenant-1") == DUPLICATE  # by CloudEvent id
    assert after.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10, "reading_id": 7}) == DUPLICATE
    assert after.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 11, "reading_id": 8}) == "accepted"
    clock.now += 20
    after.tick()
    assert billable(windows) == [(1, "t1", 10), (1, "t1", 11)]  # each reading once


def test_the_handover_carries_the_watermark_in_event_time():
    import json

    clock = Clock(5_000.0)
    spec = "eventTime: {field: ts, grace: 0s, idle: 1h}"
    before, windows_before, _ = processor(spec, clock)
    before.offer(0, {"ts": 1_700_000_001, "tenant_id": "t", "customer_id": 1})
    before.offer(1, {"ts": 1_700_000_021, "tenant_id": "t", "power_use": 2, "kwh_use": 5})  # closes [0, 20)
    before.offer(0, {"ts": 1_700_000_022, "tenant_id": "t", "customer_id": 2})
    assert [w.end for w, _ in windows_before] == []  # [0, 20) had no pair
    snapshot = json.loads(json.dumps(before.snapshot()))
    assert snapshot["watermark"] == 1_700_000_022 and snapshot["closed_through"] == 1_700_000_022

    after, windows, late = processor(spec, clock)
    after.restore(snapshot)
    assert after.offer(1, {"ts": 1_700_000_010, "tenant_id": "t", "power_use": 2, "kwh_use": 6}) == LATE
    after.offer(1, {"ts": 1_700_000_030, "tenant_id": "t", "power_use": 2, "kwh_use": 7})
    after.offer(1, {"ts": 1_700_000_041, "tenant_id": "x", "power_use": 2, "kwh_use": 8})  # the watermark passes 40
    assert [(w.start, w.end) for w, _ in windows] == [(1_700_000_020.0, 1_700_000_040.0)]
    assert billable(windows) == [(2, "t", 5), (2, "t", 7)]  # the handed-over tenant and reading join the new one
    assert [entry.data["kwh_use"] for entry in late] == [6]


def test_a_handed_over_watermark_closes_what_it_had_passed():
    clock = Clock(5_000.0)
    spec = "eventTime: {field: ts, grace: 0s, idle: 1h}"
    after, windows, _ = processor(spec, clock)
    after.offer(0, {"ts": 1_700_000_001, "tenant_id": "t", "customer_id": 1})
    after.offer(1, {"ts": 1_700_000_002, "tenant_id": "t", "power_use": 2, "kwh_use": 5})
    snapshot = {**after.snapshot(), "windows": [], "watermark": 1_700_000_050.0, "closed_through": 1_700_000_040.0}
    after.restore(snapshot)  # the previous run had seen events up to 50: [0, 20) is over
    assert billable(windows) == [(1, "t", 5)]


def test_the_handover_carries_the_table_and_the_rows_of_a_table_join():
    import json

    clock = Clock(1_700_000_005.0)
    spec = "join: table"
    before, _, _ = processor(spec, clock)
    before.offer(0, {"tenant_id": "t1", "customer_id": 1})
    before.offer(0, {"tenant_id": 7, "customer_id": 70})  # an int key stays an int key
    before.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})  # a row, made on arrival
    snapshot = json.loads(json.dumps(before.snapshot()))

    clock.now = 1_700_000_009.0
    after, windows, _ = processor(spec, clock)
    after.offer(0, {"tenant_id": "t1", "customer_id": 2})  # a newer version, in this run
    assert after.restore(snapshot) == 2 + 1  # two versions, one joined event
    after.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 11})  # joins the newest version
    after.offer(1, {"tenant_id": 7, "power_use": 1.5, "kwh_use": 12})
    after.offer(1, {"tenant_id": "7", "power_use": 1.5, "kwh_use": 13})  # "7" is not 7
    clock.now = 1_700_000_020.0
    after.tick()
    assert billable(windows) == [(1, "t1", 10), (2, "t1", 11), (70, 7, 12)]


def test_a_snapshot_of_the_other_join_mode_is_refused():
    window_join, _, _ = processor("")
    with pytest.raises(ValueError, match=r"\(join: window\), this joiner .* \(join: table\)"):
        processor("join: table")[0].restore(window_join.snapshot())


@pytest.mark.parametrize("key", ["a", 7, 7.5, (1, "b"), ("x", 2.0)])
def test_plain_keys_survive_json(key):
    import json

    from joiner.engine.join import key_from_json, key_to_json

    decoded = key_from_json(json.loads(json.dumps(key_to_json(key))))
    assert decoded == key and type(decoded) is type(key)


def test_boolean_keys_stay_apart_from_numbers_through_json():
    import json

    from joiner.engine.join import key_from_json, key_to_json

    proc, _, _ = processor("join: table")
    true_key = proc.engine.plain_key(0, {"tenant_id": True, "customer_id": 1})
    one_key = proc.engine.plain_key(0, {"tenant_id": 1, "customer_id": 1})
    decoded = key_from_json(json.loads(json.dumps(key_to_json(true_key))))
    assert decoded == true_key and decoded != one_key
    with pytest.raises(ValueError):
        key_from_json(["x", 1])
