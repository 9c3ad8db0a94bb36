"""What an event's data may hold (streaming_runtime.values) and how text from events is logged."""

from __future__ import annotations

import json
import logging

import pytest

from streaming_runtime.logs import ErrorReport, printable
from streaming_runtime.values import MAX_DEPTH, value_problem


@pytest.mark.parametrize(
    "value",
    [
        {"tenant_id": "dc:eqix:us:chi1:12", "power_use": 1.05, "kwh_use": 1034},
        {"name": "Zoë 😀", "tags": ["a", {"b": None}], "ok": True, "big": 2**63 - 1, "small": -(2**63) + 1},
        json.loads('{"pair": "\\ud83d\\ude00"}'),  # a surrogate pair is one character
        [],
        "text",
        1.5,
        None,
    ],
)
def test_values_every_json_reader_reads_alike_are_accepted(value):
    assert value_problem(value) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"kwh_use": float("inf")}, "data.kwh_use is inf, not a finite number"),
        ({"a": [1, float("nan")]}, "data.a[1] is nan, not a finite number"),
        ({"id": 2**63}, "data.id is an integer beyond 64 bits"),
        ({"id": -(10**400)}, "data.id is an integer beyond 64 bits"),
        (json.loads('{"s": "x\\ud800"}'), "data.s is not Unicode text (a lone surrogate)"),
        (json.loads('{"\\udc00": 1}'), "a key of data is not Unicode text (a lone surrogate)"),
        (json.loads('["\\ud800"]'), "data[0] is not Unicode text (a lone surrogate)"),
        (float("-inf"), "data is -inf, not a finite number"),
    ],
)
def test_values_that_cannot_be_billed_are_refused_naming_the_place(value, reason):
    assert value_problem(value) == reason


def test_nesting_is_bounded():
    deep = inner = {}
    for _ in range(MAX_DEPTH - 1):
        inner["x"] = inner = {}
    assert value_problem(deep) is None
    inner["x"] = {}
    assert value_problem(deep) == "data" + ".x" * MAX_DEPTH + " is nested deeper than 32 levels"


def test_printable_escapes_what_could_start_a_line_and_cuts_long_text():
    assert printable("id\n2026 INFO forged\r\x1b[2J") == "id\\n2026 INFO forged\\r\\x1b[2J"
    assert printable("\ud800é") == "\\ud800\\xe9"
    assert printable(None) == "(none)"
    assert printable("x" * 500, 10) == "xxxxxxxxxx...(490 more)"


def test_an_error_report_gives_one_traceback_per_kind_and_counts_all(caplog):
    report = ErrorReport(logging.getLogger("test"), every=3600)
    for _ in range(100):
        try:
            raise KeyError("k")
        except KeyError as error:
            report("route /a", error)
    try:
        raise ValueError("v\nforged line")
    except ValueError as error:
        report("route /a", error)
    assert report.counts == {"route /a: KeyError": 100, "route /a: ValueError": 1} and report.total == 101
    assert [r.exc_info is not None for r in caplog.records] == [True, True]
    assert all("\n" not in r.getMessage() for r in caplog.records)
