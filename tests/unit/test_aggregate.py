"""Aggregation of a window's rows: configuration checks and SQL-like semantics, computed by hand."""

from __future__ import annotations

import pytest

from joiner.engine.aggregate import Aggregated, AggregateField, AggregateSpec, aggregate, parse_aggregate
from streaming_runtime.errors import ConfigError

BILLABLE_ROWS = [
    {"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1034},
    {"customer_id": 243, "tenant_id": "dc:kddi:cn:hnk2:11", "tenant_kwh_usage": 1119},
    {"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1134},
    {"customer_id": 243, "tenant_id": "dc:kddi:cn:hnk2:11", "tenant_kwh_usage": 1201},
]

EVERY_FUNCTION = {
    "group_by": ["customer_id"],
    "fields": {
        "kwh": "sum(tenant_kwh_usage)",
        "peak": "max(tenant_kwh_usage)",
        "n": "count()",
        "mean": "avg(tenant_kwh_usage)",
        "low": "min(tenant_kwh_usage)",
        "latest": "last(tenant_kwh_usage)",
    },
}


def _spec(fields: dict[str, str], group_by: list[str] | None = None) -> AggregateSpec:
    return parse_aggregate({"group_by": group_by or [], "fields": fields})


def _one(rows: list, text: str) -> Aggregated:
    return aggregate(rows, _spec({"out": text}))


# parse_aggregate


def test_parse_the_documented_example():
    spec = parse_aggregate(EVERY_FUNCTION)

    assert spec == AggregateSpec(
        group_by=("customer_id",),
        fields=(
            AggregateField("kwh", "sum", "tenant_kwh_usage"),
            AggregateField("peak", "max", "tenant_kwh_usage"),
            AggregateField("n", "count", None),
            AggregateField("mean", "avg", "tenant_kwh_usage"),
            AggregateField("low", "min", "tenant_kwh_usage"),
            AggregateField("latest", "last", "tenant_kwh_usage"),
        ),
    )


def test_parse_accepts_spaces_upper_case_dotted_paths_and_no_group_by():
    spec = parse_aggregate({"fields": {"total": " SUM( reading.kwh ) ", "n": "count( )"}})

    assert spec == AggregateSpec(
        group_by=(), fields=(AggregateField("total", "sum", "reading.kwh"), AggregateField("n", "count", None))
    )
    assert parse_aggregate({"group_by": None, "fields": {"n": "count()"}}).group_by == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["customer_id"], "aggregate: expected a mapping with group_by and fields, got ['customer_id']"),
        (None, "aggregate: expected a mapping with group_by and fields, got None"),
        (
            {"groupby": ["a"], "fields": {"n": "count()"}},
            "aggregate.groupby: unknown setting; expected group_by and fields",
        ),
        (
            {"group_by": "customer_id", "fields": {"n": "count()"}},
            "aggregate.group_by: expected a list of field paths, such as [customer_id], got 'customer_id'",
        ),
        (
            {"group_by": ["a", ""], "fields": {"n": "count()"}},
            "aggregate.group_by[1]: expected a field path such as customer_id or tenant.id, got ''",
        ),
        (
            {"group_by": [7], "fields": {"n": "count()"}},
            "aggregate.group_by[0]: expected a field path such as customer_id or tenant.id, got 7",
        ),
        (
            {"group_by": ["tenant..id"], "fields": {"n": "count()"}},
            "aggregate.group_by[0]: expected a field path such as customer_id or tenant.id, got 'tenant..id'",
        ),
        (
            {"group_by": ["a", "b", "a"], "fields": {"n": "count()"}},
            "aggregate.group_by[2]: a is listed twice",
        ),
        (
            {"group_by": ["a"]},
            'aggregate.fields is missing: name at least one output, such as kwh: "sum(tenant_kwh_usage)"',
        ),
        (
            {"group_by": ["a"], "fields": {}},
            'aggregate.fields is empty: name at least one output, such as kwh: "sum(tenant_kwh_usage)"',
        ),
        (
            {"group_by": ["a"], "fields": None},
            'aggregate.fields is empty: name at least one output, such as kwh: "sum(tenant_kwh_usage)"',
        ),
        (
            {"fields": ["sum(x)"]},
            "aggregate.fields: expected a mapping of output name to \"fn(field)\", got ['sum(x)']",
        ),
        ({"fields": {"": "count()"}}, "aggregate.fields: output name '' must be non-empty text"),
        ({"fields": {1: "count()"}}, "aggregate.fields: output name 1 must be non-empty text"),
        (
            {"fields": {"kwh": 3}},
            'aggregate.fields.kwh: expected "fn(field)" such as "sum(tenant_kwh_usage)", got 3',
        ),
        (
            {"fields": {"kwh": "total(x)"}},
            'aggregate.fields.kwh: "total(x)" is not one of sum(field), max(field), min(field), count(), avg(field), last(field)',
        ),
        (
            {"fields": {"kwh": "sum x"}},
            'aggregate.fields.kwh: "sum x" is not one of sum(field), max(field), min(field), count(), avg(field), last(field)',
        ),
        (
            {"fields": {"kwh": "tenant_kwh_usage"}},
            'aggregate.fields.kwh: "tenant_kwh_usage" is not one of sum(field), max(field), min(field), count(), avg(field), last(field)',
        ),
        (
            {"fields": {"n": "count(x)"}},
            'aggregate.fields.n: count() takes no field (it counts the group\'s rows), got "count(x)"',
        ),
        (
            {"fields": {"kwh": "sum()"}},
            'aggregate.fields.kwh: sum needs a field, such as "sum(tenant_kwh_usage)", got "sum()"',
        ),
        (
            {"fields": {"latest": "last( )"}},
            'aggregate.fields.latest: last needs a field, such as "last(tenant_kwh_usage)", got "last( )"',
        ),
        (
            {"fields": {"kwh": "sum(a, b)"}},
            "aggregate.fields.kwh: \"sum(a, b)\": 'a, b' is not a field path such as tenant_kwh_usage or panel.kwh",
        ),
        (
            {"fields": {"kwh": "max(.kwh)"}},
            "aggregate.fields.kwh: \"max(.kwh)\": '.kwh' is not a field path such as tenant_kwh_usage or panel.kwh",
        ),
        (
            {"group_by": ["customer_id"], "fields": {"customer_id": "last(customer_id)"}},
            "aggregate.fields.customer_id: the output name is also a group_by field; choose another name",
        ),
    ],
)
def test_config_errors(value, message):
    with pytest.raises(ConfigError) as raised:
        parse_aggregate(value)

    assert str(raised.value) == message


