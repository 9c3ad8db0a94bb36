"""The join engine over one window: checks and filters on arrival, pairs made as events arrive."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from joiner.engine.join import FILTERED_OUT, KEPT, JoinEngine, naive_join
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.expressions import compile_expression

ROOT = Path(__file__).resolve().parents[2]
STREAMS = ("tenants", "poweruse")
TENANTS, POWERUSE = 0, 1

BILLABLE = Counter(
    {
        (924, "dc:eqix:us:chi1:12", 1034): 1,
        (924, "dc:eqix:us:chi1:12", 1134): 1,
        (243, "dc:kddi:cn:hnk2:11", 1119): 1,
        (243, "dc:kddi:cn:hnk2:11", 1201): 1,
    }
)


def _example_stream() -> dict:
    return yaml.safe_load((ROOT / "services" / "joiner" / "joiner.yaml").read_text())["spec"]["stream"]


def _example_data() -> dict[str, list]:
    """The generators' messages in dapr.yaml, by topic, as the generators would produce them."""
    run_file = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    return {
        app["env"]["STREAM_TOPIC"]: list(
            compile_expression(app["env"]["MESSAGE_EXPR"], setting="MESSAGE_EXPR").evaluate(None)
        )
        for app in run_file["apps"]
        if "MESSAGE_EXPR" in app.get("env", {})
    }


def _engine(where: str | None = None, select: str | None = None) -> JoinEngine:
    stream = _example_stream()
    return JoinEngine(
        STREAMS,
        compile_expression(where if where is not None else stream["where"], setting="stream.where"),
        compile_expression(select if select is not None else stream["select"], setting="stream.select"),
    )


def _arrivals(events: dict[str, list], order: str) -> list[tuple[int, dict, str]]:
    """(stream index, data, id) in the given arrival order."""
    tagged = {
        name: [(STREAMS.index(name), data, f"{name}-{n}") for n, data in enumerate(events.get(name, []))]
        for name in STREAMS
    }
    if order == "tenants first":
        return tagged["tenants"] + tagged["poweruse"]
    if order == "readings first":
        return tagged["poweruse"] + tagged["tenants"]
    if order == "interleaved":
        out = []
        for n in range(max(len(v) for v in tagged.values())):
            out += [items[n] for items in (tagged["poweruse"], tagged["tenants"]) if n < len(items)]
        return out
    assert order.startswith("shuffled ")
    out = tagged["tenants"] + tagged["poweruse"]
    random.Random(int(order.split()[1])).shuffle(out)
    return out


def _run(engine: JoinEngine, events: dict[str, list], order: str = "tenants first", batched: bool = False):
    state = engine.new_state()
    arrivals = _arrivals(events, order)
    if batched:  # consecutive arrivals of one stream go in one batch
        batch: list = []
        for position, (index, data, event_id) in enumerate(arrivals):
            batch.append((data, event_id))
            if position + 1 == len(arrivals) or arrivals[position + 1][0] != index:
                outcome = engine.accept_many(state, index, batch)
                assert outcome.malformed == []
                batch = []
    else:
        for index, data, event_id in arrivals:
            engine.accept(state, index, data, event_id)
    return state, engine.result(state)


def _rows(rows: list) -> Counter:
    return Counter((row["customer_id"], row["tenant_id"], row["tenant_kwh_usage"]) for row in rows)


# --- run over the example -------------------------------------------------------------------------


def test_example_data_has_five_tenants_and_eight_readings():
    data = _example_data()

    assert (len(data["tenants"]), len(data["poweruse"])) == (5, 8)


ORDERS = ["tenants first", "readings first", "interleaved", "shuffled 1", "shuffled 2", "shuffled 3"]


@pytest.mark.parametrize("batched", [False, True], ids=["accept", "accept_many"])
@pytest.mark.parametrize("order", ORDERS)
def test_example_window_gives_the_billable_rows_once_in_any_order(order, batched):
    state, result = _run(_engine(), _example_data(), order, batched)

    assert _rows(result.rows) == BILLABLE
    assert len(result.rows) == 4
    assert result.errors == []
    assert result.pairs == 4  # each kept reading meets exactly its one tenant
    assert state.count == 5 + 4  # the four readings under 1.0 are filtered, not buffered


