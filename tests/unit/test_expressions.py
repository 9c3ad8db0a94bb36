"""JSONata expressions: CEL-style normalisation, compilation, evaluation and analysis."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streaming_runtime.errors import EvaluationError, ExpressionError
from streaming_runtime.expressions import compile_expression, normalize, truthy

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE_WHERE = "tenants.tenant_id == poweruse.tenant_id\n  && poweruse.power_use >= 1.0"


def _example_message_exprs() -> dict[str, str]:
    run_file = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    return {
        app["env"]["STREAM_TOPIC"]: app["env"]["MESSAGE_EXPR"]
        for app in run_file["apps"]
        if "MESSAGE_EXPR" in app.get("env", {})
    }


# --- normalize: operator aliases ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a == b", "a = b"),
        ("a && b", "a  and  b"),
        ("a || b", "a  or  b"),
        ("!x", "$not(x)"),
        ("!(x)", "$not(x)"),
        ("!a.b", "$not(a.b)"),
        ("!$v", "$not($v)"),
        ("! a", "$not(a)"),
    ],
)
def test_normalize_rewrites_cel_operators(source, expected):
    assert normalize(source).text == expected


def test_normalize_leaves_not_equal_alone():
    assert normalize("a != b").text == "a != b"


def test_normalize_not_takes_a_function_call_as_its_operand():
    assert normalize("!$exists(a.b)").text == "$not($exists(a.b))"


def test_normalize_not_takes_a_predicate_as_its_operand():
    assert normalize("!a[0].c").text == "$not(a[0].c)"


def test_negated_function_call_evaluates():
    expression = compile_expression("!$exists(a.b) && c", setting="S")

    assert expression.evaluate({"a": {}, "c": True}) is True
    assert expression.evaluate({"a": {"b": 1}, "c": True}) is False


@pytest.mark.parametrize(
    "source",
    [
        '"a == b && c || !d"',
        "'a == b && c || !d'",
        "`a == b && c || !d`",
        "/* a == b && c || !d */",
    ],
    ids=["double-quoted", "single-quoted", "backquoted", "comment"],
)
def test_normalize_leaves_literals_and_comments_untouched(source):
    assert normalize(source).text == source


def test_normalize_rewrites_around_a_string_literal_but_not_inside_it():
    assert normalize('a == "x == y" && b').text == 'a = "x == y"  and  b'


def test_normalize_respects_escaped_quotes_in_strings():
    source = r'"say \"a == b\"" == x'

    assert normalize(source).text == r'"say \"a == b\"" = x'


# --- normalize: trailing commas ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[1, 2,]", "[1, 2]"),
        ('{"a": 1,}', '{"a": 1}'),
        ("$f(1, 2,)", "$f(1, 2)"),
        ("[1,\n]", "[1\n]"),
        ("[1, /* last */ ]", "[1 /* last */ ]"),
        ("[1,\n  /* c */\n]", "[1\n  /* c */\n]"),
    ],
)
def test_normalize_drops_trailing_commas(source, expected):
    assert normalize(source).text == expected


def test_normalize_keeps_commas_between_items():
    assert normalize("[1, 2]").text == "[1, 2]"


@pytest.mark.parametrize("source", ['"[1,]"', "'{a,}'", "`x,)`"])
def test_normalize_keeps_commas_inside_strings(source):
    assert normalize(source).text == source


def test_normalize_maps_each_character_back_to_the_original():
    source = "a && b"
    normalized = normalize(source)

    assert len(normalized.origin) == len(normalized.text)
    assert normalized.text[normalized.text.index("b")] == source[normalized.original_index(normalized.text.index("b"))]
    assert normalized.original_index(normalized.text.index("and")) == source.index("&&")


# --- compile and evaluate ----------------------------------------------------------------------


def test_example_where_accepts_a_matching_pair():
    where = compile_expression(EXAMPLE_WHERE, setting="stream.where")

    bindings = {
        "tenants": {"tenant_id": "dc:eqix:us:chi1:12", "customer_id": 924},
        "poweruse": {"tenant_id": "dc:eqix:us:chi1:12", "power_use": 1.05},
    }

    assert where.evaluate(bindings) is True


@pytest.mark.parametrize(
    "poweruse",
    [
        {"tenant_id": "dc:eqix:us:chi1:10", "power_use": 1.05},  # other tenant
        {"tenant_id": "dc:eqix:us:chi1:12", "power_use": 0.85},  # below the threshold
    ],
    ids=["other-tenant", "low-power"],
)
def test_example_where_rejects_a_non_matching_pair(poweruse):
    where = compile_expression(EXAMPLE_WHERE, setting="stream.where")

    bindings = {"tenants": {"tenant_id": "dc:eqix:us:chi1:12", "customer_id": 924}, "poweruse": poweruse}

    assert where.evaluate(bindings) is False


def test_where_threshold_is_inclusive():
    where = compile_expression(EXAMPLE_WHERE, setting="stream.where")

    bindings = {"tenants": {"tenant_id": "t"}, "poweruse": {"tenant_id": "t", "power_use": 1.0}}

    assert where.evaluate(bindings) is True


def test_example_message_exprs_with_trailing_commas_evaluate_to_lists():
    exprs = _example_message_exprs()

    tenants = compile_expression(exprs["tenants"], setting="MESSAGE_EXPR").evaluate(None)
    poweruse = compile_expression(exprs["poweruse"], setting="MESSAGE_EXPR").evaluate(None)

    assert list(tenants)[0] == {"tenant_id": "dc:eqix:us:chi1:12", "customer_id": 924}
    assert [t["customer_id"] for t in tenants] == [924, 243, 924, 123, 243]
    assert len(poweruse) == 8
    assert poweruse[-1] == {"panel_id": 1, "tenant_id": "dc:kddi:cn:hnk2:11", "power_use": 1.10, "kwh_use": 1201}


def test_nested_trailing_commas_evaluate():
    assert compile_expression('[{"a": [1, 2,],},]', setting="S").evaluate(None) == [{"a": [1, 2]}]


def test_evaluate_binds_variables():
    expression = compile_expression("$id * 10 + $offset", setting="S")

    assert expression.evaluate(None, {"id": 3, "offset": 1}) == 31


def test_evaluate_returns_none_for_undefined():
    assert compile_expression("a.missing", setting="S").evaluate({"a": {}}) is None


# --- parse errors --------------------------------------------------------------------------------


def _parse_error(source: str, setting: str = "stream.where") -> str:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source, setting=setting)
    return str(caught.value)


def test_parse_error_names_the_setting_and_is_one_line():
    message = _parse_error("a ==\n\n", setting="JOINER_STREAM_WHERE")

    assert message.startswith("JOINER_STREAM_WHERE does not parse:")
    assert "\n" not in message


def test_parse_error_on_line_three_points_at_the_original_column():
    # the rewrites on lines 1-2 (== -> =, && -> " and ") change offsets; the report must not
    source = EXAMPLE_WHERE + "\n  && )"

    message = _parse_error(source)

    assert "line 3, column 6" in message  # the ")"
    assert "\n" not in message


def test_parse_error_in_a_multi_line_list_points_at_the_token():
    source = "[\n  1,\n  2 3,\n]"

    message = _parse_error(source, setting="MESSAGE_EXPR")

    assert message.startswith("MESSAGE_EXPR does not parse:")
    assert "line 3, column 5" in message  # the "3"


def test_parse_error_reports_an_excerpt_of_the_original_text():
    message = _parse_error("a &&\n  ) ")

    assert "near 'a && )'" in message


@pytest.mark.parametrize(
    ("source", "line_column"),
    [
        ("a ~ b", "line 1, column 3"),
        ("a != b\n  && !1", "line 2, column 6"),
        ("!", "line 1, column 1"),
    ],
)
def test_unknown_operator_is_a_parse_error(source, line_column):
    message = _parse_error(source)

    assert "Unknown operator" in message
    assert line_column in message


@pytest.mark.parametrize("source", ["", "   ", "\n"])
def test_empty_expression_is_an_error(source):
    assert _parse_error(source, setting="JOINER_STREAM_SELECT") == (
        "JOINER_STREAM_SELECT is empty: expected a JSONata expression"
    )


def test_unterminated_string_is_a_parse_error():
    message = _parse_error('{"a": "b}', setting="S")

    assert "String literal must be terminated" in message


# --- evaluation errors ---------------------------------------------------------------------------


def test_comparing_string_with_number_raises_evaluation_error_naming_the_setting():
    expression = compile_expression("a >= 1.0", setting="JOINER_STREAM_WHERE")

    with pytest.raises(EvaluationError) as caught:
        expression.evaluate({"a": "abc"})

    assert str(caught.value).startswith("JOINER_STREAM_WHERE: ")
    assert "\n" not in str(caught.value)


def test_python_level_errors_become_evaluation_errors():
    expression = compile_expression("$number(a)", setting="S")

    with pytest.raises(EvaluationError, match=r"^S: "):
        expression.evaluate({"a": "not a number"})


# --- conjuncts, paths_under, roots_used ----------------------------------------------------------


def test_conjuncts_split_a_top_level_and_chain():
    where = compile_expression("a.x = 1 && b.y = 2 && (a.z or b.z)", setting="S")

    parts = where.conjuncts()

    assert len(parts) == 3
    data = {"a": {"x": 1, "z": False}, "b": {"y": 3, "z": True}}
    assert [part.evaluate(data) for part in parts] == [True, False, True]


def test_conjuncts_of_a_non_and_expression_is_itself():
    where = compile_expression("a.x = 1 || b.y = 2", setting="S")

    assert where.conjuncts() == [where]


def test_conjunct_keeps_the_setting_for_errors():
    part = compile_expression("a.x = 1 && b.y >= 1", setting="W").conjuncts()[1]

    with pytest.raises(EvaluationError, match=r"^W: "):
        part.evaluate({"b": {"y": "high"}})


def test_paths_under_reports_paths_per_stream():
    where = compile_expression(EXAMPLE_WHERE, setting="S")

    assert where.paths_under({"tenants", "poweruse"}) == {
        "tenants": frozenset({("tenant_id",)}),
        "poweruse": frozenset({("tenant_id",), ("power_use",)}),
    }


def test_paths_under_reads_object_constructors_and_nested_paths():
    select = compile_expression('{"c": tenants.customer.id, "k": poweruse.kwh_use + 1}', setting="S")

    assert select.paths_under({"tenants", "poweruse", "other"}) == {
        "tenants": frozenset({("customer", "id")}),
        "poweruse": frozenset({("kwh_use",)}),
        "other": frozenset(),
    }


def test_paths_under_looks_inside_function_arguments_and_conditions():
    expression = compile_expression('$exists(a.x) ? $string(b.y) : "z"', setting="S")

    paths = expression.paths_under({"a", "b"})

    assert paths == {"a": frozenset({("x",)}), "b": frozenset({("y",)})}


def test_roots_used_per_conjunct():
    parts = compile_expression(EXAMPLE_WHERE, setting="S").conjuncts()

    roots = {"tenants", "poweruse"}
    assert [part.roots_used(roots) for part in parts] == [{"tenants", "poweruse"}, {"poweruse"}]


def test_roots_used_ignores_names_not_asked_for():
    expression = compile_expression("a.x = c.y", setting="S")

    assert expression.roots_used({"a", "b"}) == {"a"}


# --- truthy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, False, 0, 0.0, "", [], {}, [0, "", None], [[0]], [False]],
    ids=repr,
)
def test_truthy_false_values(value):
    assert truthy(value) is False


@pytest.mark.parametrize(
    "value",
    [True, 1, -1, 0.5, "a", "false", {"a": 0}, [0, 1], [[1]], [False, "x"]],
    ids=repr,
)
def test_truthy_true_values(value):
    assert truthy(value) is True


def test_truthy_matches_jsonata_boolean():
    boolean = compile_expression("$boolean(v)", setting="S")

    for value in [0, 1, "", "x", [], [0], [0, 2], {}, {"a": 1}, None, True, False]:
        expected = boolean.evaluate({"v": value})
        assert truthy(value) is bool(expected), value


@pytest.mark.parametrize(
    ("source", "varies"),
    [
        ('[{"tenant_id": "a"}, {"tenant_id": "b"},]', False),
        ('$string(1) & $uppercase("x")', False),
        ('{"id": $id}', True),
        ('[1, {"at": $timestamp}]', True),
        ("$now()", True),
        ('{"n": $random()}', True),
    ],
)
def test_reads_variables_tells_constant_expressions_apart(source, varies):
    from streaming_runtime.expressions import reads_variables

    assert reads_variables(compile_expression(source, setting="MESSAGE_EXPR").tree) is varies