def test_config_errors_name_the_given_setting():
    with pytest.raises(ConfigError) as raised:
        parse_aggregate({"fields": {"kwh": "total(x)"}}, setting="stream.aggregate")

    assert str(raised.value).startswith('stream.aggregate.fields.kwh: "total(x)" is not one of ')


# aggregate


def test_billable_rows_by_customer_with_every_function():
    result = aggregate(BILLABLE_ROWS, parse_aggregate(EVERY_FUNCTION))

    # 924: 1034 + 1134 = 2168, max 1134, min 1034, mean 2168 / 2 = 1084, last 1134
    # 243: 1119 + 1201 = 2320, max 1201, min 1119, mean 2320 / 2 = 1160, last 1201
    assert result == Aggregated(
        rows=[
            {"customer_id": 924, "kwh": 2168, "peak": 1134, "n": 2, "mean": 1084.0, "low": 1034, "latest": 1134},
            {"customer_id": 243, "kwh": 2320, "peak": 1201, "n": 2, "mean": 1160.0, "low": 1119, "latest": 1201},
        ],
        ignored=0,
        skipped_rows=0,
    )
    assert list(result.rows[0]) == ["customer_id", "kwh", "peak", "n", "mean", "low", "latest"]
    assert type(result.rows[0]["kwh"]) is int


def test_output_columns_follow_the_configured_order():
    spec = _spec({"z": "count()", "a": "max(tenant_kwh_usage)"}, ["tenant_id", "customer_id"])

    result = aggregate(BILLABLE_ROWS[:1], spec)

    assert list(result.rows[0]) == ["tenant_id", "customer_id", "z", "a"]
    assert result.rows == [{"tenant_id": "dc:eqix:us:chi1:12", "customer_id": 924, "z": 1, "a": 1034}]


def test_groups_come_out_in_order_of_their_first_row():
    rows = [{"g": "c"}, {"g": "a"}, {"g": "c"}, {"g": "b"}, {"g": "a"}]

    result = aggregate(rows, _spec({"n": "count()"}, ["g"]))

    assert result.rows == [{"g": "c", "n": 2}, {"g": "a", "n": 2}, {"g": "b", "n": 1}]


