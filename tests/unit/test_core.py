"""The joiner's processing without I/O: time, lateness, idleness, dedup, join modes (hand-computed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from joiner.config import config_from_yaml
from joiner.core import ACCEPTED, DUPLICATE, FILTERED, LATE, JoinCore, build_engine
from streaming_runtime.errors import ConfigError, MalformedEvent

ROOT = Path(__file__).resolve().parents[2]
BASE = (ROOT / "services" / "joiner" / "joiner.yaml").read_text()


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def processor(extra: str = "", clock: Clock | None = None) -> tuple[JoinCore, list, list]:
    spec = yaml.safe_load(BASE)["spec"]
    spec.update(yaml.safe_load(extra) or {})
    config = config_from_yaml(yaml.safe_dump(spec))
    windows, late = [], []
    proc = JoinCore(
        config,
        build_engine(config),
        on_window=lambda w, rows: windows.append((w, rows)),
        on_late=late.append,
        clock=clock or Clock(),
    )
    return proc, windows, late


def example_messages() -> dict[str, list]:
    from streaming_runtime.expressions import compile_expression

    run_file = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    return {
        app["env"]["STREAM_TOPIC"]: compile_expression(app["env"]["MESSAGE_EXPR"], setting="m").evaluate(None)
        for app in run_file["apps"]
        if "MESSAGE_EXPR" in app.get("env", {})
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
    expected = [
        (243, "dc:kddi:cn:hnk2:11", 1119),
        (243, "dc:kddi:cn:hnk2:11", 1201),
        (924, "dc:eqix:us:chi1:12", 1034),
        (924, "dc:eqix:us:chi1:12", 1134),
    ]
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
    clock = Clock(1_700_000_010.0)
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
    with pytest.raises(ConfigError, match="join: table needs an equality between the two streams"):
        config_from_yaml(yaml.safe_dump(spec))


def test_aggregate_errors_stop_the_configuration():
    spec = yaml.safe_load(BASE)["spec"]
    spec["aggregate"] = {"group_by": ["customer_id"], "fields": {"kwh": "total(tenant_kwh_usage)"}}
    with pytest.raises(ConfigError, match=r"aggregate.fields.kwh: .*total\(tenant_kwh_usage\)"):
        config_from_yaml(yaml.safe_dump(spec))


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
    [({"streams": ["a", "b"]}, "joins ['a', 'b']"), ({"version": 99}, "not a handover snapshot")],
)
def test_a_snapshot_of_another_joiner_is_refused(change, reason):
    proc, _, _ = processor("")
    proc.offer(0, {"tenant_id": "t1", "customer_id": 1})
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        processor("")[0].restore({**proc.snapshot(), **change})


def test_a_snapshot_of_other_windows_is_carried_over_into_this_joiners_windows():
    clock = Clock(1_700_000_005.0)
    before, _, _ = processor("window: 30s\ndedup: {ttl: 10m}\n", clock)
    before.offer(0, {"tenant_id": "t1", "customer_id": 1}, "ten-1")
    before.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10}, "pow-1")
    snapshot = before.snapshot()
    clock.now = 1_700_000_012.0
    after, windows, _ = processor("window: 20s\ndedup: {ttl: 10m}\n", clock)
    assert after.restore(snapshot) == 2
    # a redelivery of a carried event is known: it is not joined twice
    assert after.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10}, "pow-1") == "duplicate"
    clock.now = 1_700_000_021.0
    after.tick()
    assert [(w.start, w.end) for w, _ in windows] == [(1_700_000_000.0, 1_700_000_020.0)]  # this joiner's window
    assert billable(windows) == [(1, "t1", 10)]


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

    clock = Clock(1_700_000_010.0)
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
    clock = Clock(1_700_000_010.0)
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
    before.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})  # held, with its time, until the close
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


def test_a_snapshot_of_the_other_join_mode_is_carried_over():
    window_join, _, _ = processor("")
    window_join.offer(0, {"tenant_id": "t1", "customer_id": 1})
    window_join.offer(1, {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
    table_join, windows, _ = processor("join: table")
    assert table_join.restore(window_join.snapshot()) == 2
    table_join.flush()
    assert billable(windows) == [(1, "t1", 10)]


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


# -- bad event times, and what moves the watermark ------------------------------------------------

EVENT_TIME = "eventTime: {field: ts, grace: 5s, maxFutureSkew: 60s}"


def reading(ts: float, kwh: int, power: float = 2.0, tenant: str = "t") -> dict:
    return {"ts": ts, "tenant_id": tenant, "power_use": power, "kwh_use": kwh}


def test_an_event_far_ahead_of_the_clock_is_dropped_and_moves_no_watermark():
    clock = Clock(1_700_000_001.0)
    proc, windows, late = processor(EVENT_TIME, clock)
    proc.offer(0, {"ts": 1_700_000_001, "tenant_id": "t", "customer_id": 1})
    with pytest.raises(
        MalformedEvent,
        match=r"poweruse event: event time 2023-11-1.* is 86400s ahead of the clock "
        r"\(eventTime.maxFutureSkew is 60s\)",
    ):
        proc.offer(1, reading(1_700_086_401, 99))  # a day ahead: its publisher's clock is wrong
    assert proc.offer(1, reading(1_700_000_024, 7)) == ACCEPTED  # 23 s ahead: within the bound
    assert proc.offer(1, reading(1_700_000_002, 5)) == ACCEPTED  # not late: the bad event moved nothing
    proc.flush()
    assert billable(windows) == [(1, "t", 5)] and late == []
    assert proc.stats.future == {"poweruse": 1}


@pytest.mark.parametrize("ts, ahead", [(253_402_300_800_000, 1), (1e35, 1), (-5, 0)])
def test_an_event_time_outside_the_years_1970_to_9999_is_dropped(ts, ahead):
    proc, _, _ = processor(EVENT_TIME, Clock(1_700_000_001.0))
    with pytest.raises(MalformedEvent, match="outside the years 1970-9999"):
        proc.offer(1, reading(ts, 1))
    assert sum(proc.stats.future.values()) == ahead  # `future` counts the times ahead of the clock


def test_events_the_stream_conditions_filter_out_do_not_move_the_watermark():
    clock = Clock(1_700_000_001.0)
    proc, windows, late = processor(EVENT_TIME, clock)
    proc.offer(0, {"ts": 1_700_000_001, "tenant_id": "t", "customer_id": 1})
    assert proc.offer(1, reading(1_700_000_055, 1, power=0.1)) == FILTERED  # would close window 0 if it counted
    assert proc.offer(1, reading(1_700_000_003, 5)) == ACCEPTED
    assert late == [] and windows == []
    proc.flush()
    assert billable(windows) == [(1, "t", 5)]


def test_a_table_record_the_filters_reject_does_not_move_the_watermark():
    spec = yaml.safe_load(BASE)["spec"]
    spec["stream"]["where"] = "tenants.tenant_id = poweruse.tenant_id and tenants.customer_id > 0"
    spec.update(yaml.safe_load("join: table\n" + EVENT_TIME))
    config = config_from_yaml(yaml.safe_dump(spec))
    windows: list = []
    proc = JoinCore(
        config, build_engine(config), on_window=lambda w, rows: windows.append((w, rows)), clock=Clock(1_700_000_001.0)
    )
    proc.offer(0, {"ts": 1_700_000_001, "tenant_id": "t", "customer_id": 1})
    proc.offer(0, {"ts": 1_700_000_055, "tenant_id": "u", "customer_id": 0})  # rejected by the filter
    assert proc.offer(1, {"ts": 1_700_000_003, "tenant_id": "t", "power_use": 1, "kwh_use": 5}) == ACCEPTED
    proc.flush()
    assert [(r["customer_id"], r["tenant_kwh_usage"]) for _, rows in windows for r in rows] == [(1, 5)]


# -- maxWindowBytes ---------------------------------------------------------------------------


def test_a_window_at_max_window_bytes_is_closed_early_and_goes_on_in_a_new_part():
    proc, windows, _ = processor("maxWindowBytes: 1000")
    proc.offer(0, {"tenant_id": "t", "customer_id": 1}, size=100)
    proc.offer(1, {"tenant_id": "t", "power_use": 2, "kwh_use": 5}, size=600)
    assert windows == []
    proc.offer(1, {"tenant_id": "t", "power_use": 2, "kwh_use": 6}, size=400)  # 1100 bytes: the window splits
    assert [(w.part, billable([(w, rows)])) for w, rows in windows] == [(0, [(1, "t", 5), (1, "t", 6)])]
    assert proc.stats.windows_split == 1
    proc.offer(0, {"tenant_id": "t", "customer_id": 2}, size=100)  # part 1 starts from nothing
    proc.offer(1, {"tenant_id": "t", "power_use": 2, "kwh_use": 7}, size=100)
    proc.flush()
    assert [w.part for w, _ in windows] == [0, 1] and billable(windows[1:]) == [(2, "t", 7)]


def test_a_bulk_delivery_shares_its_bytes_among_the_entries_it_buffers():
    proc, windows, _ = processor("maxWindowBytes: 1000")
    proc.offer(0, {"tenant_id": "t", "customer_id": 1}, size=10)
    entries = [({"tenant_id": "t", "power_use": p, "kwh_use": n}, f"r{n}", None) for n, p in enumerate([2, 0.1, 2, 2])]
    proc.offer_many(1, entries, size=800)  # 200 bytes each; the filtered one is not held
    assert windows == [] and proc.windows.states()[0].bytes == 10 + 3 * 200
    more = [({"tenant_id": "t", "power_use": 2, "kwh_use": n}, f"s{n}", None) for n in range(2)]
    proc.offer_many(1, more, size=400)  # 400 more: over the bound
    assert proc.stats.windows_split == 1 and len(windows[0][1]) == 5


# -- join: table, a version that arrives after the readings it should join ----------------------


TABLE_TIME = "join: table\neventTime: {field: ts, grace: 5s}"


def test_a_table_version_arriving_after_a_reading_within_grace_is_the_one_it_joins():
    clock = Clock(1_700_000_001.0)
    proc, windows, _ = processor(TABLE_TIME, clock)
    proc.offer(1, reading(1_700_000_010, 5))  # no tenant yet
    proc.offer(0, {"ts": 1_700_000_008, "tenant_id": "t", "customer_id": 1})  # older than the reading, later
    proc.offer(0, {"ts": 1_700_000_012, "tenant_id": "t", "customer_id": 2})  # newer: not the reading's version
    proc.offer(1, reading(1_700_000_026, 6))  # the watermark passes 20: window 0 closes
    assert billable(windows) == [(1, "t", 5)]
    assert proc.stats.table_misses == 0


def test_a_reading_that_finds_no_table_row_by_its_close_is_counted_and_logged(caplog):
    clock = Clock(1_700_000_001.0)
    proc, windows, _ = processor(TABLE_TIME, clock)
    proc.offer(1, reading(1_700_000_010, 5, tenant="nobody"), "r-1")
    proc.offer(0, {"ts": 1_700_000_008, "tenant_id": "t", "customer_id": 1})
    proc.offer(1, reading(1_700_000_026, 6))
    assert windows == [] and proc.stats.table_misses == 1
    assert any(
        "1 poweruse event(s) found no tenants row at their time" in r.getMessage() and "r-1" in r.getMessage()
        for r in caplog.records
    )


def test_a_table_version_after_the_window_closed_is_too_late_and_the_reading_is_a_miss():
    clock = Clock(1_700_000_001.0)
    proc, windows, _ = processor(TABLE_TIME, clock)
    proc.offer(1, reading(1_700_000_010, 5))
    proc.offer(1, reading(1_700_000_026, 6))  # closes window 0 with no tenant in it
    proc.offer(0, {"ts": 1_700_000_008, "tenant_id": "t", "customer_id": 1})
    proc.flush()
    assert billable(windows) == [(1, "t", 6)]  # the later reading joins the version valid at its time
    assert proc.stats.table_misses == 1


def test_replay_and_the_live_processor_agree_on_a_late_table_version(tmp_path):
    """The service gets the reading before the tenant; `replay` reads them in event-time order."""
    import io
    import json

    from joiner.replay import replay

    tenants = [{"ts": 1_700_000_008, "tenant_id": "t", "customer_id": 1}]
    readings = [reading(1_700_000_010, 5), reading(1_700_000_026, 6)]
    proc, live, _ = processor(TABLE_TIME, Clock(1_700_000_030.0))
    for index, data in [(1, readings[0]), (0, tenants[0]), (1, readings[1])]:
        proc.offer(index, data)
    proc.flush()

    spec = yaml.safe_load(BASE)["spec"]
    spec.update(yaml.safe_load(TABLE_TIME))
    files = []
    for name, events in (("tenants", tenants), ("poweruse", readings)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(event) + "\n" for event in events))
        files.append((name, path))
    out = io.StringIO()
    assert replay(yaml.safe_dump(spec), files, out, io.StringIO(), "test") == 0
    replayed = [json.loads(line)["rows"] for line in out.getvalue().splitlines()]
    assert [rows for _, rows in live] == replayed
    assert billable(live) == [(1, "t", 5), (1, "t", 6)]


# -- unmatched events (join: window) ---------------------------------------------------------------


def test_readings_without_a_tenant_in_their_window_are_counted_as_unmatched():
    """What a tenant outage looks like: the readings of a window that got no tenant bill nothing."""
    clock = Clock(1_700_000_001.0)
    proc, windows, _ = processor("", clock)
    proc.offer(0, {"tenant_id": "t", "customer_id": 1})
    proc.offer(0, {"tenant_id": "idle", "customer_id": 2})  # a tenant without readings
    proc.offer_many(
        1,
        [
            ({"tenant_id": "t", "power_use": 2, "kwh_use": 5}, "r1", None),
            ({"tenant_id": "gone", "power_use": 2, "kwh_use": 6}, "r2", None),
            ({"tenant_id": "gone", "power_use": 2, "kwh_use": 7}, "r3", None),
        ],
    )
    proc.offer(1, {"tenant_id": "gone", "power_use": 2, "kwh_use": 8}, "r4")
    proc.offer(1, {"tenant_id": "low", "power_use": 0.1, "kwh_use": 9}, "r5")  # filtered: not unmatched
    proc.flush()
    assert billable(windows) == [(1, "t", 5)]
    assert proc.stats.unmatched == {"poweruse": 3, "tenants": 1}
