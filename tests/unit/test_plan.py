"""Planning a join: where's top-level `and` split into hash-key equalities, filters and a residual."""

from __future__ import annotations

import pytest

from joiner.engine.plan import KeyPart, plan_join
from streaming_runtime.expressions import compile_expression

STREAMS = ("a", "b")


def _plan(where: str, select: str = "[a.x, b.y]"):
    return plan_join(
        STREAMS, compile_expression(where, setting="stream.where"), compile_expression(select, setting="stream.select")
    )


@pytest.mark.parametrize("where", ["a.x = b.y", "b.y = a.x"])
def test_an_equality_between_the_streams_is_a_key_in_either_orientation(where):
    plan = _plan(where)

    assert plan.keys == [KeyPart(("x",), ("y",))]
    assert plan.filters == ([], [])
    assert plan.residual == []
    assert plan.describe().startswith("hash join on a.x = b.y;")


def test_several_equalities_make_a_composite_key_in_order():
    plan = _plan("a.x = b.y and b.z = a.w and a.p.q = b.r.s")

    assert plan.keys == [KeyPart(("x",), ("y",)), KeyPart(("w",), ("z",)), KeyPart(("p", "q"), ("r", "s"))]
    assert plan.residual == []
    assert "hash join on a.x = b.y, a.w = b.z, a.p.q = b.r.s" in plan.describe()


def test_a_conjunct_on_one_stream_is_a_filter_on_that_stream():
    plan = _plan("a.x = b.y and b.p >= 1 and a.q = 'v' and $exists(b.r)")

    assert plan.keys == [KeyPart(("x",), ("y",))]
    assert [f.variables for f in plan.filters[0]] == [("a",)]
    assert [f.variables for f in plan.filters[1]] == [("b",), ("b",)]
    assert plan.residual == []
    # the filters evaluate the conjunct alone, over that stream's event
    assert [f({"p": 1}) for f in plan.filters[1]] == [True, False]
    assert plan.filters[1][0]({"p": 0.5}) is False
    assert plan.filters[0][0]({"q": "v"}) is True


@pytest.mark.parametrize(
    "conjunct",
    [
        "a.x = b.y + 1",
        "a.x < b.y",
        "a.x != b.y",
        "(a.x = b.y or b.p > 1)",  # `and` binds tighter than `or`
        "$string(a.x) = b.y",
        "a.x & '' = b.y & ''",
        "a.x[0] = b.y",
        "a.x = b.y[0]",
    ],
)
def test_other_conjuncts_across_the_streams_are_residual(conjunct):
    plan = _plan(f"{conjunct} and b.p >= 1")

    assert plan.keys == []
    assert len(plan.residual) == 1
    assert plan.residual[0].variables == STREAMS
    assert len(plan.filters[1]) == 1
    assert plan.describe().startswith("nested loop")


@pytest.mark.parametrize("where", ["a.x = b.y or a.y = b.x", "$not(a.x != b.y)"])
def test_a_where_without_a_top_level_equality_has_no_key(where):
    plan = _plan(where)

    assert plan.keys == []
    assert len(plan.residual) == 1


def test_conjuncts_reading_no_stream_are_residual():
    plan = _plan("a.x = b.y and true and 1 < 2 and c.x = 1")

    assert plan.keys == [KeyPart(("x",), ("y",))]
    assert plan.filters == ([], [])
    assert len(plan.residual) == 3
    assert [r({"x": 1}, {"y": 1}) for r in plan.residual] == [True, True, False]


def test_an_equality_within_one_stream_is_a_filter_not_a_key():
    plan = _plan("a.x = a.y and b.x = b.y")

    assert plan.keys == []
    assert len(plan.filters[0]) == 1 and len(plan.filters[1]) == 1
    assert plan.residual == []


def test_an_equality_with_a_whole_event_is_not_a_key():
    plan = _plan("a = b.y")

    assert plan.keys == []
    assert len(plan.residual) == 1


def test_where_and_select_are_kept_whole():
    plan = _plan("a.x = b.y and b.p >= 1", select='{"x": a.x}')

    assert plan.where.expression.source == "a.x = b.y and b.p >= 1"
    assert plan.select.expression.source == '{"x": a.x}'
    assert plan.where({"x": 1}, {"y": 1, "p": 2}) is True
    assert plan.where({"x": 1}, {"y": 1, "p": 0}) is False
    assert plan.select({"x": 1}, {"y": 1}) == {"x": 1}


def test_describe_counts_filters_and_residual_and_names_evaluators():
    description = _plan("a.x = b.y and b.p >= 1 and a.x < b.z").describe()

    assert description.startswith("hash join on a.x = b.y; filters on arrival: b: 1 filter(s) [compiled]; ")
    assert "residual: 1 conjunct(s) [compiled]" in description
    assert description.endswith("select: compiled")


def test_describe_names_the_reference_evaluator_when_a_conjunct_is_not_compiled():
    description = _plan("a.x = b.y and $count(b.items) > 1").describe()

    filters = description.split("; residual:")[0]
    assert "b: 1 filter(s) [" in filters
    assert "reference" in filters
