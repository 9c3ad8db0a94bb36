"""Tracing of window deliveries: one span per window sent, linked to the deliveries that fed it.

A window has no single parent: its rows come from many publishes, each in a trace of its own (daprd
starts one per publish and carries it in the CloudEvent's ``traceparent``). So the span of a window's
delivery is a root, with a *link* to each distinct trace context of the events that came into that
window (at most ``MAX_LINKS``; ``window.events`` counts them all), and its own context goes out as the
``traceparent`` header of each call to a target: the targets' sidecars (and what they call) are its
children, in the window's trace.

Where the contexts come from: the service shows each delivery to :meth:`Tracing.seen` before the core
takes it in, and the window it goes into is worked out as the core places events (arrival time, or the
event time), outside the core; :meth:`Tracing.closed` (the sender's ``enqueue``, called by the core when
the window closes) files them under the window's id until the window is sent. Table updates, late events
and windows of a previous run (handover, parked windows taken over) have none; a re-sent parked window
gets a span of its own, without links.

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT``): then nothing of OpenTelemetry is even imported and every hook is a
check of ``enabled`` or an empty method. On, spans go out over OTLP/HTTP from a background thread in
batches; a collector that is away costs the spans meanwhile and one log line per ``REPORT_PERIOD``, never
a delivery.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from joiner.engine.eventtime import event_time
from joiner.engine.windows import Window
from streaming_runtime.logs import LogBudget, printable

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import Tracer

    from joiner.core import JoinCore

log = logging.getLogger("joiner")

T = TypeVar("T")

MAX_LINKS = 64  # distinct trace contexts linked from one window's span; the rest are counted
MAX_OPEN = 256  # windows whose contexts are kept while open (more: the oldest are forgotten)
MAX_CLOSED = 256  # closed windows whose contexts wait for their delivery (a long outbox: the oldest go)
SPAN_NAME = "deliver window"
EXPORT_TIMEOUT_SECONDS = 5.0  # per export, retries included: also how long a stop may wait for the collector
REPORT_PERIOD = 300.0  # seconds: at most one log line this often about spans that could not be exported
SAMPLED = 0x01  # the trace-flags bit
EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"  # its lines: one per retry

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# a bulk entry's event may come as JSON text: its traceparent found without parsing it a second time
_TRACEPARENT_IN_TEXT = re.compile(r'"traceparent"\s*:\s*"([^"\\]{0,64})"')


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A W3C trace context (the ``traceparent`` of a delivered event)."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def parse_traceparent(value: object) -> TraceContext | None:
    """The context a ``traceparent`` value names, or None for anything else: a malformed value (wrong
    length, upper case, version ``ff``, an all-zero id, not a string) is ignored, never an error. A later
    version's value is read for its first four fields, as W3C Trace Context asks."""
    if type(value) is not str or len(value) > 512:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace, span, flags = match.groups()
    if version == "ff" or (version == "00" and len(value) != 55) or (len(value) > 55 and value[55] != "-"):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return TraceContext(trace_id, span_id, int(flags, 16))


def context_of(event: Any) -> TraceContext | None:
    """A delivered event's trace context: its CloudEvent's ``traceparent`` (or Dapr's ``traceid``, the
    same value); None when it has none (raw payloads) or it is malformed."""
    if type(event) is dict:
        return parse_traceparent(event.get("traceparent")) or parse_traceparent(event.get("traceid"))
    if type(event) is str:
        match = _TRACEPARENT_IN_TEXT.search(event)
        return parse_traceparent(match.group(1)) if match else None
    return None


@dataclass
class Fed:
    """What came into one window: up to ``limit`` distinct trace contexts, and how many events."""

    contexts: dict[TraceContext, None] = field(default_factory=dict)  # an ordered set: first seen first
    events: int = 0
    unlinked: int = 0  # events whose context was not kept: over the bound

    def add(self, context: TraceContext | None, limit: int) -> None:
        self.events += 1
        if context is None or not context.flags & SAMPLED or context in self.contexts:
            return  # a publish daprd did not sample is in no trace a viewer has: nothing to link to
        if len(self.contexts) < limit:
            self.contexts[context] = None
        else:
            self.unlinked += 1