def test_groups_are_typed_like_json_values():
    rows = [
        {"k": 1},
        {"k": "1"},
        {"k": True},
        {"k": 1.0},
        {"k": None},
        {},
        {"k": {"b": 1, "a": 2}},
        {"k": {"a": 2, "b": 1}},
    ]

    result = aggregate(rows, _spec({"n": "count()"}, ["k"]))

    # 1 and 1.0 are one number (first spelling kept); "1" and true differ; missing joins null;
    # objects with the same content are one group.
    assert result.rows == [
        {"k": 1, "n": 2},
        {"k": "1", "n": 1},
        {"k": True, "n": 1},
        {"k": None, "n": 2},
        {"k": {"b": 1, "a": 2}, "n": 2},
    ]
    assert type(result.rows[0]["k"]) is int


def test_dotted_group_by_is_output_under_the_path_as_written():
    rows = [
        {"tenant": {"customer_id": 7}, "kwh": 2},
        {"tenant": {"customer_id": 7}, "kwh": 3},
        {"tenant": "x", "kwh": 4},
    ]

    result = aggregate(rows, _spec({"kwh": "sum(kwh)"}, ["tenant.customer_id"]))

    assert result.rows == [{"tenant.customer_id": 7, "kwh": 5}, {"tenant.customer_id": None, "kwh": 4}]


def test_without_group_by_the_window_is_one_group():
    result = aggregate(BILLABLE_ROWS, _spec({"kwh": "sum(tenant_kwh_usage)", "n": "count()"}))

    # 1034 + 1119 + 1134 + 1201 = 4488
    assert result.rows == [{"kwh": 4488, "n": 4}]


def test_no_rows_give_no_output_row():
    assert aggregate([], _spec({"n": "count()"})) == Aggregated(rows=[], ignored=0, skipped_rows=0)


def test_rows_that_are_not_objects_are_skipped_and_counted():
    rows = [{"kwh": 2}, [1, 2], "text", 5, None, {"kwh": 3}]

    result = aggregate(rows, _spec({"kwh": "sum(kwh)", "n": "count()"}))

    assert result == Aggregated(rows=[{"kwh": 5, "n": 2}], ignored=0, skipped_rows=4)


def test_missing_and_null_fields_are_left_out_but_counted_by_count():
    rows = [{"g": "a", "v": 4}, {"g": "a"}, {"g": "a", "v": None}, {"g": "a", "v": 10}, {"g": "a", "v": None}]
    spec = _spec(
        {"s": "sum(v)", "m": "avg(v)", "lo": "min(v)", "hi": "max(v)", "last": "last(v)", "n": "count()"}, ["g"]
    )

    result = aggregate(rows, spec)

    # numbers 4 and 10: sum 14, avg 7.0; last row with a non-null v is the fourth
    assert result == Aggregated(
        rows=[{"g": "a", "s": 14, "m": 7.0, "lo": 4, "hi": 10, "last": 10, "n": 5}], ignored=0, skipped_rows=0
    )


def test_an_aggregate_without_values_is_null():
    rows = [{"g": 1}, {"g": 1, "v": None}]
    spec = _spec(
        {"s": "sum(v)", "m": "avg(v)", "lo": "min(v)", "hi": "max(v)", "last": "last(v)", "n": "count()"}, ["g"]
    )

    result = aggregate(rows, spec)

    assert result.rows == [{"g": 1, "s": None, "m": None, "lo": None, "hi": None, "last": None, "n": 2}]


def test_non_numbers_are_ignored_by_sum_and_avg_and_counted_per_aggregate():
    rows = [{"v": 5}, {"v": "12"}, {"v": True}, {"v": {"x": 1}}, {"v": [1]}, {"v": 7}]

    result = aggregate(rows, _spec({"s": "sum(v)", "m": "avg(v)"}))

    # numbers 5 and 7: sum 12, avg 6.0; four other values, met by both aggregates: 8 ignored
    assert result == Aggregated(rows=[{"s": 12, "m": 6.0}], ignored=8, skipped_rows=0)


def test_sum_of_ints_stays_int_and_a_float_makes_it_float():
    ints = _one([{"v": 1}, {"v": 2}, {"v": 3}], "sum(v)")
    mixed = _one([{"v": 1}, {"v": 2.5}, {"v": 3}], "sum(v)")
    whole_floats = _one([{"v": 1.0}, {"v": 2}], "sum(v)")

    assert ints.rows == [{"out": 6}] and type(ints.rows[0]["out"]) is int
    assert mixed.rows == [{"out": 6.5}] and type(mixed.rows[0]["out"]) is float
    assert whole_floats.rows == [{"out": 3.0}] and type(whole_floats.rows[0]["out"]) is float


