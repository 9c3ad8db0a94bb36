"""The JSONata compiler against the reference evaluator (jsonata-python), value for value and type for type.

Generated code may give up (``Fallback``) on any input, but whenever it answers, the answer must be
the reference's exactly: ``2`` and ``2.0`` serialise differently, so types are compared too.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streaming_runtime.errors import EvaluationError
from streaming_runtime.expressions import compile_expression
from streaming_runtime.jsonata_compiler import Fallback, FastExpression, U, compile_tree

VARIABLES = ("a", "b")

# every expression here is inside the compiled subset (compile_tree gives a function without help)
SUBSET = [
    # paths and literals
    "a.x",
    "b.y",
    "a.x.y",
    "a.nothing",
    "c.x",
    "1",
    "-3",
    "1.5",
    "0.1",
    "'s'",
    "''",
    "true",
    "false",
    # comparisons
    "a.x = b.y",
    "a.x != b.y",
    "a.x < b.y",
    "a.x <= b.y",
    "a.x > b.y",
    "a.x >= b.y",
    "a.x = 1",
    "1 = a.x",
    "a.x != 1",
    "a.x = 'a'",
    "a.x != ''",
    "a.x = true",
    "a.x = 1.0",
    "a.x = -1",
    "a.x > 1",
    "0.5 <= a.x",
    "a.x < 'b'",
    "1 < 2",
    "1 = 1",
    "'a' != 'b'",
    "a.x < 9007199254740993",
    "[a.x] = [b.y]",
    "[a.x, 1] != [b.y, 1]",
    '{"k": a.x} = {"k": b.y}',
    # boolean logic
    "a.x and b.y",
    "a.x or b.y",
    "$not(a.x)",
    "$not(a.x = b.y)",
    "a.x = b.y and a.y > 0",
    "a.x > 1 or b.y = 'a'",
    "$boolean(a.x)",
    "$exists(a.x)",
    "$exists(a.x.y)",
    # arithmetic
    "a.x + b.y",
    "a.x - b.y",
    "a.x * b.y",
    "a.x / b.y",
    "a.x % b.y",
    "-a.x",
    "-(a.x + b.y)",
    "a.x + 1",
    "a.x * 1.5",
    "a.x / 2",
    "a.x - 0.5",
    "a.x % 2",
    "1 + 2",
    "7 / 2",
    "a.x.y + b.y",
    # strings
    "a.x & b.y",
    "a.x & ''",
    "'id:' & a.x",
    "a.x & 1",
    "$string(a.x)",
    "$lowercase(a.x)",
    "$uppercase(a.x)",
    "$length(a.x)",
    "$string(a.x + b.y)",
    # numbers
    "$number(a.x)",
    "$abs(a.x)",
    "$floor(a.x)",
    "$ceil(a.x)",
    "$abs(a.x - b.y)",
    # conditions and grouping
    "a.x ? b.y : 'no'",
    "a.x > 1 ? a.x : b.y",
    "a.x ? b.y",
    "(a.x)",
    "(a.x + 1) * 2",
    "$exists(a.x) ? a.x : 0",
    "a.x = 1 ? 'one' : a.x = 2 ? 'two' : 'many'",
    # constructors
    '{"x": a.x, "y": b.y}',
    '{"k": 1}',
    '{"sum": a.x + b.y, "s": a.x & b.y}',
    "{}",
    '{"n": {"x": a.x}}',
    "[a.x, b.y]",
    "[1]",
    "[]",
    "[a.x]",
    "[a.x, [b.y]]",
    '[{"x": a.x}]',
    # the example's shapes
    '{"customer_id": a.x, "tenant_id": a.y, "tenant_kwh_usage": b.y}',
    "a.y = b.y and b.x >= 1.0",
]

# outside the subset: parts are left to the reference evaluator, from inside the compiled code
MIXED = [
    "$count(a.x) + 1",
    "a.x in [1, 2]",
    "$sum([a.x, b.y])",
    "a.x[0]",
    "$string(a.x) & $substring('abc', 0, 1)",
    "$count(b.y) > 0 and a.x = b.x",
    "a.x = null",
    "a.x ? $count(b.y) : 0",
    "$round(a.x)",
]

SCALARS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 7, 1.0, 0.5, -2.5, -0.0, 2.0, "", "a", "5", "A b", True, False, None]),
    st.integers(min_value=-1000, max_value=1000),
    st.sampled_from([10**15 - 1, 10**15, 10**16, 2**53, 2**53 + 1, float(2**53), -(2**60)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-100, max_value=100, allow_nan=False).map(lambda v: round(v, 2)),
    st.text(alphabet="aAzZ5 ßİÉ", max_size=3),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["x", "y", "k"]), inner, max_size=3),
    ),
    max_leaves=5,
)
# a field the dictionary leaves out is missing (undefined in JSONata); U leaves the variable unbound
EVENTS = st.dictionaries(st.sampled_from(["x", "y"]), VALUES, max_size=2)
VARIABLE = st.one_of(EVENTS, EVENTS, EVENTS, st.just(U))


def strict_equal(a: Any, b: Any) -> bool:
    """Equal values of identical types, recursively (jsonata's JList counts as a list)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(strict_equal(a[key], b[key]) for key in a)
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


def _reference(expression, a: Any, b: Any) -> tuple[str, Any]:
    data = {name: value for name, value in zip(VARIABLES, (a, b)) if value is not U}
    try:
        return "value", expression.evaluate(data)
    except EvaluationError as error:
        return "error", str(error)


def _fast(fast: FastExpression, a: Any, b: Any) -> tuple[str, Any]:
    try:
        return "value", fast(a, b)
    except EvaluationError as error:
        return "error", str(error)


def _assert_same(expected: tuple[str, Any], actual: tuple[str, Any], source: str, a: Any, b: Any) -> None:
    context = f"{source!r} with a={a!r}, b={b!r}: expected {expected!r}, got {actual!r}"
    assert expected[0] == actual[0], context
    if expected[0] == "value":
        assert strict_equal(expected[1], actual[1]), context


@functools.cache
def _expression(source: str):
    return compile_expression(source, setting="test")


@functools.cache
def _compiled(source: str):
    return compile_tree(_expression(source).tree, VARIABLES)


@functools.cache
def _fast_expression(source: str) -> FastExpression:
    return FastExpression(_expression(source), VARIABLES)


# --- the helper itself ----------------------------------------------------------------------------


def test_strict_equal_tells_int_from_float_and_bool():
    assert strict_equal({"a": [1, "x", None]}, {"a": [1, "x", None]})
    assert not strict_equal(2, 2.0)
    assert not strict_equal(1, True)
    assert not strict_equal(0.0, -0.0)
    assert not strict_equal([1], [1.0])
    assert not strict_equal({"a": 1, "b": 2}, {"b": 2, "a": 1})  # key order is serialised too
    assert not strict_equal({"a": 1}, {"a": 1.0})


# --- the subset is compiled -----------------------------------------------------------------------


@pytest.mark.parametrize("source", SUBSET)
def test_the_subset_compiles_without_the_reference_evaluator(source):
    compiled = _compiled(source)

    assert compiled.function is not None, compiled.reason
    assert compiled.reason == ""
    assert _fast_expression(source).compiled
    assert _fast_expression(source).evaluator == "compiled"


@pytest.mark.parametrize(
    ("source", "a", "b", "expected"),
    [
        ("a.x = b.y", {"x": "k"}, {"y": "k"}, True),
        ("a.x = 1", {"x": 1}, {}, True),
        ("a.x != 1", {"x": 2}, {}, True),
        ("a.x + b.y", {"x": 1}, {"y": 2}, 3),
        ("a.x / b.y", {"x": 1}, {"y": 2}, 0.5),
        ("a.x * 1.5", {"x": 2}, {}, 3),
        ("a.x & b.y", {"x": "a"}, {"y": 5}, "a5"),
        ('{"x": a.x, "y": b.y}', {"x": 1}, {}, {"x": 1}),
        ('{"k": 1}', {}, {}, {"k": 1}),
        ("[a.x, b.y]", {"x": "s"}, {"y": 2.5}, ["s", 2.5]),
        ("a.x ? b.y : 'no'", {"x": ""}, {"y": 1}, "no"),
        ("$uppercase(a.x)", {"x": "ab"}, {}, "AB"),
        ("$floor(a.x)", {"x": -2.5}, {}, -3),
        ("$exists(a.nothing)", {}, {}, False),
        ("a.x > 1", {}, {}, None),
        ("1", {}, {}, 1),
        ("'s'", {}, {}, "s"),
        (
            '{"customer_id": a.x, "tenant_id": a.y, "tenant_kwh_usage": b.y}',
            {"x": 924, "y": "t"},
            {"y": 1034},
            {"customer_id": 924, "tenant_id": "t", "tenant_kwh_usage": 1034},
        ),
    ],
)
def test_plain_inputs_take_the_compiled_path(source, a, b, expected):
    function = _compiled(source).function

    result = function(a, b)  # no Fallback

    assert strict_equal(result, expected)
    assert strict_equal(_reference(_expression(source), a, b), ("value", expected))


@pytest.mark.parametrize(
    ("source", "a"),
    [
        ("a.x", {"x": None}),
        ("a.x + 1", {"x": "s"}),
        ("a.x / 0", {"x": 1}),
        ("$string(a.x)", {"x": 1.5}),
        ("a.x.y", {"x": [{"y": 1}]}),
        ("a.x = 1", {"x": [1]}),
    ],
)
def test_unusual_inputs_fall_back(source, a):
    expression = compile_expression(source, setting="test")
    function = compile_tree(expression.tree, VARIABLES).function

    with pytest.raises(Fallback):
        function(a, {})

    _assert_same(_reference(expression, a, {}), _fast(FastExpression(expression, VARIABLES), a, {}), source, a, {})


@pytest.mark.parametrize("source", MIXED)
def test_expressions_outside_the_subset_are_not_compiled_alone(source):
    assert compile_tree(_expression(source).tree, VARIABLES).function is None


def test_literal_operands_compile(recwarn):
    # regression: a number literal used to be emitted as `1.__class__` (a SyntaxError) and `1 is U`
    # (a SyntaxWarning) by `=`, `!=` and object constructors
    for source in ["a.x = 1", "a.x != 1", "1 = 1", '{"k": 1}', "a.x = -1", "a.x != 's'", "1"]:
        compiled = compile_tree(compile_expression(source, setting="test").tree, VARIABLES)
        assert compiled.function is not None, source
    assert len(recwarn) == 0


# --- differential: compiled vs reference ---------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(a=VARIABLE, b=VARIABLE)
@example(a={"x": 1.0}, b={"y": 1})
@example(a={"x": 10**16}, b={"y": "a"})
@example(a={"x": -0.0}, b={"y": 0})
@example(a={"x": True}, b={"y": 1})
@example(a={"x": None}, b={"y": None})
@example(a={"x": [1]}, b={"y": {"x": 1}})
@example(a=U, b={"y": "a"})
@example(a={"x": "ß"}, b={"y": "İ"})  # jsonata-python's $lowercase is casefold()
@example(a={"x": 2**60 + 1}, b={"y": -(2**60)})  # function results go through convert_number
@example(a={"x": 2**53 + 1}, b={"y": 2**53})  # jsonata-python's `=` compares numbers as floats
@example(a={"x": 2**53 + 1}, b={"y": float(2**53)})  # and `<` an int with a float as two floats
@example(a={"x": 1}, b={"y": True})  # [1] != [true]
@pytest.mark.parametrize("source", SUBSET)
def test_compiled_code_agrees_with_the_reference(source, a, b):
    expression = _expression(source)
    expected = _reference(expression, a, b)

    try:
        answer = _compiled(source).function(a, b)
    except Fallback:
        pass
    else:  # the fast path answered: it must be the reference's answer exactly
        _assert_same(expected, ("value", answer), source, a, b)
    _assert_same(expected, _fast(_fast_expression(source), a, b), source, a, b)


@settings(max_examples=40, deadline=None)
@given(a=VARIABLE, b=VARIABLE)
@example(a={"x": 1}, b={"y": [1, 2]})
@example(a={"x": [1, 2]}, b={"y": "abc"})
@pytest.mark.parametrize("source", MIXED)
def test_partly_compiled_code_agrees_with_the_reference(source, a, b):
    expression = _expression(source)

    _assert_same(_reference(expression, a, b), _fast(_fast_expression(source), a, b), source, a, b)
