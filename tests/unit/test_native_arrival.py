"""The C arrival loop (join_kernel): which plans it takes, and that it changes nothing but speed.

Each data test runs the same arrivals through an engine with the C loop and one with the generated
Python loop, and compares rows, counts and malformed reports with each other and with the naive plan.
"""

from __future__ import annotations

import gc
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joiner.engine import native
from joiner.engine.join import JoinEngine, naive_join
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.expressions import compile_expression

STREAMS = ("tenants", "poweruse")
WHERE = "tenants.tenant_id = poweruse.tenant_id and poweruse.power_use >= 1.0"
SELECT = '{"customer_id": tenants.customer_id, "tenant_id": tenants.tenant_id, "kwh": poweruse.kwh_use}'

ROOT = Path(__file__).resolve().parents[2]


def _engine(where: str = WHERE, select: str = SELECT, *, use_native: bool = True) -> JoinEngine:
    return JoinEngine(
        STREAMS,
        compile_expression(where, setting="stream.where"),
        compile_expression(select, setting="stream.select"),
        native=use_native,
    )


def _run(engine: JoinEngine, arrivals: list[tuple[int, list[Any]]]) -> tuple[Counter, int, int, list[str]]:
    """Feed batches of (stream index, events); rows (canonical), accepted, filtered, malformed ids."""
    state = engine.new_state()
    accepted = filtered = 0
    malformed: list[str] = []
    for number, (index, events) in enumerate(arrivals):
        entries = [(data, f"{index}.{number}.{n}") for n, data in enumerate(events)]
        outcome = engine.accept_many(state, index, entries)
        accepted += outcome.accepted
        filtered += outcome.filtered
        malformed += [entry[1] for entry, _ in outcome.malformed]
    rows = Counter(json.dumps(row, sort_keys=True) for row in engine.result(state).rows)
    return rows, accepted, filtered, sorted(malformed)


def _naive_rows(where: str, select: str, arrivals: list[tuple[int, list[Any]]], engine: JoinEngine) -> Counter:
    def usable(index: int, data: Any) -> bool:
        try:
            engine.accept(engine.new_state(), index, data)
        except MalformedEvent:
            return False
        return True

    sides = [[d for i, events in arrivals if i == index for d in events if usable(index, d)] for index in (0, 1)]
    result = naive_join(
        STREAMS, compile_expression(where, setting="w"), compile_expression(select, setting="s"), *sides
    )
    return Counter(json.dumps(row, sort_keys=True) for row in result.rows)


def _same_both_ways(arrivals, where: str = WHERE, select: str = SELECT):
    fast, exact = _engine(where, select), _engine(where, select, use_native=False)
    assert "native" in fast.describe() and "native" not in exact.describe()
    outcome = _run(fast, arrivals)
    assert outcome == _run(exact, arrivals)
    assert outcome[0] == _naive_rows(where, select, arrivals, exact)
    return outcome


def test_the_kernel_is_built_and_takes_the_example_plan():
    assert native.UNAVAILABLE == ""
    described = _engine().describe()
    assert described.endswith("arrival loop: tenants: native, poweruse: native")


def test_the_example_in_either_arrival_order():
    tenants = [{"tenant_id": f"t{i}", "customer_id": 100 + i} for i in range(4)]
    readings = [{"tenant_id": f"t{i % 5}", "power_use": 0.5 + i / 8, "kwh_use": i} for i in range(12)]
    first = _same_both_ways([(0, tenants), (1, readings)])
    # readings 0-3 are filtered (power_use < 1.0); 4 and 9 are buffered but t4 has no tenant
    assert first[1:] == (4 + 8, 4, [])
    assert sum(first[0].values()) == 6
    interleaved = _same_both_ways([(1, readings[:6]), (0, tenants[:2]), (1, readings[6:]), (0, tenants[2:])])
    assert interleaved == first