def test_float_sums_are_exactly_rounded_whatever_the_order():
    # 0.1 added ten times one by one gives 0.9999999999999999; the exactly rounded sum is 1.0
    assert _one([{"v": 0.1}] * 10, "sum(v)").rows == [{"out": 1.0}]
    assert _one([{"v": 1e16}, {"v": 1.0}, {"v": -1e16}], "sum(v)").rows == [{"out": 1.0}]


def test_avg_of_ints_is_a_float():
    assert _one([{"v": 1}, {"v": 2}], "avg(v)").rows == [{"out": 1.5}]
    assert _one([{"v": 2}, {"v": 4}], "avg(v)").rows == [{"out": 3.0}]


def test_min_and_max_over_mixed_ints_and_floats_keep_the_value_as_it_was():
    rows = [{"v": 3}, {"v": 2.5}, {"v": -1}, {"v": 7.25}]

    assert _one(rows, "min(v)").rows == [{"out": -1}]
    assert _one(rows, "max(v)").rows == [{"out": 7.25}]


def test_min_and_max_over_strings_when_there_are_no_numbers():
    rows = [{"v": "pear"}, {"v": "apple"}, {"v": None}, {"v": "fig"}, {"v": "Zebra"}]

    # code point order: "Zebra" < "apple" < "fig" < "pear"
    assert _one(rows, "min(v)") == Aggregated(rows=[{"out": "Zebra"}], ignored=0, skipped_rows=0)
    assert _one(rows, "max(v)") == Aggregated(rows=[{"out": "pear"}], ignored=0, skipped_rows=0)


def test_min_and_max_over_numbers_and_strings_use_the_numbers_and_count_the_strings():
    rows = [{"v": "zzz"}, {"v": 4}, {"v": "aaa"}, {"v": 9}]

    assert _one(rows, "min(v)") == Aggregated(rows=[{"out": 4}], ignored=2, skipped_rows=0)
    assert _one(rows, "max(v)") == Aggregated(rows=[{"out": 9}], ignored=2, skipped_rows=0)


def test_min_and_max_ignore_booleans_objects_and_lists():
    rows = [{"v": True}, {"v": "b"}, {"v": {"a": 1}}, {"v": "a"}, {"v": [0]}]

    assert _one(rows, "max(v)") == Aggregated(rows=[{"out": "b"}], ignored=3, skipped_rows=0)
    assert _one([{"v": False}], "min(v)") == Aggregated(rows=[{"out": None}], ignored=1, skipped_rows=0)


def test_last_is_the_last_row_with_the_field_of_any_type():
    rows = [{"v": 1}, {"v": {"nested": True}}, {"w": 5}, {"v": None}]

    assert _one(rows, "last(v)") == Aggregated(rows=[{"out": {"nested": True}}], ignored=0, skipped_rows=0)
    assert _one([{"v": 1}, {"v": "text"}], "last(v)").rows == [{"out": "text"}]


def test_dotted_aggregate_paths_read_nested_values():
    rows = [{"panel": {"kwh": 2}}, {"panel": {"kwh": 5}}, {"panel": 3}, {"panel": {"other": 1}}]

    assert _one(rows, "sum(panel.kwh)") == Aggregated(rows=[{"out": 7}], ignored=0, skipped_rows=0)


def test_cumulative_readings_sum_versus_max():
    # A meter that reports its running total: 100, 130, 170 kWh. The energy is what max shows
    # (or max - min over the window, 70); summing the totals (400) counts energy several times.
    rows = [{"panel": "p1", "kwh_use": 100}, {"panel": "p1", "kwh_use": 130}, {"panel": "p1", "kwh_use": 170}]
    spec = _spec({"summed": "sum(kwh_use)", "total": "max(kwh_use)", "start": "min(kwh_use)"}, ["panel"])

    assert aggregate(rows, spec).rows == [{"panel": "p1", "summed": 400, "total": 170, "start": 100}]


def test_each_group_has_its_own_accumulators():
    rows = [
        {"g": "a", "v": 1},
        {"g": "b", "v": "x"},
        {"g": "a", "v": 2.5},
        {"g": "b", "v": "y"},
        {"g": "c"},
    ]
    spec = _spec({"s": "sum(v)", "hi": "max(v)", "n": "count()"}, ["g"])

    result = aggregate(rows, spec)

    # a: 1 + 2.5 = 3.5, max 2.5; b: strings -> sum null (2 ignored), max "y"; c: nothing
    assert result == Aggregated(
        rows=[
            {"g": "a", "s": 3.5, "hi": 2.5, "n": 2},
            {"g": "b", "s": None, "hi": "y", "n": 2},
            {"g": "c", "s": None, "hi": None, "n": 1},
        ],
        ignored=2,
        skipped_rows=0,
    )
