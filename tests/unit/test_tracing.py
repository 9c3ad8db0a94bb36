"""joiner.tracing: the trace contexts of deliveries, bounded per window, and the span of a window's delivery
(through the real Joiner and its sender, spans kept in memory instead of exported)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from joiner.app import Joiner
from joiner.config import config_from_yaml
from joiner.core import build_engine
from joiner.engine.windows import Window
from joiner.tracing import (
    MAX_LINKS,
    NO_TRACING,
    OtlpTracing,
    TraceContext,
    WindowFeeds,
    _reported,
    context_of,
    from_environ,
    parse_traceparent,
    traces_endpoint,
)
from streaming_runtime.sidecar import Refused

ROOT = Path(__file__).resolve().parents[2]
CONFIG = config_from_yaml((ROOT / "services" / "joiner" / "joiner.yaml").read_text())  # 20 s windows
START = 1_700_000_000.0  # a window's start (a multiple of 20)
GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def traceparent(n: int, flags: str = "01") -> str:
    return f"00-{n + 1:032x}-{n + 1:016x}-{flags}"


# -- parsing ------------------------------------------------------------------------------------------


def test_a_traceparent_is_read():
    assert parse_traceparent(GOOD) == TraceContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    assert parse_traceparent(GOOD).traceparent == GOOD


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        "",
        "garbage",
        GOOD.upper(),  # W3C: lower case hex only
        GOOD[:-1],
        GOOD + "-extra",  # version 00 has exactly four fields
        "ff" + GOOD[2:],  # version ff is invalid
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "01" + GOOD[2:] + "x",  # a later version's extra fields follow a dash
        GOOD + "0" * 10_000,
    ],
)
def test_a_malformed_traceparent_is_ignored(value):
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_for_its_first_fields():
    assert parse_traceparent("01" + GOOD[2:] + "-more") == parse_traceparent(GOOD)


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80), st.integers(), st.none()))
def test_parsing_never_raises(value: Any):
    context = parse_traceparent(value)
    assert context is None or parse_traceparent(context.traceparent) == context


def test_an_events_context_comes_from_its_cloudevent():
    assert context_of({"traceparent": GOOD}) == parse_traceparent(GOOD)
    assert context_of({"traceparent": "bad", "traceid": GOOD}) == parse_traceparent(GOOD)  # Dapr's older field
    assert context_of(json.dumps({"id": "1", "traceparent": GOOD})) == parse_traceparent(GOOD)  # bulk entry text
    assert context_of({"data": {"x": 1}}) is None  # a raw payload
    assert context_of({"traceparent": {"nested": GOOD}}) is None
    assert context_of([GOOD]) is None


@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http://collector:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "http://localhost:4318/v1/traces"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/x", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o"},
            "https://c/x",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
    ],
)
def test_the_endpoint_comes_from_the_standard_variables(environ, endpoint):
    assert traces_endpoint(environ) == endpoint


def test_without_an_endpoint_tracing_is_off_and_opentelemetry_is_not_loaded():
    """Off costs nothing: the hooks do nothing and neither the SDK nor the exporter is imported (FastAPI
    imports OpenTelemetry's API itself)."""
    probe = (
        "import sys; import joiner.app; from joiner.tracing import NO_TRACING, from_environ; "
        "assert from_environ({}, 'joiner') is NO_TRACING and not NO_TRACING.enabled; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- bounds -------------------------------------------------------------------------------------------


def test_a_windows_links_are_bounded_and_the_rest_counted():
    feeds = WindowFeeds(limit=MAX_LINKS)
    for n in range(100):
        feeds.add(START, parse_traceparent(traceparent(n)))
        feeds.add(START, parse_traceparent(traceparent(n)))  # a second event of the same trace: one link
    feeds.add(START, None)  # no context (a raw payload): counted only
    feeds.add(START, parse_traceparent(traceparent(500, flags="00")))  # not sampled: nothing to link to
    feeds.close(Window(START, START + 20))
    fed = feeds.take(Window(START, START + 20).id)
    assert fed is not None
    assert list(fed.contexts) == [parse_traceparent(traceparent(n)) for n in range(MAX_LINKS)]  # the first seen
    assert fed.events == 202 and fed.unlinked == 2 * (100 - MAX_LINKS)
    assert feeds.take(Window(START, START + 20).id) is None  # taken once


def test_open_and_closed_windows_are_bounded():
    feeds = WindowFeeds(max_open=3, max_closed=2)
    for k in range(5):
        feeds.add(START + 20 * k, parse_traceparent(traceparent(k)))
    assert sorted(feeds.open) == [START + 40, START + 60, START + 80]  # the oldest forgotten
    for k in (2, 3, 4):
        feeds.close(Window(START + 20 * k, START + 20 * (k + 1)))
    assert list(feeds.closed) == [Window(START + 60, START + 80).id, Window(START + 80, START + 100).id]


def test_windows_that_closed_without_rows_are_forgotten():
    feeds = WindowFeeds()
    feeds.add(START, None)
    feeds.add(START + 20, None)
    feeds.forget_through(START + 20, 20)
    assert list(feeds.open) == [START + 20]


def test_a_split_windows_later_part_has_its_own_contexts():
    feeds = WindowFeeds()
    feeds.add(START, parse_traceparent(traceparent(1)))
    feeds.close(Window(START, START + 20, 0))
    feeds.add(START, parse_traceparent(traceparent(2)))
    feeds.close(Window(START, START + 20, 1))
    assert list(feeds.take(Window(START, START + 20, 0).id).contexts) == [parse_traceparent(traceparent(1))]
    assert list(feeds.take(Window(START, START + 20, 1).id).contexts) == [parse_traceparent(traceparent(2))]


def test_an_error_while_keeping_contexts_never_reaches_the_delivery(caplog):
    tracing = OtlpTracing(TracerProvider(shutdown_on_exit=False))
    tracing.follow(SimpleNamespace(mode=SimpleNamespace(is_table=lambda index: 1 / 0)))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="joiner"):
        tracing.seen(0, [({"traceparent": GOOD}, {}, None)])
    assert "ZeroDivisionError" in caplog.text and "goes on untraced" in caplog.text


def test_spans_not_exported_are_said_once_per_period(caplog):
    class Away(SpanExporter):
        def export(self, spans):
            return SpanExportResult.FAILURE

    exporter = _reported(Away(), "http://collector:4318/v1/traces")
    with caplog.at_level(logging.WARNING, logger="joiner"):
        for _ in range(50):
            assert exporter.export([object(), object()]) is SpanExportResult.FAILURE
    lines = [r.getMessage() for r in caplog.records if "not exported" in r.getMessage()]
    assert len(lines) == 1 and "http://collector:4318/v1/traces" in lines[0]


# -- a window's delivery, through the Joiner ----------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Billing:
    """billable-proc's side of the sidecar: the calls' headers; ``refuse`` makes it refuse them."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[dict[str, str]] = []
        self.refuse = refuse

    async def invoke(self, app_id: str, method: str, data: Any, headers: dict[str, str] | None = None) -> None:
        if self.refuse:
            raise Refused("400 bad rows")
        self.calls.append(dict(headers or {}))


def traced(sink: Billing, clock: Clock) -> tuple[Joiner, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    joiner = Joiner(CONFIG, build_engine(CONFIG), sink, clock, tracing=OtlpTracing(provider))  # type: ignore[arg-type]
    return joiner, exporter


def cloudevent(event_id: str, data: dict, trace: str | None) -> dict:
    event = {"specversion": "1.0", "id": event_id, "datacontenttype": "application/json", "data": data}
    if trace is not None:
        event["traceparent"] = trace
    return event


def tenant(n: int, trace: str | None) -> bytes:
    return json.dumps(cloudevent(f"t{n}", {"tenant_id": "dc:1", "customer_id": 924}, trace)).encode()


def readings(first: int, traces: list[str | None], as_text: bool = False) -> bytes:
    entries = []
    for n, trace in enumerate(traces, first):
        event = cloudevent(f"r{n}", {"tenant_id": "dc:1", "power_use": 1.5, "kwh_use": n}, trace)
        entries.append({"entryId": str(n), "event": json.dumps(event) if as_text else event})
    return json.dumps({"entries": entries, "id": "bulk", "topic": "poweruse"}).encode()


def deliver_closed(joiner: Joiner) -> None:
    """Run the sender until the windows the core closed are delivered (as the service does)."""

    async def run() -> None:
        sender = asyncio.create_task(joiner.sender.run())
        await joiner.outbox.join()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)

    asyncio.run(run())


def test_a_windows_span_links_what_fed_it_and_its_call_carries_the_span():
    sink, clock = Billing(), Clock(START + 1)
    joiner, exporter = traced(sink, clock)
    tenants, poweruse = CONFIG.sources
    assert joiner.ingest(tenants, tenant(1, traceparent(1))) == {"status": "SUCCESS"}
    joiner.ingest(poweruse, readings(10, [traceparent(10), traceparent(11)]))
    joiner.ingest(poweruse, readings(12, [traceparent(12), None], as_text=True))
    clock.now = START + 21  # the next window: its events are not this one's
    joiner.ingest(poweruse, readings(20, [traceparent(20)]))
    joiner.close_due()
    deliver_closed(joiner)

    [span] = exporter.get_finished_spans()
    window = Window(START, START + 20)
    assert span.name == "deliver window" and span.parent is None
    assert dict(span.attributes) == {
        "window.id": window.id,
        "window.start": START,
        "window.end": START + 20,
        "window.part": 0,
        "window.rows": 4,  # the tenant with each of the four readings
        "window.events": 5,
        "window.links_dropped": 0,
        "window.resent": False,
    }
    linked = [(link.context.trace_id, link.context.span_id) for link in span.links]
    fed = [parse_traceparent(traceparent(n)) for n in (1, 10, 11, 12)]
    assert linked == [(context.trace_id, context.span_id) for context in fed]
    [call] = sink.calls
    assert call["window-id"] == window.id
    context = span.get_span_context()
    assert parse_traceparent(call["traceparent"]) == TraceContext(
        context.trace_id, context.span_id, context.trace_flags
    )
    assert context.trace_flags & 0x01  # sampled: the receiving sidecars record their side


def test_malformed_traceparents_cost_no_event():
    sink, clock = Billing(), Clock(START + 1)
    joiner, exporter = traced(sink, clock)
    tenants, poweruse = CONFIG.sources
    assert joiner.ingest(tenants, tenant(1, "00-zz-zz-01")) == {"status": "SUCCESS"}
    answer = joiner.ingest(poweruse, readings(10, ["garbage", GOOD.upper(), "ff" + GOOD[2:]]))
    assert [entry["status"] for entry in answer["statuses"]] == ["SUCCESS"] * 3
    joiner.close_all()
    deliver_closed(joiner)
    [span] = exporter.get_finished_spans()
    assert span.links == () and span.attributes["window.events"] == 4 and span.attributes["window.rows"] == 3


def test_a_window_not_delivered_is_an_error_span_and_its_resend_a_span_of_its_own():
    sink, clock = Billing(refuse=True), Clock(START + 1)
    joiner, exporter = traced(sink, clock)
    tenants, poweruse = CONFIG.sources
    joiner.ingest(tenants, tenant(1, traceparent(1)))
    joiner.ingest(poweruse, readings(10, [traceparent(10)]))
    joiner.close_all()
    deliver_closed(joiner)
    [failed] = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR and "refused" in (failed.status.description or "")
    assert len(failed.links) == 2 and joiner.sender.parked

    sink.refuse = False
    assert asyncio.run(joiner.sender.resend()) == {"resent": 1, "still_parked": 0}
    resent = exporter.get_finished_spans()[1]
    assert resent.attributes["window.resent"] is True and resent.links == ()
    assert resent.attributes["window.id"] == failed.attributes["window.id"]
    assert sink.calls[0]["traceparent"].split("-")[1] == f"{resent.get_span_context().trace_id:032x}"


def test_with_tracing_off_the_calls_are_as_before():
    sink, clock = Billing(), Clock(START + 1)
    joiner = Joiner(CONFIG, build_engine(CONFIG), sink, clock)  # type: ignore[arg-type]
    assert joiner.tracing is NO_TRACING and joiner.sender.tracing is NO_TRACING
    tenants, poweruse = CONFIG.sources
    joiner.ingest(tenants, tenant(1, traceparent(1)))
    joiner.ingest(poweruse, readings(10, [traceparent(10)]))
    joiner.close_all()
    deliver_closed(joiner)
    [call] = sink.calls
    assert set(call) == {"window-start", "window-end", "window-id", "window-chunk"}


def test_an_endpoint_gives_tracing_on():
    tracing = from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "join-tenants-poweruse")
    try:
        assert tracing.enabled and isinstance(tracing, OtlpTracing)
    finally:
        asyncio.run(tracing.close())


# -- the local run (devstack) points the sidecars where the apps' spans go ------------------------------


@pytest.mark.parametrize(
    ("environ", "otel"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:14318"},
            {"endpointAddress": "127.0.0.1:14318", "isSecure": False, "protocol": "http"},
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector:443/v1/traces"},
            {"endpointAddress": "collector:443", "isSecure": True, "protocol": "http"},
        ),
    ],
)
def test_the_local_configuration_sends_the_sidecars_spans_where_the_environment_says(environ, otel):
    import yaml

    from devstack.stack import point_tracing

    document = yaml.safe_load((ROOT / "components" / "config.yaml").read_text())
    point_tracing(document, environ)
    assert document["spec"]["tracing"]["otel"] == otel
    assert document["spec"]["tracing"]["samplingRate"] == "1"


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:14318"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:14318"},
        {},  # no collector named: no sidecar exports to a dead endpoint every 5 s
    ],
)
def test_the_local_run_can_turn_the_sidecars_tracing_off(environ):
    import yaml

    from devstack.stack import point_tracing

    document = yaml.safe_load((ROOT / "components" / "config.yaml").read_text())
    assert document["spec"]["tracing"]["samplingRate"] == "1"  # as shipped, for `dapr run -f .` with a collector
    point_tracing(document, environ)
    assert document["spec"]["tracing"]["samplingRate"] == "0"


def test_a_window_goes_out_when_its_span_cannot_be_made(caplog):
    sink, clock = Billing(), Clock(START + 1)
    joiner, exporter = traced(sink, clock)
    joiner.tracing.tracer = SimpleNamespace()  # type: ignore[attr-defined]  # no start_span: every span fails
    tenants, poweruse = CONFIG.sources
    joiner.ingest(tenants, tenant(1, traceparent(1)))
    joiner.ingest(poweruse, readings(10, [traceparent(10)]))
    joiner.close_all()
    with caplog.at_level(logging.WARNING, logger="joiner"):
        deliver_closed(joiner)
    [call] = sink.calls
    assert call["window-id"] == Window(START, START + 20).id and "traceparent" not in call
    assert exporter.get_finished_spans() == () and "goes on untraced" in caplog.text
    assert joiner.sender.rows_emitted == 1 and not joiner.sender.parked