def test_example_rows_are_shaped_by_select():
    _, result = _run(_engine(), _example_data())

    assert all(set(row) == {"customer_id", "tenant_id", "tenant_kwh_usage"} for row in result.rows)
    assert all(type(row["tenant_kwh_usage"]) is int for row in result.rows)


def test_example_rows_equal_the_naive_join():
    data = _example_data()
    stream = _example_stream()
    where = compile_expression(stream["where"], setting="stream.where")
    select = compile_expression(stream["select"], setting="stream.select")

    naive = naive_join(STREAMS, where, select, data["tenants"], data["poweruse"])
    _, result = _run(_engine(), data, "interleaved")

    assert _rows(naive.rows) == _rows(result.rows) == BILLABLE
    assert naive.pairs == 40


def test_window_with_one_empty_stream_gives_no_pairs():
    _, result = _run(_engine(), {"tenants": _example_data()["tenants"]})

    assert (result.rows, result.pairs, result.errors) == ([], 0, [])


def test_accept_many_on_the_example_counts_accepted_and_filtered():
    engine = _engine()
    state = engine.new_state()
    data = _example_data()

    tenants = engine.accept_many(state, TENANTS, [(d, f"t{n}") for n, d in enumerate(data["tenants"])])
    readings = engine.accept_many(state, POWERUSE, [(d, f"p{n}") for n, d in enumerate(data["poweruse"])])

    assert (tenants.accepted, tenants.filtered, tenants.malformed) == (5, 0, [])
    assert (readings.accepted, readings.filtered, readings.malformed) == (4, 4, [])
    assert _rows(engine.result(state).rows) == BILLABLE


def test_describe_names_a_hash_join_for_the_example():
    description = _engine().describe()

    assert "hash join on tenants.tenant_id = poweruse.tenant_id" in description
    assert "nested loop" not in description


def test_describe_names_a_nested_loop_without_a_cross_stream_equality():
    description = _engine(where="tenants.limit < poweruse.kwh_use", select="poweruse.kwh_use").describe()

    assert "nested loop" in description
    assert "hash join" not in description


# --- check and accept: malformed events ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [([1, 2], "an array"), ("text", "a string"), (3.5, "a number"), (None, "null"), (True, "a boolean")],
)
def test_check_rejects_non_objects_naming_the_type(data, kind):
    with pytest.raises(MalformedEvent) as caught:
        _engine().check(TENANTS, data)

    assert str(caught.value) == f"tenants event is {kind}, not a JSON object"


@pytest.mark.parametrize(
    ("data", "kind"),
    [([1, 2], "an array"), ("text", "a string"), (None, "null")],
)
def test_accept_rejects_non_objects_and_buffers_nothing(data, kind):
    engine = _engine()
    state = engine.new_state()

    with pytest.raises(MalformedEvent) as caught:
        engine.accept(state, POWERUSE, data, "p1")

    assert str(caught.value) == f"poweruse event is {kind}, not a JSON object"
    assert state.count == 0


def test_check_rejects_poweruse_without_power_use():
    reading = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "kwh_use": 1034}

    with pytest.raises(MalformedEvent) as caught:
        _engine().check(POWERUSE, reading)

    assert str(caught.value) == "poweruse event has no field power_use (used by the expressions)"


def test_accept_rejects_poweruse_without_power_use():
    engine = _engine()
    state = engine.new_state()
    reading = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "kwh_use": 1034}

    with pytest.raises(MalformedEvent) as caught:
        engine.accept(state, POWERUSE, reading, "p1")

    assert str(caught.value) == "poweruse event has no field power_use (used by the expressions)"
    assert state.count == 0


def test_check_rejects_tenants_without_customer_id():
    # customer_id is read only by select: still required
    with pytest.raises(MalformedEvent, match="^tenants event has no field customer_id "):
        _engine().check(TENANTS, {"tenant_id": "dc:eqix:us:chi1:12"})


