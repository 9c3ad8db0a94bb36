"""Go-style durations, as the original project's settings write them."""

from __future__ import annotations

import pytest

from streaming_runtime.durations import parse_duration
from streaming_runtime.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("2", 2.0),
        ("0", 0.0),
        ("1h2m3s", 3723.0),
        ("500us", 0.0005),
        (" 20s ", 20.0),
    ],
)
def test_parses(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "   ", "abc", "1x", "s", "-1s", "1s2", "1 s", "ms1"])
def test_rejects_and_names_the_setting(text):
    with pytest.raises(ConfigError) as caught:
        parse_duration(text, setting="JOINER_WINDOW_SIZE")

    assert str(caught.value).startswith("JOINER_WINDOW_SIZE")


def test_not_a_duration_message_shows_the_value_and_an_example():
    with pytest.raises(ConfigError) as caught:
        parse_duration("1x", setting="MESSAGE_DELAY")

    message = str(caught.value)
    assert message.startswith("MESSAGE_DELAY='1x' is not a duration")
    assert "250ms" in message


def test_empty_message_says_it_is_empty():
    with pytest.raises(ConfigError, match=r"^MESSAGE_DELAY is empty"):
        parse_duration("", setting="MESSAGE_DELAY")


def test_negative_bare_number_is_rejected_as_negative():
    with pytest.raises(ConfigError, match=r"^MESSAGE_DELAY='-1' is negative$"):
        parse_duration("-1", setting="MESSAGE_DELAY")


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "Infinity"])
def test_non_finite_numbers_are_rejected(text):
    with pytest.raises(ConfigError, match=r"^MESSAGE_DELAY=.* is not a finite duration$"):
        parse_duration(text, setting="MESSAGE_DELAY")