@pytest.mark.parametrize(
    "event",
    [
        {"tenant_id": True, "power_use": 1.5, "kwh_use": 1},  # a boolean key: never 1
        {"tenant_id": 1.0, "power_use": 1.5, "kwh_use": 2},  # a float key equal to the int 1
        {"tenant_id": 2**53 + 1, "power_use": 1.5, "kwh_use": 3},  # beyond 2**53: compared as a float
        {"tenant_id": None, "power_use": 1.5, "kwh_use": 4},  # null key: the full where decides
        {"tenant_id": [1], "power_use": 1.5, "kwh_use": 5},  # an array key
        {"tenant_id": 1, "power_use": "1.5", "kwh_use": 6},  # a string where a number is compared
        {"tenant_id": 1, "power_use": True, "kwh_use": 7},
        {"tenant_id": 1, "power_use": 2**60, "kwh_use": 8},  # a number beyond 2**53
        {"tenant_id": 1, "power_use": 1.5, "kwh_use": None},  # null projected value
        {"tenant_id": 1, "power_use": 1.5, "kwh_use": {"v": 9}},  # an object projected
        {"tenant_id": 1, "power_use": 1.5},  # missing field: malformed
        {"tenant_id": 1, "kwh_use": 10},
        [1, 2],  # not an object
        "reading",
        {"tenant_id": 1, "power_use": 1.5, "kwh_use": 11, "extra": [1]},  # extra fields are fine
    ],
)
def test_unusual_events_give_what_the_exact_path_gives(event):
    tenants = [
        {"tenant_id": 1, "customer_id": 7},
        {"tenant_id": 2**53, "customer_id": 8},
        {"tenant_id": "1", "customer_id": 9},
        {"tenant_id": None, "customer_id": 10},
    ]
    plain = {"tenant_id": 1, "power_use": 1.25, "kwh_use": 99}
    for arrivals in ([(0, tenants), (1, [plain, event, plain])], [(1, [plain, event, plain]), (0, tenants)]):
        _same_both_ways(arrivals)


@pytest.mark.parametrize(
    ("where", "select"),
    [
        ("tenants.tenant_id = poweruse.tenant_id and 1 <= poweruse.power_use", SELECT),
        ("poweruse.tenant_id = tenants.tenant_id and poweruse.power_use != 1 and poweruse.power_use < 2", SELECT),
        ("tenants.tenant_id = poweruse.tenant_id and tenants.customer_id = poweruse.kwh_use", SELECT),  # composite
        ("tenants.tenant_id = poweruse.tenant_id and poweruse.power_use = 1.5", '{"k": poweruse.kwh_use}'),
        ("tenants.tenant_id = poweruse.tenant_id and tenants.customer_id > 7", '{"c": tenants.customer_id}'),
        # string equality filters, and constants in the select
        (
            'tenants.tenant_id = poweruse.tenant_id and poweruse.kind = "meter"',
            '{"kind": "bill", "rate": 0.25, "n": 1, "final": true, "note": null, "kwh": poweruse.kwh_use}',
        ),
        ('tenants.tenant_id = poweruse.tenant_id and "test" != poweruse.kind', SELECT),
    ],
)
def test_other_plans_of_the_shape(where, select):
    tenants = [{"tenant_id": i % 3, "customer_id": 6 + i} for i in range(6)]
    readings = [
        {
            "tenant_id": i % 4,
            "power_use": [0.5, 1, 1.5, 2.5][i % 4],
            "kwh_use": 6 + i % 7,
            "kind": ["meter", "test", 5, "Meter"][i % 4],
        }
        for i in range(20)
    ]
    rows, *_ = _same_both_ways([(0, tenants[:3]), (1, readings), (0, tenants[3:])], where, select)
    assert rows  # the data is made to join


@pytest.mark.parametrize(
    ("where", "select", "reason"),
    [
        # no generated loop either: these plans are exact, event by event
        (WHERE + " and tenants.customer_id < poweruse.kwh_use", SELECT, "per event"),
        ("tenants.customer_id < poweruse.kwh_use", SELECT, "per event"),
        (WHERE, '{"customer_id": tenants.customer_id, "ids": [tenants.customer_id]}', "not a top-level field"),
        (WHERE, '{"a": tenants.customer_id, "a": poweruse.kwh_use}', "not a distinct string"),
        (WHERE, "[tenants.customer_id, poweruse.kwh_use]", "not an object"),
        (WHERE, '{"total": poweruse.kwh_use * 2}', "a select that can fail"),
        ('tenants.tenant_id = poweruse.tenant_id and poweruse.tenant_id < "x"', SELECT, "other than a number"),
        (WHERE, '{"kind": "bill", "n": 1}', "a select that reads no stream"),
        (
            "tenants.tenant_id = poweruse.tenant_id and (poweruse.power_use > 1 or poweruse.kwh_use > 1)",
            SELECT,
            "not a comparison",
        ),
        ("tenants.tenant_id = poweruse.tenant_id and poweruse.power_use < 18014398509481984", SELECT, "beyond 2**53"),
    ],
)
def test_plans_outside_the_shape_use_the_generated_loop_and_say_why(where, select, reason):
    loops = _engine(where, select).describe().split("arrival loop: ")[1]
    poweruse = loops.split("poweruse: ")[1]  # every case is outside the shape for poweruse at least
    assert not poweruse.startswith("native") and reason in poweruse