def test_check_names_a_nested_missing_field():
    engine = _engine(where="tenants.meta.region = poweruse.region", select="tenants.meta.region")

    with pytest.raises(MalformedEvent, match=r"^tenants event has no field meta\.region "):
        engine.check(TENANTS, {"meta": {}})


def test_check_rejects_a_string_where_the_where_compares_a_number():
    engine = _engine()
    state = engine.new_state()
    reading = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": "high", "kwh_use": 1034}

    with pytest.raises(MalformedEvent) as caught:
        engine.accept(state, POWERUSE, reading, "p1")

    message = str(caught.value)
    assert message.startswith("poweruse event does not fit the expressions: stream.where: ")
    assert "high" in message
    assert state.count == 0


def test_check_rejects_a_type_select_can_never_use():
    # `+` rejects a string on either side whatever the other side is: no pair could ever give a row
    engine = _engine(where="tenants.tenant_id = poweruse.tenant_id", select="tenants.customer_id + poweruse.tag")

    with pytest.raises(MalformedEvent, match="^poweruse event does not fit the expressions: stream.select: "):
        engine.check(POWERUSE, {"tenant_id": "a", "tag": "x"})


def test_check_does_not_evaluate_cross_stream_conjuncts_alone():
    # tenants.tenant_id = poweruse.tenant_id needs both streams: a lone tenant must not be rejected for it
    engine = _engine()
    tenant = {"tenant_id": "dc:eqix:us:chi1:12", "customer_id": 924}

    engine.check(TENANTS, tenant)  # does not raise

    assert engine.accept(engine.new_state(), TENANTS, tenant, "t1") is KEPT


def test_check_accepts_extra_fields():
    engine = _engine()
    tenant = {"tenant_id": "t", "customer_id": 1, "extra": {"x": [1]}}

    engine.check(TENANTS, tenant)  # does not raise

    assert engine.accept(engine.new_state(), TENANTS, tenant) is KEPT


def test_a_valid_reading_is_accepted_and_buffered():
    engine = _engine()
    state = engine.new_state()
    reading = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": 1.05, "kwh_use": 1034}

    assert engine.accept(state, POWERUSE, reading, "p1") is KEPT
    assert state.count == 1


@pytest.mark.parametrize("power_use", [0.5, 0, 0.999])
def test_a_reading_the_filter_rejects_is_filtered_not_buffered(power_use):
    engine = _engine()
    state = engine.new_state()
    engine.accept(state, TENANTS, {"tenant_id": "dc:eqix:us:chi1:12", "customer_id": 924}, "t1")
    reading = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": power_use, "kwh_use": 1034}

    assert engine.accept(state, POWERUSE, reading, "p1") is FILTERED_OUT
    assert state.count == 1
    assert engine.result(state).rows == []
    assert engine.result(state).pairs == 0


def test_accept_many_reports_malformed_entries_and_accepts_the_good_ones():
    engine = _engine()
    state = engine.new_state()
    engine.accept(state, TENANTS, {"tenant_id": "dc:eqix:us:chi1:12", "customer_id": 924}, "t1")
    good = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": 1.05, "kwh_use": 1034}
    low = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": 0.5, "kwh_use": 7}
    missing = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "kwh_use": 1034}
    high = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": "high", "kwh_use": 1034}
    also_good = {"panel_id": 2, "tenant_id": "dc:eqix:us:chi1:12", "power_use": 2, "kwh_use": 5}

    outcome = engine.accept_many(
        state,
        POWERUSE,
        [(good, "p1"), ("text", "p2"), (missing, "p3"), (low, "p4"), (high, "p5"), (also_good, "p6")],
    )

    assert (outcome.accepted, outcome.filtered) == (2, 1)
    reasons = {entry[1]: reason for entry, reason in outcome.malformed}
    assert [entry for entry, _ in outcome.malformed] == [("text", "p2"), (missing, "p3"), (high, "p5")]
    assert reasons["p2"] == "poweruse event is a string, not a JSON object"
    assert reasons["p3"] == "poweruse event has no field power_use (used by the expressions)"
    assert reasons["p5"].startswith("poweruse event does not fit the expressions: stream.where: ")
    assert state.count == 3
    assert sorted(row["tenant_kwh_usage"] for row in engine.result(state).rows) == [5, 1034]


