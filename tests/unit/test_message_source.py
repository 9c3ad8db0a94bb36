"""message-gen: which message comes next, and its settings from the environment."""

from __future__ import annotations

import pytest

from message_gen.settings import GeneratorSettings
from message_gen.source import MessageSource
from streaming_runtime.errors import ConfigError, EvaluationError
from streaming_runtime.expressions import compile_expression
from streaming_runtime.settings import load_settings

GENERATOR_VARIABLES = (
    "MESSAGE_EXPR",
    "CLUSTER_STREAM",
    "STREAM_TOPIC",
    "MESSAGE_COUNT",
    "MESSAGE_DELAY",
)
REQUIRED = {"MESSAGE_EXPR": '{"id": $id}', "CLUSTER_STREAM": "redis-stream", "STREAM_TOPIC": "tenants"}


def _source(expression: str) -> MessageSource:
    return MessageSource(compile_expression(expression, setting="MESSAGE_EXPR"))


# --- MessageSource --------------------------------------------------------------------------------


def test_list_yields_its_elements_in_turn():
    source = _source('["a", "b", "c",]')

    assert [source.message(n, 0) for n in range(1, 8)] == ["a", "b", "c", "a", "b", "c", "a"]


def test_list_ids_are_one_based():
    source = _source('[{"n": 0}, {"n": 1}]')

    assert source.message(1, 0) == {"n": 0}
    assert source.message(3, 0) == {"n": 0}  # len + 1 wraps to the first element


def test_list_elements_may_use_the_bound_values():
    source = _source('[{"id": $id}, {"ts": $timestamp}]')

    assert source.message(1, 111) == {"id": 1}
    assert source.message(2, 222) == {"ts": 222}


def test_non_list_result_is_the_message_with_bound_values():
    source = _source('{"id": $id, "ts": $timestamp}')

    assert source.message(7, 1_700_000_000_123) == {"id": 7, "ts": 1_700_000_000_123}


def test_scalar_result_is_the_message():
    assert _source('"tick " & $string($id)').message(4, 0) == "tick 4"


def test_empty_list_raises_evaluation_error():
    with pytest.raises(EvaluationError) as caught:
        _source("[]").message(1, 0)

    assert str(caught.value) == "MESSAGE_EXPR gave an empty list for $id=1"


def test_undefined_result_raises_evaluation_error():
    with pytest.raises(EvaluationError, match=r"^MESSAGE_EXPR gave no value for \$id=2$"):
        _source('$id = 1 ? "first"').message(2, 0)


def test_failing_expression_raises_evaluation_error_naming_the_setting():
    with pytest.raises(EvaluationError, match=r"^MESSAGE_EXPR: "):
        _source('$id + "x"').message(1, 0)


# --- GeneratorSettings ----------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch):
    """A clean environment with the required variables set; returns monkeypatch to change it."""
    for name in GENERATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def _settings_error() -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(GeneratorSettings)
    return str(caught.value)


def test_settings_read_the_required_variables(env):
    settings = load_settings(GeneratorSettings)

    assert (settings.message_expr, settings.cluster_stream, settings.stream_topic) == (
        '{"id": $id}',
        "redis-stream",
        "tenants",
    )


def test_settings_defaults(env):
    settings = load_settings(GeneratorSettings)

    assert settings.message_count == 0
    assert settings.message_delay == 1.0


def test_settings_message_delay_is_a_duration(env):
    env.setenv("MESSAGE_DELAY", "250ms")

    assert load_settings(GeneratorSettings).message_delay == 0.25


def test_settings_message_count(env):
    env.setenv("MESSAGE_COUNT", "12")

    assert load_settings(GeneratorSettings).message_count == 12


@pytest.mark.parametrize("name", ["MESSAGE_EXPR", "CLUSTER_STREAM", "STREAM_TOPIC"])
def test_settings_missing_required_variable(env, name):
    env.delenv(name)

    assert _settings_error() == f"{name} is not set"


def test_settings_missing_all_required_variables_lists_each(env):
    for name in REQUIRED:
        env.delenv(name)

    assert _settings_error() == "MESSAGE_EXPR is not set; CLUSTER_STREAM is not set; STREAM_TOPIC is not set"


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_settings_bad_message_count(env, value):
    env.setenv("MESSAGE_COUNT", value)

    assert _settings_error().startswith(f"MESSAGE_COUNT={value!r}: ")


def test_settings_bad_message_delay(env):
    env.setenv("MESSAGE_DELAY", "fast")

    assert _settings_error().startswith("MESSAGE_DELAY='fast' is not a duration")


def test_settings_empty_message_expr(env):
    env.setenv("MESSAGE_EXPR", "")

    assert _settings_error().startswith("MESSAGE_EXPR='': ")


def test_settings_overrides_win_over_the_environment(env):
    settings = load_settings(GeneratorSettings, STREAM_TOPIC="poweruse")

    assert settings.stream_topic == "poweruse"
