"""The joiner service: a thin shell of FastAPI and Dapr around :mod:`joiner.engine`.

* one POST route per input stream, fed by declarative Dapr Subscriptions;
* a window task that closes due windows, joins them and queues their rows;
* a sender task that delivers queued rows, in order, to every target.

Subscriber answers follow how daprd reads them: ``SUCCESS`` (kept), ``DROP`` (malformed: daprd
sends it to the Subscription's dead-letter topic). Never a 4xx/5xx for a bad event, since
daprd retries those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from joiner.config import InvokeTarget, JoinerConfig, StreamSource, load_config
from joiner.engine.join import JoinEngine, WindowState
from joiner.engine.windows import TumblingWindows, Window
from streaming_runtime.cloudevents import bulk_entries, delivery_of, is_bulk, read_body
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.expressions import compile_expression
from streaming_runtime.service import api_token_guard
from streaming_runtime.settings import ServiceSettings
from streaming_runtime.sidecar import Invoker, Publisher, Sidecar, SidecarError

log = logging.getLogger("joiner")

DELIVERY_ATTEMPTS = 5
ROWS_PER_CALL = 10_000  # daprd refuses bodies over 4 MB by default; large windows go in several calls


class JoinerSettings(ServiceSettings):
    """Service settings; the join itself is read by :func:`joiner.config.load_config`."""


@dataclass
class JoinerStats:
    accepted: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    bulk_deliveries: Counter = field(default_factory=Counter)
    windows_closed: int = 0
    windows_split: int = 0
    rows_emitted: int = 0
    pair_errors: int = 0
    deliveries_failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": dict(self.accepted),
            "filtered": dict(self.filtered),
            "dropped": dict(self.dropped),
            "bulk_deliveries": dict(self.bulk_deliveries),
            "windows_closed": self.windows_closed,
            "windows_split": self.windows_split,
            "rows_emitted": self.rows_emitted,
            "pair_errors": self.pair_errors,
            "deliveries_failed": self.deliveries_failed,
        }


def build_engine(config: JoinerConfig) -> JoinEngine:
    """Compile both expressions (ConfigError on a parse error) and plan the join."""
    where = compile_expression(config.where, setting=config.where_setting)
    select = compile_expression(config.select, setting=config.select_setting)
    return JoinEngine((config.sources[0].name, config.sources[1].name), where, select)


class Joiner:
    """Ingest, windows, join, delivery: the state one service instance holds."""

    def __init__(
        self,
        config: JoinerConfig,
        engine: JoinEngine,
        sink: Any,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = 1024 * 1024,
        retry_base_delay: float = 0.25,
        rows_per_call: int = ROWS_PER_CALL,
    ) -> None:
        self.config = config
        self.engine = engine
        self.sink = sink
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.retry_base_delay = retry_base_delay
        self.rows_per_call = rows_per_call
        self.windows = TumblingWindows(config.window_seconds, engine.new_state)
        self.stream_index = {source.name: index for index, source in enumerate(config.sources)}
        self.stats = JoinerStats()
        self.outbox: asyncio.Queue[tuple[Window, list[Any]]] = asyncio.Queue()

    # -- deliveries ---------------------------------------------------------------------------

    def ingest(self, source: StreamSource, body: bytes) -> dict[str, Any]:
        """Answer for one delivery (single or bulk). Malformed events are answered DROP, with a log line."""
        try:
            document = read_body(body, max_bytes=self.max_body_bytes)
            if is_bulk(document):
                return self._ingest_bulk(source, document)
            delivery = delivery_of(document)
        except MalformedEvent as error:
            return self._drop(source, None, error)
        window, state = self.windows.state_at(self.clock())
        try:
            kept = self.engine.accept(state, self.stream_index[source.name], delivery.data, delivery.id)
        except MalformedEvent as error:
            return self._drop(source, delivery.id, error)
        (self.stats.accepted if kept else self.stats.filtered)[source.name] += 1
        self._split_if_full(window, state)
        return {"status": "SUCCESS"}

    def _ingest_bulk(self, source: StreamSource, document: dict[str, Any]) -> dict[str, Any]:
        self.stats.bulk_deliveries[source.name] += 1
        statuses: dict[str, str] = {}
        entries: list[tuple[Any, str | None]] = []
        entry_ids: dict[int, str] = {}
        for entry_id, parsed in bulk_entries(document):
            if isinstance(parsed, MalformedEvent):
                self._drop(source, entry_id, parsed)
                statuses[entry_id] = "DROP"
                continue
            entry = (parsed.data, parsed.id or entry_id)
            entries.append(entry)
            entry_ids[id(entry)] = entry_id
            statuses[entry_id] = "SUCCESS"
        window, state = self.windows.state_at(self.clock())
        outcome = self.engine.accept_many(state, self.stream_index[source.name], entries)
        for entry, reason in outcome.malformed:
            self._drop(source, entry[1], MalformedEvent(reason))
            statuses[entry_ids[id(entry)]] = "DROP"
        self.stats.accepted[source.name] += outcome.accepted
        self.stats.filtered[source.name] += outcome.filtered
        self._split_if_full(window, state)
        return {"statuses": [{"entryId": entry_id, "status": status} for entry_id, status in statuses.items()]}

    def _drop(self, source: StreamSource, event_id: str | None, error: MalformedEvent) -> dict[str, str]:
        self.stats.dropped[source.name] += 1
        log.warning("dropped malformed event stream=%s id=%s reason=%s", source.name, event_id, error)
        return {"status": "DROP"}

    def _split_if_full(self, window: Window, state: WindowState) -> None:
        """At the per-window bound, close the window early and go on in a new part of it.

        Nothing is lost: the rows made so far are sent; pairs between events of different parts
        are not made, which is what the count `windows_split` and the warning say."""
        if state.count < self.config.max_window_events:
            return
        self.stats.windows_split += 1
        log.warning(
            "window %s reached %d buffered events (maxWindowEvents): closing it early; "
            "later events of this window go to part %d and do not pair with earlier ones",
            window.id, state.count, window.part + 1,
        )
        self._close(*self.windows.split(window))

    # -- windows ------------------------------------------------------------------------------

    def close_due(self) -> None:
        for window, state in self.windows.close_due(self.clock()):
            self._close(window, state)

    def close_all(self) -> None:
        for window, state in self.windows.close_all():
            self._close(window, state)

    def _close(self, window: Window, state: WindowState) -> None:
        result = self.engine.result(state)
        self.stats.windows_closed += 1
        self.stats.pair_errors += len(result.errors)
        for error in result.errors[:5]:
            log.warning("pair skipped window=%s %s", window.id, error)
        log.info(
            "window closed id=%s events=%d pairs=%d rows=%d", window.id, state.count, result.pairs, len(result.rows)
        )
        if result.rows:
            self.outbox.put_nowait((window, result.rows))

    async def run_windows(self) -> None:
        """Close each window when the clock reaches its end."""
        while True:
            now = self.clock()
            await asyncio.sleep(max(0.0, self.windows.window_at(now).end - now))
            self.close_due()

    async def run_sender(self) -> None:
        while True:
            window, rows = await self.outbox.get()
            for start in range(0, len(rows), self.rows_per_call):
                await self.deliver(window, rows[start : start + self.rows_per_call])
            self.outbox.task_done()

    async def deliver(self, window: Window, rows: list[Any]) -> None:
        """Send rows of one window to every target, retrying with backoff; a failure is logged, never silent."""
        headers = {"window-start": str(window.start), "window-end": str(window.end), "window-id": window.id}
        for target in self.config.targets:
            for attempt in range(1, DELIVERY_ATTEMPTS + 1):
                try:
                    if isinstance(target, InvokeTarget):
                        await self.sink.invoke(target.app_id, target.method, rows, headers)
                    else:
                        await self.sink.publish(target.pubsub, target.topic, rows)
                    self.stats.rows_emitted += len(rows)
                    break
                except SidecarError as error:
                    if attempt == DELIVERY_ATTEMPTS:
                        self.stats.deliveries_failed += 1
                        log.error(
                            "window %s: %d rows not delivered to %s after %d attempts: %s",
                            window.id, len(rows), target, attempt, error,
                        )
                    else:
                        log.warning("window %s: delivery to %s failed (attempt %d): %s", window.id, target, attempt, error)
                        await asyncio.sleep(min(self.retry_base_delay * 2**attempt, 5.0))


def create_app(
    settings: JoinerSettings,
    config: JoinerConfig | None = None,
    sink: Any | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    config = config or load_config(os.environ)
    engine = build_engine(config)
    guard = api_token_guard(settings)
    state: dict[str, Joiner] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sidecar = None
        target = sink
        if target is None:
            sidecar = Sidecar(settings)
            target = sidecar
        joiner = Joiner(config, engine, target, clock, settings.max_body_bytes)
        state["joiner"] = app.state.joiner = joiner
        log.info(
            "joining %s over %gs windows -> %s",
            " x ".join(f"{s.name} (route {s.route})" for s in config.sources),
            config.window_seconds,
            ", ".join(str(t) for t in config.targets),
        )
        log.info("plan: %s", engine.describe())
        tasks = [asyncio.create_task(joiner.run_windows()), asyncio.create_task(joiner.run_sender())]
        yield
        tasks[0].cancel()
        joiner.close_all()  # what is buffered goes out before we stop
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(joiner.outbox.join(), timeout=10)
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sidecar is not None:
            await sidecar.aclose()

    app = FastAPI(title="joiner", lifespan=lifespan)

    def add_stream_route(source: StreamSource) -> None:
        async def receive(request: Request) -> JSONResponse:
            body = await request.body()
            return JSONResponse(state["joiner"].ingest(source, body))

        app.add_api_route(
            source.route, receive, methods=["POST"], name=f"receive_{source.name}", dependencies=[Depends(guard)]
        )

    for source in config.sources:
        add_stream_route(source)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict:
        joiner = state["joiner"]
        buffered = sum(state.count for state in joiner.windows.states())
        return {**joiner.stats.as_dict(), "buffered": buffered, "outbox": joiner.outbox.qsize()}

    return app