def test_accept_many_with_an_empty_batch_does_nothing():
    engine = _engine()
    state = engine.new_state()

    outcome = engine.accept_many(state, TENANTS, [])

    assert (outcome.accepted, outcome.filtered, outcome.malformed) == (0, 0, [])
    assert state.count == 0


# --- pairs: keys, failures and undefined ----------------------------------------------------------


@pytest.mark.parametrize("batched", [False, True], ids=["accept", "accept_many"])
def test_keys_follow_jsonata_equality(batched):
    engine = _engine(where="tenants.k = poweruse.k", select="[tenants.n, poweruse.n]")
    events = {
        "tenants": [{"k": 1, "n": "int"}, {"k": "1", "n": "str"}, {"k": True, "n": "bool"}, {"k": 2.5, "n": "float"}],
        "poweruse": [
            {"k": 1.0, "n": "1.0"},
            {"k": "1", "n": "'1'"},
            {"k": 1, "n": "1"},
            {"k": True, "n": "true"},
            {"k": 2.5, "n": "2.5"},
            {"k": None, "n": "null"},
            {"k": [1], "n": "[1]"},
        ],
    }

    _, result = _run(engine, events, "interleaved", batched)

    # 1 = 1.0 and "1" = "1", but 1 != "1", 1 != true, 1 != [1], and null equals nothing here
    assert sorted(map(tuple, result.rows)) == sorted(
        [("int", "1.0"), ("int", "1"), ("str", "'1'"), ("bool", "true"), ("float", "2.5")]
    )
    assert result.errors == []


def test_a_pair_whose_select_fails_is_recorded_and_other_rows_are_kept():
    engine = _engine(
        where="tenants.tenant_id = poweruse.tenant_id",
        select='{"tenant_id": tenants.tenant_id, "cheaper": tenants.limit < poweruse.kwh_use}',
    )
    events = {
        "tenants": [{"tenant_id": "a", "limit": 5}, {"tenant_id": "b", "limit": "five"}],
        "poweruse": [{"tenant_id": "a", "kwh_use": 10}, {"tenant_id": "b", "kwh_use": 20}],
    }

    _, result = _run(engine, events)

    assert result.rows == [{"tenant_id": "a", "cheaper": True}]
    assert result.pairs == 2
    assert len(result.errors) == 1
    assert result.errors[0].startswith("tenants tenants-1 x poweruse poweruse-1: stream.select: ")
    assert "T2009" in result.errors[0]


def test_a_pair_whose_where_fails_is_recorded_and_other_rows_are_kept():
    engine = _engine(where="tenants.limit < poweruse.kwh_use", select="poweruse.kwh_use")
    events = {"tenants": [{"limit": 5}, {"limit": "five"}], "poweruse": [{"kwh_use": 10}]}

    _, result = _run(engine, events)

    assert result.rows == [10]
    assert result.pairs == 2
    assert len(result.errors) == 1
    assert result.errors[0].startswith("tenants tenants-1 x poweruse poweruse-0: stream.where: ")


@pytest.mark.parametrize("batched", [False, True], ids=["accept", "accept_many"])
def test_no_row_when_select_is_undefined(batched):
    engine = _engine(
        where="tenants.tenant_id = poweruse.tenant_id",
        select='poweruse.kwh_use > 100 ? {"kwh": poweruse.kwh_use}',
    )
    events = {
        "tenants": [{"tenant_id": "a"}],
        "poweruse": [{"tenant_id": "a", "kwh_use": 50}, {"tenant_id": "a", "kwh_use": 150}],
    }

    _, result = _run(engine, events, "readings first", batched)

    assert result.rows == [{"kwh": 150}]
    assert result.errors == []


def test_where_uses_jsonata_truthiness():
    engine = _engine(where="poweruse.flags", select="poweruse.n")
    events = {
        "tenants": [{}],
        "poweruse": [{"n": 1, "flags": []}, {"n": 2, "flags": [0, 1]}, {"n": 3, "flags": ""}, {"n": 4, "flags": "y"}],
    }

    state, result = _run(engine, events)

    assert result.rows == [2, 4]
    assert state.count == 3  # the tenant and the two readings whose flags are true


