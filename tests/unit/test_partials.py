"""Partial aggregates (streaming_runtime.partials): the rows of a window split among replicas in any way,
each part aggregated as a replica does (joiner.engine.aggregate, partial=True) and the parts combined as
billable-proc does, give the rows one joiner makes of the whole window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joiner.engine.aggregate import aggregate, parse_aggregate
from streaming_runtime.partials import PartialSpec, combine, merge

SPEC = parse_aggregate(
    {
        "group_by": ["customer_id"],
        "fields": {
            "kwh": "sum(kwh)",
            "n": "count()",
            "mean": "avg(kwh)",
            "low": "min(kwh)",
            "high": "max(kwh)",
            "first_label": "min(label)",
        },
    }
)
PARTIAL = PartialSpec({"group_by": ["customer_id"], "fields": {f.name: f.function for f in SPEC.fields}})
# quarters are exact in binary: sums do not depend on how they are grouped, so equality is exact
VALUES = st.one_of(
    st.integers(-1000, 1000), st.integers(-4000, 4000).map(lambda n: n / 4), st.none(), st.sampled_from(["a", "b"])
)
ROW = st.fixed_dictionaries(
    {"customer_id": st.sampled_from([1, 2, 2.0, "1", None])},
    optional={"kwh": VALUES, "label": st.one_of(st.text("xyz", max_size=3), st.integers(0, 9))},
)


def by_group(rows: list[dict]) -> dict:
    return {repr(row["customer_id"]) if row["customer_id"] != 2 else "2": row for row in rows}


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(ROW, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=3), order=st.randoms())
def test_the_parts_of_any_split_combine_into_one_joiners_rows(rows, cuts, order):
    shuffled = list(rows)
    order.shuffle(shuffled)  # a replica gets any share, in any order: the combined values do not depend on it
    bounds = sorted({0, len(shuffled), *[min(cut, len(shuffled)) for cut in cuts]})
    parts = [shuffled[a:b] for a, b in zip(bounds, bounds[1:])]
    combined = combine(PARTIAL, [aggregate(part, SPEC, partial=True).rows for part in parts])
    whole = aggregate(rows, SPEC).rows
    assert by_group(combined) == by_group(whole)


def test_a_group_only_one_part_saw_keeps_its_values_and_nulls_stay_null():
    parts = [
        aggregate([{"customer_id": 7, "kwh": 3}], SPEC, partial=True).rows,
        aggregate([{"customer_id": 8}], SPEC, partial=True).rows,
    ]
    rows = {row["customer_id"]: row for row in combine(PARTIAL, parts)}
    assert rows[7] == {"customer_id": 7, "kwh": 3, "n": 1, "mean": 3.0, "low": 3, "high": 3, "first_label": None}
    assert rows[8] == {
        "customer_id": 8,
        "kwh": None,
        "n": 1,
        "mean": None,
        "low": None,
        "high": None,
        "first_label": None,
    }


def test_last_and_unknown_functions_do_not_combine():
    with pytest.raises(ValueError, match="does not combine"):
        PartialSpec({"group_by": [], "fields": {"latest": "last"}})
    with pytest.raises(ValueError, match="no partial state"):
        merge("last", [1, 2])
    with pytest.raises(ValueError, match="group_by"):
        PartialSpec({"group_by": "customer_id", "fields": {"n": "count"}})
