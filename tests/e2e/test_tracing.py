"""Tracing end to end: the real pipeline (dapr.yaml: generators, joiner, billable-proc, their daprd sidecars,
Redis, RabbitMQ) with its Configuration's tracing pointed at an OTLP/HTTP receiver run by the test, as
`make run` points it (OTEL_EXPORTER_OTLP_ENDPOINT): the joiner and every daprd export to it.

One window delivered is followed through what they reported: the joiner's span of its delivery names the
window billable-proc received (``window.id`` = the ``window-id`` header), links to the publishes that fed
it (the traces daprd made for the generators' publishes, delivered to the joiner within the window), and
billable-proc's sidecar's span of the ``/billables`` call is in the window's trace, under the window span.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from devstack.stack import Stack
from tests.e2e.support import poll

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOINER = "join-tenants-poweruse"
WINDOW_SECONDS = 4.0


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start: float  # epoch seconds
    end: float
    attributes: dict
    links: tuple[tuple[str, str], ...]  # (trace id, span id)


class Receiver:
    """An OTLP/HTTP traces endpoint on a free loopback port: every span posted to /v1/traces, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args) -> None:  # quiet: the test reports what matters
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        Span(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            start=span.start_time_unix_nano / 1e9,
                            end=span.end_time_unix_nano / 1e9,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                        )
                    )
        with self.lock:
            self.spans += spans
            self.requests += 1

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        """The collector goes away: from now on, connections to its port are refused."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()

    def __exit__(self, *_exc) -> None:
        self.stop()


def _value(value) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Iterator[tuple[Stack, Receiver]]:
    with Receiver() as receiver, pytest.MonkeyPatch.context() as env:
        # as a person does before `make run`: the apps read it, and devstack points the sidecars' Configuration
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        overrides = {
            JOINER: {"JOINER_WINDOW_SIZE": f"{WINDOW_SECONDS:g}s", "OTEL_BSP_SCHEDULE_DELAY": "200"},
            "tenants-gen": {"MESSAGE_DELAY": "200ms"},
            "poweruse-gen": {"MESSAGE_DELAY": "200ms"},
        }
        run_dir = tmp_path_factory.mktemp("tracing")
        with Stack(ROOT / "dapr.yaml", run_dir, overrides, quiet=True) as stack:
            yield stack, receiver


def window_spans(spans: list[Span]) -> dict[str, Span]:
    return {s.attributes["window.id"]: s for s in spans if s.service == JOINER and s.name == "deliver window"}


def deliveries_to_joiner(spans: list[Span]) -> list[Span]:
    """daprd's spans of the pub/sub deliveries to the joiner (one per event, bulk or not)."""
    return [s for s in spans if s.service == JOINER and s.name in ("pubsub/tenants", "pubsub/poweruse")]


def billables_call(spans: list[Span], trace_id: str) -> Span | None:
    """billable-proc's sidecar's span of a ``/billables`` call in the trace ``trace_id``."""
    return next(
        (
            s
            for s in spans
            if s.service == "billable-proc" and s.name == "CallLocal/billable-proc/billables" and s.trace_id == trace_id
        ),
        None,
    )


def test_a_window_delivery_span_links_its_deliveries_and_parents_billable_procs_side(traced):
    stack, receiver = traced
    proc = stack.apps["billable-proc"]

    def a_traced_window() -> tuple[str, Span, Span] | None:
        """A window billable-proc received (not the first: the stack may have started in its middle) whose
        span, and billable-proc's side of its call, were exported."""
        received = [w["id"] for w in proc.get("/stats").json()["windows"]][1:]
        spans = receiver.snapshot()
        windows = window_spans(spans)
        for window_id in received:
            span = windows.get(window_id)
            if span is not None and (call := billables_call(spans, span.trace_id)) is not None:
                return window_id, span, call
        return None

    window_id, span, call = poll(a_traced_window, 90, "a window's delivery traced through to billable-proc", stack)
    assert span.attributes["window.id"] == window_id  # the window-id header billable-proc received
    start, end = span.attributes["window.start"], span.attributes["window.end"]
    assert end - start == WINDOW_SECONDS and window_id == str(int(start * 1000))
    assert span.attributes["window.rows"] > 0 and span.parent_id == ""  # a root: its inputs are links

    # billable-proc's side is under the window span: its sidecar's span, the joiner's sidecar's, the window's
    def ancestors() -> list[tuple[str, str]] | None:
        """billable-proc's span's parents up to the root, once each daprd has exported its part."""
        by_id = {s.span_id: s for s in receiver.snapshot() if s.trace_id == span.trace_id}
        chain, current = [], call
        while current.parent_id:
            if current.parent_id not in by_id:
                return None
            current = by_id[current.parent_id]
            chain.append((current.service, current.name))
        return chain

    chain = poll(ancestors, 30, "the spans between billable-proc's call and the window span", stack)
    assert chain == [(JOINER, "CallLocal/billable-proc/billables"), (JOINER, "deliver window")], chain

    # the links are the generators' publishes (the span daprd made for each, carried in its CloudEvent)
    links = set(span.links)
    assert links and len(links) == len(span.links) <= 64
    assert span.attributes["window.events"] >= len(links)

    def publishes_linked() -> dict[tuple[str, str], Span] | None:
        publishes = {
            (s.trace_id, s.span_id): s
            for s in receiver.snapshot()
            if s.service in ("tenants-gen", "poweruse-gen") and s.name.endswith("/PublishEvent")
        }
        return {link: publishes[link] for link in links} if links <= publishes.keys() else None

    linked = poll(publishes_linked, 30, "every link is a publish daprd reported", stack)
    assert {s.service for s in linked.values()} == {"tenants-gen", "poweruse-gen"}  # both streams fed it

    # ...and they are those delivered to the joiner in the window's time (processing time), as daprd saw them
    margin = 0.5  # daprd's delivery span starts a little before the joiner takes the event in
    linked_traces = {trace_id for trace_id, _ in links}

    def deliveries_reported() -> list[Span] | None:
        delivered = deliveries_to_joiner(receiver.snapshot())
        return delivered if linked_traces <= {s.trace_id for s in delivered} else None

    delivered = poll(deliveries_reported, 30, "daprd's spans of the linked deliveries", stack)
    inside = {s.trace_id for s in delivered if start + margin <= s.start <= end - margin}
    assert inside and inside <= linked_traces, sorted(inside - linked_traces)[:5]
    for s in delivered:
        if s.trace_id in linked_traces:
            assert start - margin <= s.start <= end + margin, (s.name, s.start, start, end)


def test_the_pipeline_goes_on_when_the_collector_is_away(traced):
    """The receiver stops: windows are still delivered, the joiner says so once (not per span or retry),
    and each daprd logs at most one line per export interval (5 s)."""
    stack, receiver = traced
    proc, joiner = stack.apps["billable-proc"], stack.apps[JOINER]
    receiver.stop()
    stopped = time.monotonic()
    calls = proc.get("/stats").json()["calls"]
    poll(lambda: "not exported" in joiner.log_text(), 60, "the joiner saying spans were not exported", stack)
    poll(lambda: proc.get("/stats").json()["calls"] >= calls + 3, 60, "windows delivered without a collector", stack)
    elapsed = time.monotonic() - stopped
    assert joiner.log_text().count("not exported") == 1  # one line per 5 minutes at most
    assert "Traceback" not in joiner.log_text()
    log = stack.apps["billable-proc"].sidecar.log_path.read_text(errors="replace")
    refused = [line for line in log.splitlines() if "traces export" in line]
    assert refused and len(refused) <= elapsed / 5 + 2, refused[-3:]
