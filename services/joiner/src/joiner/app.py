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
from joiner.engine.join import JoinQuery
from joiner.engine.windows import ClosedWindow, Event, TumblingWindows
from streaming_runtime.cloudevents import parse_delivery
from streaming_runtime.errors import MalformedEvent
from streaming_runtime.expressions import compile_expression
from streaming_runtime.service import api_token_guard
from streaming_runtime.settings import ServiceSettings
from streaming_runtime.sidecar import Invoker, Publisher, Sidecar, SidecarError

log = logging.getLogger("joiner")

DELIVERY_ATTEMPTS = 5


class JoinerSettings(ServiceSettings):
    """Service settings; the join itself is read by :func:`joiner.config.load_config`."""


@dataclass
class JoinerStats:
    accepted: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    windows_closed: int = 0
    rows_emitted: int = 0
    pair_errors: int = 0
    deliveries_failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": dict(self.accepted),
            "dropped": dict(self.dropped),
            "windows_closed": self.windows_closed,
            "rows_emitted": self.rows_emitted,
            "pair_errors": self.pair_errors,
            "deliveries_failed": self.deliveries_failed,
        }


def build_query(config: JoinerConfig) -> JoinQuery:
    """Compile both expressions (ConfigError on a parse error) and log the plan."""
    where = compile_expression(config.where, setting=config.where_setting)
    select = compile_expression(config.select, setting=config.select_setting)
    streams = (config.sources[0].name, config.sources[1].name)
    return JoinQuery(streams, where, select)


class Joiner:
    """Ingest, windows, join, delivery: the state one service instance holds."""

    def __init__(
        self,
        config: JoinerConfig,
        query: JoinQuery,
        sink: Invoker | Publisher | Any,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = 1024 * 1024,
        retry_base_delay: float = 0.25,
    ) -> None:
        self.config = config
        self.query = query
        self.sink = sink
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.retry_base_delay = retry_base_delay
        self.windows = TumblingWindows(config.window_seconds, query.streams)
        self.stats = JoinerStats()
        self.outbox: asyncio.Queue[tuple[ClosedWindow, list[Any]]] = asyncio.Queue()

    def ingest(self, source: StreamSource, body: bytes) -> dict[str, str]:
        """Answer for one delivery: SUCCESS when buffered, DROP (with a log line) when malformed."""
        event_id = None
        try:
            delivery = parse_delivery(body, max_bytes=self.max_body_bytes)
            event_id = delivery.id
            data = self.query.check(source.name, delivery.data)
        except MalformedEvent as error:
            self.stats.dropped[source.name] += 1
            log.warning("dropped malformed event stream=%s id=%s reason=%s", source.name, event_id, error)
            return {"status": "DROP"}
        self.windows.add(source.name, Event(event_id, data), self.clock())
        self.stats.accepted[source.name] += 1
        return {"status": "SUCCESS"}

    def close_due(self) -> None:
        for closed in self.windows.close_due(self.clock()):
            self._join(closed)

    def close_all(self) -> None:
        for closed in self.windows.close_all():
            self._join(closed)

    def _join(self, closed: ClosedWindow) -> None:
        result = self.query.run(closed)
        self.stats.windows_closed += 1
        self.stats.pair_errors += len(result.errors)
        for error in result.errors[:5]:
            log.warning("pair skipped window=%s %s", closed.window.id, error)
        counts = " ".join(f"{name}={len(items)}" for name, items in closed.events.items())
        log.info(
            "window closed id=%s events: %s pairs=%d rows=%d", closed.window.id, counts, result.pairs, len(result.rows)
        )
        if result.rows:
            self.outbox.put_nowait((closed, result.rows))

    async def run_windows(self) -> None:
        """Close each window when the clock reaches its end."""
        while True:
            now = self.clock()
            await asyncio.sleep(max(0.0, self.windows.window_at(now).end - now))
            self.close_due()

    async def run_sender(self) -> None:
        while True:
            closed, rows = await self.outbox.get()
            await self.deliver(closed, rows)
            self.outbox.task_done()

    async def deliver(self, closed: ClosedWindow, rows: list[Any]) -> None:
        """Send one window's rows to every target, retrying with backoff; never drops silently."""
        headers = {"window-start": str(closed.window.start), "window-end": str(closed.window.end), "window-id": closed.window.id}
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
                            closed.window.id, len(rows), target, attempt, error,
                        )
                    else:
                        log.warning("window %s: delivery to %s failed (attempt %d): %s", closed.window.id, target, attempt, error)
                        await asyncio.sleep(min(self.retry_base_delay * 2**attempt, 5.0))


def create_app(
    settings: JoinerSettings,
    config: JoinerConfig | None = None,
    sink: Any | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    config = config or load_config(os.environ)
    query = build_query(config)
    guard = api_token_guard(settings)
    state: dict[str, Joiner] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sidecar = None
        target = sink
        if target is None:
            sidecar = Sidecar(settings)
            target = sidecar
        joiner = Joiner(config, query, target, clock, settings.max_body_bytes)
        state["joiner"] = app.state.joiner = joiner
        log.info(
            "joining %s over %gs windows -> %s",
            " x ".join(f"{s.name} (route {s.route})" for s in config.sources),
            config.window_seconds,
            ", ".join(str(t) for t in config.targets),
        )
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
        return {**joiner.stats.as_dict(), "buffered": joiner.windows.buffered, "outbox": joiner.outbox.qsize()}

    return app
