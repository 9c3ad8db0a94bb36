"""The join query over one closed window: checks on arrival, then where/select over every pair."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from joiner.engine.join import JoinQuery
from joiner.engine.windows import ClosedWindow, Event, TumblingWindows
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.expressions import compile_expression

ROOT = Path(__file__).resolve().parents[2]
STREAMS = ("tenants", "poweruse")


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


def _query(where: str | None = None, select: str | None = None) -> JoinQuery:
    stream = _example_stream()
    return JoinQuery(
        STREAMS,
        compile_expression(where if where is not None else stream["where"], setting="stream.where"),
        compile_expression(select if select is not None else stream["select"], setting="stream.select"),
    )


def _window(events: dict[str, list], now: float = 1_000.0) -> ClosedWindow:
    """Buffer the events in one window and close it."""
    windows = TumblingWindows(20, STREAMS)
    for stream, items in events.items():
        for n, data in enumerate(items):
            windows.add(stream, Event(id=f"{stream}-{n}", data=data), now=now)
    [closed] = windows.close_all()
    return closed


def _rows(rows: list) -> Counter:
    return Counter((row["customer_id"], row["tenant_id"], row["tenant_kwh_usage"]) for row in rows)


# --- run over the example -------------------------------------------------------------------------


def test_example_data_has_five_tenants_and_eight_readings():
    data = _example_data()

    assert (len(data["tenants"]), len(data["poweruse"])) == (5, 8)


def test_example_window_gives_the_billable_rows():
    result = _query().run(_window(_example_data()))

    assert _rows(result.rows) == Counter(
        {
            (924, "dc:eqix:us:chi1:12", 1034): 1,
            (924, "dc:eqix:us:chi1:12", 1134): 1,
            (243, "dc:kddi:cn:hnk2:11", 1119): 1,
            (243, "dc:kddi:cn:hnk2:11", 1201): 1,
        }
    )
    assert result.pairs == 40
    assert result.errors == []


def test_rows_are_shaped_by_select():
    result = _query().run(_window(_example_data()))

    assert all(set(row) == {"customer_id", "tenant_id", "tenant_kwh_usage"} for row in result.rows)


def test_window_with_one_empty_stream_gives_no_pairs():
    result = _query().run(_window({"tenants": _example_data()["tenants"]}))

    assert (result.rows, result.pairs) == ([], 0)


# --- check on arrival -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [([1, 2], "an array"), ("text", "a string"), (3.5, "a number"), (None, "null"), (True, "a boolean")],
)
def test_check_rejects_non_objects_naming_the_type(data, kind):
    with pytest.raises(MalformedEvent) as caught:
        _query().check("tenants", data)

    assert str(caught.value) == f"tenants event is {kind}, not a JSON object"


def test_check_rejects_poweruse_without_power_use():
    reading = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "kwh_use": 1034}

    with pytest.raises(MalformedEvent) as caught:
        _query().check("poweruse", reading)

    assert str(caught.value) == "poweruse event has no field power_use (used by the expressions)"


def test_check_rejects_tenants_without_customer_id():
    # customer_id is read only by select: still required
    with pytest.raises(MalformedEvent, match="^tenants event has no field customer_id "):
        _query().check("tenants", {"tenant_id": "dc:eqix:us:chi1:12"})


def test_check_names_a_nested_missing_field():
    query = _query(where="tenants.meta.region = poweruse.region", select="tenants.meta.region")

    with pytest.raises(MalformedEvent, match=r"^tenants event has no field meta\.region "):
        query.check("tenants", {"meta": {}})


def test_check_rejects_a_string_where_the_where_compares_a_number():
    reading = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": "high", "kwh_use": 1034}

    with pytest.raises(MalformedEvent) as caught:
        _query().check("poweruse", reading)

    message = str(caught.value)
    assert message.startswith("poweruse event does not fit the expressions: stream.where: ")
    assert "high" in message


def test_check_does_not_evaluate_cross_stream_conjuncts_alone():
    # tenants.tenant_id = poweruse.tenant_id needs both streams: a lone tenant must not be rejected for it
    tenant = {"tenant_id": "dc:eqix:us:chi1:12", "customer_id": 924}

    assert _query().check("tenants", tenant) is tenant


def test_check_returns_a_valid_event():
    reading = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": 1.05, "kwh_use": 1034}

    assert _query().check("poweruse", reading) is reading


def test_check_accepts_extra_fields():
    tenant = {"tenant_id": "t", "customer_id": 1, "extra": {"x": [1]}}

    assert _query().check("tenants", tenant) is tenant


# --- run: failures and undefined ------------------------------------------------------------------


def test_run_skips_a_pair_whose_select_fails_and_records_it():
    query = _query(
        where="tenants.tenant_id = poweruse.tenant_id",
        select='{"tenant_id": tenants.tenant_id, "total": poweruse.kwh_use + tenants.customer_id}',
    )
    window = _window(
        {
            "tenants": [{"tenant_id": "a", "customer_id": 1}, {"tenant_id": "b", "customer_id": "x"}],
            "poweruse": [{"tenant_id": "a", "kwh_use": 10}, {"tenant_id": "b", "kwh_use": 20}],
        }
    )

    result = query.run(window)

    assert result.rows == [{"tenant_id": "a", "total": 11}]
    assert result.pairs == 4
    assert len(result.errors) == 1
    assert result.errors[0].startswith("tenants tenants-1 x poweruse poweruse-1: stream.select: ")


def test_run_skips_a_pair_whose_where_fails_and_records_it():
    query = _query(where="tenants.limit < poweruse.kwh_use", select="poweruse.kwh_use")
    window = _window(
        {
            "tenants": [{"limit": 5}, {"limit": "five"}],
            "poweruse": [{"kwh_use": 10}],
        }
    )

    result = query.run(window)

    assert result.rows == [10]
    assert len(result.errors) == 1
    assert "stream.where" in result.errors[0]
    assert "tenants-1" in result.errors[0]


def test_run_yields_no_row_when_select_is_undefined():
    query = _query(
        where="tenants.tenant_id = poweruse.tenant_id",
        select='poweruse.kwh_use > 100 ? {"kwh": poweruse.kwh_use}',
    )
    window = _window(
        {
            "tenants": [{"tenant_id": "a"}],
            "poweruse": [{"tenant_id": "a", "kwh_use": 50}, {"tenant_id": "a", "kwh_use": 150}],
        }
    )

    result = query.run(window)

    assert result.rows == [{"kwh": 150}]
    assert result.errors == []


def test_run_uses_jsonata_truthiness_for_where():
    query = _query(where="poweruse.flags", select="poweruse.n")
    window = _window(
        {
            "tenants": [{}],
            "poweruse": [{"n": 1, "flags": []}, {"n": 2, "flags": [0, 1]}, {"n": 3, "flags": ""}, {"n": 4, "flags": "y"}],
        }
    )

    assert query.run(window).rows == [2, 4]


# --- construction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("streams", [("tenants", "tenants"), ("tenants",)])
def test_query_needs_two_distinct_streams(streams):
    stream = _example_stream()
    where = compile_expression(stream["where"], setting="stream.where")
    select = compile_expression(stream["select"], setting="stream.select")

    with pytest.raises(ValueError, match="exactly two distinct streams"):
        JoinQuery(streams, where, select)