class WindowFeeds:
    """The trace contexts of open windows (by start), then of closed ones (by id) until they are sent;
    every part bounded, so that no input makes it grow without end."""

    def __init__(self, limit: int = MAX_LINKS, max_open: int = MAX_OPEN, max_closed: int = MAX_CLOSED) -> None:
        self.limit = limit
        self.max_open = max_open
        self.max_closed = max_closed
        self.open: dict[float, Fed] = {}
        self.closed: OrderedDict[str, Fed] = OrderedDict()

    def add(self, start: float, context: TraceContext | None) -> None:
        fed = self.open.get(start)
        if fed is None:
            if len(self.open) >= self.max_open:
                del self.open[min(self.open)]
            fed = self.open[start] = Fed()
        fed.add(context, self.limit)

    def close(self, window: Window) -> None:
        """``window`` closed: what fed it waits for its delivery (a later part of it starts empty)."""
        fed = self.open.pop(window.start, None)
        if fed is None:
            return
        self.closed[window.id] = fed
        while len(self.closed) > self.max_closed:
            self.closed.popitem(last=False)

    def forget_through(self, closed_through: float, size: float) -> None:
        """Windows that ended by ``closed_through`` closed without rows (or were never sent): forgotten."""
        for start in [start for start in self.open if start + size <= closed_through]:
            del self.open[start]

    def take(self, window_id: str) -> Fed | None:
        return self.closed.pop(window_id, None)


class Tracing:
    """The joiner's tracing; this base is tracing off (every hook does nothing). :func:`from_environ`
    gives the one that traces when an endpoint is configured."""

    enabled = False

    def follow(self, core: JoinCore) -> None:
        """The core whose windows the deliveries go into (its clock, time spec, windows)."""

    def seen(self, index: int, events: Iterable[tuple[Any, Any, str | None]]) -> None:
        """Deliveries of stream ``index`` about to go into the core: ``(event as delivered, data,
        CloudEvent time)`` each."""

    def closed(self, window: Window) -> None:
        """The core closed ``window`` (with rows)."""

    async def deliver(self, window: Window, rows: int, work: Awaitable[T], resent: bool = False) -> T:
        """``work``, the delivery of ``window`` to every target, in a span of its own when tracing."""
        return await work

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """The current delivery's ``traceparent`` into a call's headers."""

    def failed(self, reason: str) -> None:
        """The current delivery did not reach a target (the window is parked)."""

    async def close(self) -> None:
        """Export what is left, at stop."""


NO_TRACING = Tracing()


class OtlpTracing(Tracing):
    enabled = True

    def __init__(self, provider: TracerProvider, feeds: WindowFeeds | None = None) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("joiner")
        self.feeds = feeds or WindowFeeds()
        self.propagator = TraceContextTextMapPropagator()
        self.core: JoinCore | None = None
        self.problems = LogBudget(log, burst=1, period=REPORT_PERIOD)

    def follow(self, core: JoinCore) -> None:
        self.core = core

    def seen(self, index: int, events: Iterable[tuple[Any, Any, str | None]]) -> None:
        try:
            self._seen(index, events)
        except Exception as error:  # noqa: BLE001 - tracing must never cost a delivery
            self._trouble(error)

    def _seen(self, index: int, events: Iterable[tuple[Any, Any, str | None]]) -> None:
        core = self.core
        if core is None or core.mode.is_table(index):
            return  # a table update goes into no window
        windows, spec = core.windows, core.time_spec
        arrival = core.clock()
        size, closed_through = windows.size, windows.closed_through
        for event, data, cloudevent_time in events:
            start = windows.window_at(event_time(spec, data, cloudevent_time, arrival)).start
            if start + size > closed_through:  # else late: its window is gone
                self.feeds.add(start, context_of(event))

    def closed(self, window: Window) -> None:
        try:
            self.feeds.close(window)
            if self.core is not None:
                self.feeds.forget_through(self.core.windows.closed_through, self.core.windows.size)
        except Exception as error:  # noqa: BLE001 - called as the core closes a window: never break that
            self._trouble(error)

    async def deliver(self, window: Window, rows: int, work: Awaitable[T], resent: bool = False) -> T:
        from opentelemetry import trace

        try:
            span = self._span(window, rows, resent)
        except Exception as error:  # noqa: BLE001 - the window goes out all the same, untraced
            self._trouble(error)
            return await work
        with trace.use_span(span, end_on_exit=True):
            return await work

    def _span(self, window: Window, rows: int, resent: bool) -> Any:
        from opentelemetry import trace

        fed = None if resent else self.feeds.take(window.id)
        attributes: dict[str, Any] = {
            "window.id": window.id,
            "window.start": window.start,
            "window.end": window.end,
            "window.part": window.part,
            "window.rows": rows,
            "window.events": fed.events if fed else 0,
            "window.links_dropped": fed.unlinked if fed else 0,
            "window.resent": resent,
        }
        return self.tracer.start_span(SPAN_NAME, kind=trace.SpanKind.PRODUCER, links=_links(fed), attributes=attributes)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        try:
            self.propagator.inject(headers)
        except Exception as error:  # noqa: BLE001 - the call goes out without it
            self._trouble(error)

    def failed(self, reason: str) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        try:
            trace.get_current_span().set_status(Status(StatusCode.ERROR, reason[:300]))
        except Exception as error:  # noqa: BLE001 - the window is parked all the same
            self._trouble(error)

    def _trouble(self, error: Exception) -> None:
        """An error of tracing's own: said (sampled), and the pipeline goes on without that part of it."""
        self.problems.warning("tracing", "tracing: %s (the delivery goes on untraced)", printable(repr(error), 300))

    async def close(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)