def test_each_stream_gets_its_own_loop():
    where = "tenants.tenant_id = poweruse.tenant_id and poweruse.meter.kw > 1"  # a nested field of poweruse
    assert _engine(where).describe().endswith("arrival loop: tenants: native, poweruse: per event")
    tenants = [{"tenant_id": 1, "customer_id": 5}]
    readings = [{"tenant_id": 1, "meter": {"kw": kw}, "kwh_use": kw} for kw in (0.5, 2, 3)]
    rows, accepted, filtered, _ = _run(_engine(where), [(1, readings[:1]), (0, tenants), (1, readings[1:])])
    assert rows == _naive_rows(where, SELECT, [(0, tenants), (1, readings)], _engine(where)) and len(rows) == 2
    assert (accepted, filtered) == (3, 1)


def test_the_generated_loop_is_kept_when_asked():
    assert "tenants: generated, poweruse: generated" in _engine(use_native=False).describe()


def test_references_are_balanced_after_a_window():
    # the C code holds references to events, their values and keys; dropping the window releases them all
    key, customer, kwh, event_id = "dc:x:1", 123_456, 654_321, "event-1"  # not cached small ints
    tenant = {"tenant_id": key, "customer_id": customer}
    reading = {"tenant_id": key, "power_use": 1.5, "kwh_use": kwh}
    watched = (key, customer, kwh, event_id, tenant, reading)
    engine = _engine()

    def window(readings_first: bool) -> int:
        arrivals = [(0, [tenant]), (1, [reading] * 3)]
        state = engine.new_state()
        for index, events in reversed(arrivals) if readings_first else arrivals:
            engine.accept_many(state, index, [(data, event_id) for data in events])
        return len(engine.result(state).rows)

    before = [sys.getrefcount(obj) for obj in watched]
    for readings_first in (False, True):
        assert window(readings_first) == 3
        gc.collect()
        assert [sys.getrefcount(obj) for obj in watched] == before


def test_an_error_in_the_pair_callback_propagates():
    arrival = native.Arrival(
        fields=["k"], keys=[0], filters=[], projection=[0], row=[("k", False, 0)], partner_projection=0
    )
    partner = ({"k": 1}, "p", False)  # no projection: the exact pair callback is called

    def pair(mine, theirs, full):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        arrival([({"k": 1}, "e")], [], [], {1: [partner]}, [], [], [], pair)


@pytest.mark.parametrize(
    "spec",
    [
        {"keys": []},
        {"keys": [3]},
        {"projection": [5]},
        {"filters": [(0, 9, 1.0)]},
        {"filters": [(4, 0, 1.0)]},
        {"row": [("k", True, 2)]},
        {"fields": [1]},
    ],
)
def test_a_bad_specification_is_refused(spec):
    arguments = {
        "fields": ["k"],
        "keys": [0],
        "filters": [],
        "projection": [0],
        "row": [("k", False, 0)],
        "partner_projection": 1,
        **spec,
    }
    with pytest.raises((ValueError, TypeError)):
        native.Arrival(**arguments)


@pytest.mark.parametrize("implementation", [native.file_pending, native._file_pending])
def test_file_pending_files_in_order_and_empties_the_lists(implementation):
    buckets = {"a": ["a0"]}
    keys, entries = ["a", "b", "a"], ["a1", "b0", "a2"]
    implementation(buckets, keys, entries)
    assert buckets == {"a": ["a0", "a1", "a2"], "b": ["b0"]}
    assert keys == [] and entries == []


