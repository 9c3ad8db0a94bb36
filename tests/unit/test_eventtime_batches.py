"""Event time on the fast path: a batch given to ``offer_many`` gives what the same events given one by one
to ``offer`` give — the same answers, the same windows closed in the same order with the same rows, the
same late events, counters, watermark and dedup memory — whatever the disorder, the grace, the cuts of
the batches, the duplicates and the malformed events among them, with the C loop and without it; and each
window's rows are those the naive plan (every pair, by jsonata-python) makes of the events it took."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import joiner.core as core_module
from joiner.config import JoinerConfig, config_from_yaml
from joiner.core import ACCEPTED, FILTERED, JoinCore
from joiner.engine.join import JoinEngine, naive_join
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.expressions import Expression

HALVES_FROM = core_module.HALVES_FROM
NOW = 1_000_000.0  # the clock during the test; event times are around it
SPEC = {
    "window": "10s",
    "stream": {
        "from": ["tenants", "poweruse"],
        "to": [{"component": "billable-proc/billables"}],
        "where": "tenants.tenant_id = poweruse.tenant_id and poweruse.power_use >= 1.0",
        "select": '{"customer_id": tenants.customer_id, "kwh": poweruse.kwh_use}',
    },
}


def core(grace: int, dedup: bool, native: bool, in_order: bool = False) -> tuple[JoinCore, list]:
    """``in_order``: each window's rows as made, not sorted (one by one and in batches may pair in another
    order; batches given one after the other or as runs may not)."""
    spec = {**SPEC, "eventTime": {"field": "ts", "grace": f"{grace}s"}}
    if dedup:
        spec["dedup"] = {"ttl": "1m"}
    config = config_from_yaml(yaml.safe_dump(spec))
    engine = JoinEngine(config.streams, config.compiled_where(), config.compiled_select(), native=native)
    out: list = []  # closed windows and late events, in the order they come out
    made = JoinCore(
        config,
        engine,
        on_window=lambda window, rows: out.append(
            ("window", window.id, [json.dumps(r) for r in rows] if in_order else sorted(json.dumps(r) for r in rows))
        ),
        on_late=lambda event: out.append(("late", event.stream, event.id, event.event_time)),
        clock=lambda: NOW,
    )
    return made, out


@st.composite
def event(draw) -> tuple[int, dict[str, Any] | str, str | None]:
    """(stream, data, id): mostly good events around NOW, some disorder, some far ahead, some malformed."""
    index = draw(st.integers(0, 1))
    ts = NOW + draw(st.sampled_from([-60, -35, -25, -12, -9, -5, -3, -1, 0, 0.5, 2, 4, 2000])) + draw(st.integers(0, 3))
    tenant = draw(st.sampled_from(["t1", "t2", "t3"]))
    if index == 0:
        data: dict[str, Any] | str = {"tenant_id": tenant, "customer_id": draw(st.integers(1, 3)), "ts": ts}
    else:
        data = {"tenant_id": tenant, "power_use": draw(st.sampled_from([0.5, 1.0, 1.5])), "kwh_use": 1, "ts": ts}
    if draw(st.integers(0, 9)) == 0:
        data = draw(st.sampled_from(["not an object", {"ts": ts}]))  # malformed: not an object, no fields
    event_id = draw(st.sampled_from([None, "a", "b", "c", "d", "e"]))
    return index, data, event_id


def _answer(outcome: str | MalformedEvent) -> str:
    """A batch does not name the entries its loop filtered (both are SUCCESS for daprd; the counters say)."""
    if isinstance(outcome, MalformedEvent):
        return f"malformed: {outcome}"
    return ACCEPTED if outcome == FILTERED else outcome


def _state(made: JoinCore, out: list, answers: list) -> dict[str, Any]:
    return {
        "answers": answers,
        "out": out,
        "stats": made.stats.as_dict(),
        "watermark": made.watermark.highest,
        "closed_through": made.windows.closed_through,
        "open": [(window.id, state.count) for window, state in made.windows.open_windows()],
        "dedup": sorted(map(str, made.dedup.entries())) if made.dedup is not None else [],
    }


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(event(), max_size=40),
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=40),
    grace=st.sampled_from([0, 1, 5]),
    dedup=st.booleans(),
    native=st.booleans(),
    halves_from=st.sampled_from([2, 3, core_module.HALVES_FROM]),
)
def test_a_batch_in_event_time_is_taken_as_its_events_one_by_one(events, cuts, grace, dedup, native, halves_from):
    one, one_out = core(grace, dedup, native)
    answers = []
    for index, data, event_id in events:
        try:
            answers.append(one.offer(index, data, event_id))
        except MalformedEvent as error:
            answers.append(error)
    one.flush()

    many, many_out = core(grace, dedup, native)
    batched: list = []
    position, cut = 0, 0
    core_module.HALVES_FROM = halves_from  # batches this test makes are short: halve them too
    try:
        while position < len(events):
            index = events[position][0]
            end = position
            while end < len(events) and events[end][0] == index and end - position < cuts[cut % len(cuts)]:
                end += 1
            entries = [(data, event_id, None) for _, data, event_id in events[position:end]]
            batched += many.offer_many(index, entries)
            position, cut = end, cut + 1
    finally:
        core_module.HALVES_FROM = HALVES_FROM
    many.flush()

    expected = _state(one, one_out, [_answer(a) for a in answers])
    assert _state(many, many_out, [_answer(a) for a in batched]) == expected
    assert _windows(one_out) == _naive_windows(one, events, answers)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(event(), max_size=40),
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=40),
    groups=st.lists(st.integers(1, 6), min_size=1, max_size=20),
    grace=st.sampled_from([0, 1, 5]),
    dedup=st.booleans(),
    native=st.booleans(),
)
def test_runs_of_both_streams_are_taken_as_their_batches_one_after_the_other(
    events, cuts, groups, grace, dedup, native
):
    """``offer_runs`` (what replay gives the core) against ``offer_many`` per batch: the same answers, the
    same windows with the same rows in the same order, late events, counters, watermark and dedup."""
    batches: list[tuple[int, list]] = []
    position, cut = 0, 0
    while position < len(events):
        index = events[position][0]
        end = position
        while end < len(events) and events[end][0] == index and end - position < cuts[cut % len(cuts)]:
            end += 1
        batches.append((index, [(data, event_id, None) for _, data, event_id in events[position:end]]))
        position, cut = end, cut + 1

    one, one_out = core(grace, dedup, native, in_order=True)
    one_answers = [answer for index, entries in batches for answer in one.offer_many(index, entries)]
    one.flush()

    runs, runs_out = core(grace, dedup, native, in_order=True)
    runs_answers: list = []
    position, group = 0, 0
    while position < len(batches):
        size = groups[group % len(groups)]
        for answers in runs.offer_runs(batches[position : position + size]):
            runs_answers += answers
        position, group = position + size, group + 1
    runs.flush()

    exact = [str(a) if isinstance(a, str) else f"malformed: {a}" for a in runs_answers]
    assert _state(runs, runs_out, exact) == _state(
        one, one_out, [str(a) if isinstance(a, str) else f"malformed: {a}" for a in one_answers]
    )


def test_interleaved_runs_in_one_window_go_through_the_loop_without_a_watermark_step_each():
    """Tenants re-sent at a window's start cut the readings into short runs: taken as runs, each goes
    through the arrival loop once and the watermark moves once, to the latest event kept."""
    made, out = core(grace=5, dedup=False, native=True, in_order=True)
    observed: list[float] = []
    real = made._observe
    made._observe = lambda when: observed.append(when) or real(when)  # type: ignore[method-assign]
    runs = []
    for n in range(6):
        runs.append((0, [({"tenant_id": f"t{n}", "customer_id": n, "ts": NOW - 9 + n / 10}, None, None)]))
        runs.append((1, [({"tenant_id": f"t{n}", "power_use": 1.5, "kwh_use": n, "ts": NOW - 9 + n / 10}, None, None)]))
    answers = made.offer_runs(runs)
    assert answers == [[ACCEPTED]] * 12
    assert observed == [NOW - 9 + 5 / 10]
    made.flush()
    assert out == [("window", out[0][1], [json.dumps({"customer_id": n, "kwh": n}) for n in range(6)])]


def _windows(out: list) -> dict[str, list[str]]:
    return {item[1]: item[2] for item in out if item[0] == "window"}


def _naive_windows(made: JoinCore, events: list, answers: list) -> dict[str, list[str]]:
    """What the naive plan (every pair, by jsonata-python) makes of each window's events: those the core
    took into it (accepted or filtered; not late, duplicate or malformed), by the window of their time."""
    taken: dict[str, tuple[list, list]] = {}
    for (index, data, _), answer in zip(events, answers):
        if answer in (ACCEPTED, FILTERED):
            window = made.windows.window_at(float(data["ts"])).id
            taken.setdefault(window, ([], []))[index].append(data)
    config = made.config
    made_rows = {
        window: sorted(json.dumps(row) for row in naive_join(config.streams, *_expressions(config), *sides).rows)
        for window, sides in taken.items()
    }
    return {window: rows for window, rows in made_rows.items() if rows}


def _expressions(config: JoinerConfig) -> tuple[Expression, Expression]:
    return config.compiled_where(), config.compiled_select()


def test_the_batch_goes_through_the_arrival_loop_in_one_call_per_window():
    made, out = core(grace=1, dedup=False, native=True)
    calls: list[int] = []
    real = made.mode.accept_many
    made.mode.accept_many = lambda state, index, entries, **kept: (
        calls.append(len(entries))
        or real(  # type: ignore[method-assign]
            state, index, entries, **kept
        )
    )
    made.offer_many(0, [({"tenant_id": "t1", "customer_id": 1, "ts": NOW - 5}, None, None)])
    readings = [{"tenant_id": "t1", "power_use": 1.5, "kwh_use": n, "ts": NOW - 5 + n / 10} for n in range(30)]
    readings += [{"tenant_id": "t1", "power_use": 1.5, "kwh_use": 99, "ts": NOW + 1}]  # the next window
    made.offer_many(1, [(data, None, None) for data in readings])
    made.flush()
    assert calls == [1, 30, 1]
    assert [len(rows) for _, _, rows in out] == [30]


def test_a_window_the_batch_closes_comes_out_before_a_late_event_after_it_in_the_batch():
    """One by one, the reading at NOW+2 moves the watermark past the open window's end, which closes (with
    its row) before the next reading, late, comes out: a batch keeps that order."""
    for offer in ("one by one", "batch"):
        made, out = core(grace=0, dedup=False, native=True)
        made.offer_many(0, [({"tenant_id": "t1", "customer_id": 1, "ts": NOW - 12}, None, None)])
        readings = [
            {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 1, "ts": NOW - 11},
            {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 2, "ts": NOW + 2},
            {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 3, "ts": NOW - 60},
        ]
        if offer == "batch":
            made.offer_many(1, [(data, f"r{n}", None) for n, data in enumerate(readings)])
        else:
            for n, data in enumerate(readings):
                made.offer(1, data, f"r{n}")
        assert [item[0] for item in out] == ["window", "late"], offer
