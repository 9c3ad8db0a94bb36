"""message-gen: publishes MESSAGE_EXPR's messages to CLUSTER_STREAM/STREAM_TOPIC through Dapr."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from message_gen.metrics import GeneratorMetrics
from message_gen.settings import GeneratorSettings
from message_gen.source import MessageSource
from streaming_runtime.errors import ConfigError, EvaluationError
from streaming_runtime.expressions import compile_expression
from streaming_runtime.metrics import add_metrics_route
from streaming_runtime.sidecar import Publisher, Sidecar, SidecarError
from streaming_runtime.tokens import require_app_token

log = logging.getLogger("message-gen")
DRAIN_SECONDS = 10.0  # the publish in flight: at most its own timeout, well inside the server's drain


@dataclass
class GeneratorStats:
    published: int = 0
    failed: int = 0
    finished: bool = False


async def generate(
    source: MessageSource,
    publisher: Publisher,
    settings: GeneratorSettings,
    stats: GeneratorStats,
    stop: asyncio.Event | None = None,
    metrics: GeneratorMetrics | None = None,
) -> None:
    """Publish until MESSAGE_COUNT messages went out (0: forever), one every MESSAGE_DELAY, or until
    ``stop`` is set: then the publish in flight completes and no other starts.

    A message the sidecar refuses is tried again on the next tick, so none is skipped. Each message's
    CloudEvent id is ``<app id or topic>-<run>-<number>``: a retry of a publish whose answer was lost
    carries the id of the first, so a joiner with dedup recognises it; a new run starts new ids.
    """
    metrics = metrics or GeneratorMetrics(settings.cluster_stream, settings.stream_topic)
    prefix = f"{settings.app_id or settings.stream_topic}-{int(time.time() * 1000)}"
    message_id = 1
    stop = stop or asyncio.Event()
    while (settings.message_count == 0 or message_id <= settings.message_count) and not stop.is_set():
        remaining = settings.message_count - message_id + 1 if settings.message_count else settings.message_batch
        size = min(settings.message_batch, remaining)
        try:
            now = int(time.time() * 1000)
            messages = [source.message(message_id + offset, now) for offset in range(size)]
            ids = [f"{prefix}-{message_id + offset}" for offset in range(size)]
            keys = [key_of(message, settings.message_key) for message in messages] if settings.message_key else None
            started = time.perf_counter()
            try:
                if size == 1:
                    key = keys[0] if keys else None
                    await publisher.publish(settings.cluster_stream, settings.stream_topic, messages[0], ids[0], key)
                else:
                    await publisher.publish_many(settings.cluster_stream, settings.stream_topic, messages, ids, keys)
            finally:
                metrics.duration.observe(time.perf_counter() - started)
            stats.published += size
            metrics.published.inc(size)
            message_id += size
        except (EvaluationError, SidecarError) as error:
            stats.failed += 1
            metrics.failures.inc()
            log.warning("messages from %d not published (will retry): %s", message_id, error)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.message_delay)
    stats.finished = not stop.is_set()
    log.info("published %d messages to %s/%s", stats.published, settings.cluster_stream, settings.stream_topic)


def build_source(settings: GeneratorSettings) -> MessageSource:
    source = MessageSource(compile_expression(settings.message_expr, setting="MESSAGE_EXPR"))
    try:
        source.message(1, int(time.time() * 1000))  # fail at start-up, not on every tick
    except EvaluationError as error:
        raise ConfigError(f"MESSAGE_EXPR fails on the first message: {error}") from None
    return source


def key_of(message: Any, field: str | None) -> str:
    """A message's key: its MESSAGE_PARTITION_KEY field as text ("" when it has none: Kafka then places it
    without a key, and the partitioning by that field is lost for it)."""
    value = message.get(field) if isinstance(message, dict) and field else None
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


def create_app(settings: GeneratorSettings, publisher: Publisher | None = None) -> FastAPI:
    source = build_source(settings)
    stats = GeneratorStats()
    metrics = GeneratorMetrics(settings.cluster_stream, settings.stream_topic)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sidecar = None
        sink = publisher
        if sink is None:
            sidecar = Sidecar(settings)
            sink = sidecar
        stop = asyncio.Event()
        task = asyncio.create_task(_run(source, sink, sidecar, settings, stats, stop, metrics))

        async def drain() -> None:
            """At the first signal (streaming_runtime.DrainingServer): the publish in flight completes while
            the sidecar, which blocks its own shutdown until this app is gone, still takes it."""
            stop.set()
            await asyncio.wait([task], timeout=DRAIN_SECONDS)

        app.state.drain = drain
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if sidecar is not None:
            await sidecar.aclose()

    app = FastAPI(title="message-gen", lifespan=lifespan)
    require_app_token(app, settings.app_api_token)
    app.state.stats = stats

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def get_stats() -> dict:
        return {"published": stats.published, "failed": stats.failed, "finished": stats.finished}

    add_metrics_route(app, metrics.registry)
    return app


async def _run(source, publisher, sidecar, settings, stats, stop: asyncio.Event, metrics: GeneratorMetrics) -> None:
    if sidecar is not None:
        while not stop.is_set():
            try:
                await sidecar.wait_ready()
                break
            except SidecarError as error:
                log.warning("%s; still waiting", error)
    log.info(
        "publishing to %s/%s, %d every %ss (%s)",
        settings.cluster_stream,
        settings.stream_topic,
        settings.message_batch,
        settings.message_delay,
        f"{settings.message_count} messages" if settings.message_count else "forever",
    )
    await generate(source, publisher, settings, stats, stop, metrics)