def test_a_plan_reading_more_fields_than_the_c_loop_holds_stays_in_python():
    select = "{" + ", ".join(f'"f{n}": poweruse.f{n}' for n in range(70)) + ', "c": tenants.customer_id}'
    engine = _engine(select=select)
    assert "poweruse: generated (not native: more than 64 fields of poweruse)" in engine.describe()
    assert "tenants: native" in engine.describe()


# -- the C loop on any input: never a crash, never a wrong answer (it may only leave events to the exact path)

JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=3)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=6,
)
EVENTS = st.one_of(
    st.fixed_dictionaries({"tenant_id": JSONISH, "power_use": JSONISH, "kwh_use": JSONISH, "customer_id": JSONISH}),
    JSONISH,
)
ENTRIES = st.lists(st.one_of(st.tuples(EVENTS, st.one_of(st.none(), st.text(max_size=3))), JSONISH), max_size=12)


@settings(max_examples=200, deadline=None)
@given(tenants=ENTRIES, readings=ENTRIES)
def test_the_c_loop_takes_any_input_as_the_generated_loop_does(tenants, readings):
    outcomes = []
    for use_native in (True, False):
        engine = _engine(use_native=use_native)
        state = engine.new_state()
        taken = []
        for index, entries in ((0, tenants), (1, readings), (0, tenants)):
            well_formed = [entry if isinstance(entry, tuple) else (entry, None) for entry in entries]
            outcome = engine.accept_many(state, index, well_formed)
            taken.append((outcome.accepted, outcome.filtered, sorted(reason for _, reason in outcome.malformed)))
        rows = Counter(json.dumps(row, sort_keys=True) for row in engine.result(state).rows)
        outcomes.append((taken, rows, state.count, state.pairs))
    assert outcomes[0] == outcomes[1]


def test_entries_of_odd_shapes_go_to_the_exact_path():
    arrival = native.Arrival(
        fields=["k"], keys=[0], filters=[], projection=[0], row=[("k", 0, 0)], partner_projection=0
    )
    slow, keys, entries = [], [], []
    odd = [("only data",), ["a", "list"], ({"k": 1},), ({"k": True}, "id"), ({"k": 1.0}, "id"), ({"k": 2**60}, "id")]
    arrival(odd, keys, entries, {}, [], [], slow, lambda *_: None)
    assert slow == odd and keys == [] and entries == []


def test_the_built_c_loop_keeps_the_entry_contract_the_engine_defines():
    import join_kernel
    from joiner.engine import entries, native

    assert entries.contract_problem(join_kernel) == ""
    assert native.UNAVAILABLE == ""
    assert {name: getattr(join_kernel, name) for name in entries.CONTRACT} == entries.CONTRACT


def test_a_c_loop_built_for_another_layout_is_named_and_not_used():
    """In a fresh interpreter whose join_kernel says PROJECTION_AT 4: the engine uses its generated loops."""
    import subprocess

    code = """
import sys, types
from joiner.engine import entries
fake = types.ModuleType("join_kernel")
fake.__dict__.update(
    entries.CONTRACT, PROJECTION_AT=4, OPERATORS={"=": 4}, Arrival=object, file_pending=print, number_span=print
)
sys.modules["join_kernel"] = fake
from joiner.engine import native
from joiner.config import config_from_yaml
from joiner.core import build_engine
print(native.UNAVAILABLE)
print(native.Arrival is None, native.OPERATORS == {})
print(build_engine(config_from_yaml(open("services/joiner/joiner.yaml").read())).describe())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    problem, unused, described = done.stdout.strip().splitlines()
    assert problem == "join_kernel was built for another entry layout: PROJECTION_AT is 4, not 3"
    assert unused == "True True"
    assert "native" not in described.split("arrival loop:")[1].split(";")[0].replace("not native", ""), described


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.booleans(),
            st.none(),
            st.text(max_size=2),
            st.just(10**400),
            st.just(1.7e308),
        ),
        max_size=6,
    ),
    without_field=st.booleans(),
)
def test_the_span_of_a_batchs_times_is_the_same_in_c_and_in_python(values, without_field):
    """number_span: what the event-time batch path reads its times with; the C one and the fallback agree."""
    import join_kernel
    from joiner.engine.native import _number_span

    entries = [({"ts": value} if not (without_field and n == 0) else {}, None, None) for n, value in enumerate(values)]
    assert join_kernel.number_span(entries, "ts") == _number_span(entries, "ts")