def test_composite_keys_need_every_part_equal():
    engine = _engine(where="tenants.a = poweruse.a and poweruse.b = tenants.b", select="[tenants.n, poweruse.n]")
    events = {
        "tenants": [{"a": 1, "b": "x", "n": 1}, {"a": 1, "b": "y", "n": 2}],
        "poweruse": [{"a": 1, "b": "x", "n": 3}, {"a": 2, "b": "x", "n": 4}, {"a": 1.0, "b": "y", "n": 5}],
    }

    _, result = _run(engine, events, "interleaved", batched=True)

    assert sorted(result.rows) == [[1, 3], [2, 5]]
    assert "hash join on tenants.a = poweruse.a, tenants.b = poweruse.b" in engine.describe()


# --- regressions: agreement with jsonata-python ---------------------------------------------------


@pytest.mark.parametrize("batched", [False, True], ids=["accept", "accept_many"])
def test_keys_beyond_2_53_match_as_jsonata_compares_them(batched):
    # jsonata-python's `=` compares numbers as floats: 2**53 + 1 = 2**53 = 2**53 as a float
    engine = _engine(where="tenants.k = poweruse.k", select="[tenants.n, poweruse.n]")
    events = {
        "tenants": [{"k": 2**53 + 1, "n": 1}, {"k": 2**53 + 2, "n": 2}],
        "poweruse": [{"k": 2**53, "n": 3}, {"k": float(2**53), "n": 4}, {"k": 2**53 + 2, "n": 5}],
    }
    where = compile_expression("tenants.k = poweruse.k", setting="stream.where")
    select = compile_expression("[tenants.n, poweruse.n]", setting="stream.select")

    _, result = _run(engine, events, "interleaved", batched)

    expected = naive_join(STREAMS, where, select, events["tenants"], events["poweruse"]).rows
    assert sorted(map(list, result.rows)) == sorted(map(list, expected)) == [[1, 3], [1, 4], [2, 5]]


def test_accept_many_reports_as_malformed_what_accept_rejects_even_if_a_filter_would_drop_it():
    engine = _engine(select="tenants.customer_id + poweruse.kwh_use")
    reading = {"panel_id": 1, "tenant_id": "t", "power_use": 0.5, "kwh_use": "n/a"}

    with pytest.raises(MalformedEvent, match="stream.select"):
        engine.accept(engine.new_state(), POWERUSE, reading, "p1")
    outcome = engine.accept_many(engine.new_state(), POWERUSE, [(reading, "p1")])

    assert (outcome.accepted, outcome.filtered) == (0, 0)
    assert [entry for entry, _ in outcome.malformed] == [(reading, "p1")]
    assert "stream.select" in outcome.malformed[0][1]


@pytest.mark.parametrize("batched", [False, True], ids=["accept", "accept_many"])
def test_a_select_failing_in_a_branch_a_partner_avoids_does_not_reject_the_event(batched):
    # alone, the reading fails (`"n/a" + 1`), but with a flat-rate tenant select never evaluates it
    select = 'tenants.flat ? "flat" : poweruse.kwh_use + 1'
    engine = _engine(where="tenants.tenant_id = poweruse.tenant_id", select=select)
    events = {
        "tenants": [{"tenant_id": "t", "flat": True}, {"tenant_id": "t", "flat": False}],
        "poweruse": [{"tenant_id": "t", "kwh_use": "n/a"}],
    }

    state, result = _run(engine, events, "readings first", batched)

    assert result.rows == ["flat"]
    assert len(result.errors) == 1 and "stream.select" in result.errors[0]
    assert state.count == 3


# --- construction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("streams", [("tenants", "tenants"), ("tenants",)])
def test_engine_needs_two_distinct_streams(streams):
    stream = _example_stream()
    where = compile_expression(stream["where"], setting="stream.where")
    select = compile_expression(stream["select"], setting="stream.select")

    with pytest.raises(ValueError, match="exactly two distinct streams"):
        JoinEngine(streams, where, select)