def _links(fed: Fed | None) -> list[Any]:
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    if fed is None:
        return []
    return [
        Link(SpanContext(c.trace_id, c.span_id, is_remote=True, trace_flags=TraceFlags(c.flags & SAMPLED)))
        for c in fed.contexts
    ]


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL the environment configures, or None (tracing off). A bare ``host:port``
    (daprd's ``endpointAddress`` form) is taken for ``http://host:port``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    full = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if full:
        return full if "://" in full else f"http://{full}"
    if base:
        base = base if "://" in base else f"http://{base}"
        return base.rstrip("/") + "/v1/traces"
    return None


def from_environ(environ: Mapping[str, str], service_name: str) -> Tracing:
    """Tracing as the environment configures it: off (:data:`NO_TRACING`) without an endpoint."""
    endpoint = traces_endpoint(environ)
    if endpoint is None:
        return NO_TRACING
    try:
        return _otlp_tracing(endpoint, service_name)
    except Exception as error:  # noqa: BLE001 - tracing is an aid: the joiner runs without it, and says so
        log.error("tracing off: it could not be set up for %s: %s", endpoint, error)
        return NO_TRACING


def _otlp_tracing(endpoint: str, service_name: str) -> Tracing:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # the exporter logs each retry and each failure; the joiner says it itself, sampled (Reported)
    logging.getLogger(EXPORTER_LOGGER).setLevel(logging.CRITICAL)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS)
    provider.add_span_processor(BatchSpanProcessor(_reported(exporter, endpoint)))
    log.info("tracing: window deliveries traced, spans to %s", endpoint)
    return OtlpTracing(provider)


def _reported(exporter: SpanExporter, endpoint: str) -> SpanExporter:
    """``exporter``, saying (at most once per REPORT_PERIOD) when spans could not be exported."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Reported(SpanExporter):
        def __init__(self) -> None:
            self.budget = LogBudget(log, burst=1, period=REPORT_PERIOD)
            self.failed = 0

        def export(self, spans: Any) -> SpanExportResult:
            result = exporter.export(spans)
            if result is not SpanExportResult.SUCCESS:
                self.failed += len(spans)
                self.budget.warning(
                    "tracing export",
                    "tracing: %d span(s) not exported to %s (%d so far): is the collector up? Deliveries go on",
                    len(spans),
                    endpoint,
                    self.failed,
                )
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return Reported()


__all__ = [
    "MAX_LINKS",
    "NO_TRACING",
    "Fed",
    "OtlpTracing",
    "TraceContext",
    "Tracing",
    "WindowFeeds",
    "context_of",
    "from_environ",
    "parse_traceparent",
    "traces_endpoint",
]
