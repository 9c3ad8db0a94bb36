"""message-proc (deployed as billable-proc): logs each invocation's JSON body.

A call that carries ``window-id`` (and ``window-chunk``) is logged once: the joiner retries a call whose
answer it did not get, and a retry of one that did arrive (same id, chunk and body) is answered ok and
counted as a duplicate, so the rows of a window are billed once. A call with the id of one received
before but another body is no retry: it is billed, counted as a conflict and logged as an error, so a
call sent first under a window's id cannot make the real window pass for a retry. The memory of calls is
bounded: the newest 10,000, each at most ``MAX_HEADER_CHARS`` of id and chunk and a digest; with
``PROC_STATE_STORE`` it is kept in a Dapr state store too, so a restart forgets nothing
(:mod:`message_proc.billed`). A call is known by its ``window-source`` too (the joiner replica that sent
it, docs/scaling.md): two replicas' parts of one window are both billed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from message_proc.billed import SOURCE, SOURCE_HEADER, BilledCalls
from message_proc.calls import BilledCall, CallObservers, Outcome, rows_of
from message_proc.combine import Combiner
from message_proc.dashboard import PATHS as DASHBOARD_PATHS
from message_proc.dashboard import Dashboard
from message_proc.metrics import BillingMetrics
from streaming_runtime.cloudevents import ensure_parse_depth, read_body
from streaming_runtime.errors import MalformedEvent, PayloadTooLarge
from streaming_runtime.logs import ErrorReport, printable
from streaming_runtime.metrics import add_metrics_route
from streaming_runtime.service import read_limited
from streaming_runtime.settings import ServiceSettings
from streaming_runtime.sidecar import Sidecar, SidecarError
from streaming_runtime.tokens import OPEN_PATHS, require_app_token
from streaming_runtime.values import value_problem

log = logging.getLogger("message-proc")
MAX_HEADER_CHARS = 200  # window-id, window-chunk, window-end: the joiner's are under 40
WINDOW_HEADERS = ("window-id", "window-chunk", "window-end", SOURCE_HEADER)


class ProcessorSettings(ServiceSettings):
    service_route: str = Field("billables", validation_alias="PROC_SERVICE_ROUTE", min_length=1)
    # a Dapr state store: the record of billed calls outlives a restart (message_proc.billed)
    state_store: str | None = Field(None, validation_alias="PROC_STATE_STORE", min_length=1)
    # customers with a series of their own in billable_proc_kwh_total; the others are added under "other"
    metrics_max_customers: int = Field(1000, validation_alias="PROC_METRICS_MAX_CUSTOMERS", ge=0)
    # the joiner whose GET /stats the dashboard shows (through Dapr service invocation)
    joiner_app_id: str = Field("join-tenants-poweruse", validation_alias="PROC_JOINER_APP_ID", min_length=1)
    # parts of a window's aggregate from several joiner replicas: combined this long after the first came
    combine_wait: float = Field(10.0, validation_alias="PROC_COMBINE_WAIT", gt=0)


def create_app(settings: ProcessorSettings, store: Any | None = None, freeze_heap: bool = False) -> FastAPI:
    """``store``: what keeps the record of billed calls (the sidecar; a fake in tests) when
    ``PROC_STATE_STORE`` is set. ``freeze_heap``: the service process's (``__main__``), see
    :func:`freeze_start_up_heap`."""
    ensure_parse_depth()
    sidecar: Sidecar | None = None
    if settings.state_store and store is None:
        store = sidecar = Sidecar(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # the first billed call would otherwise wait for the state store's client to be made
        warm = asyncio.create_task(_connect(sidecar)) if sidecar is not None else None
        combining = asyncio.create_task(_run_combiner(combiner))
        if freeze_heap:
            freeze_start_up_heap()
        yield
        combining.cancel()
        await asyncio.gather(combining, return_exceptions=True)
        if warm is not None:
            warm.cancel()
            await asyncio.gather(warm, return_exceptions=True)
        if sidecar is not None:
            await sidecar.aclose()

    app = FastAPI(title="message-proc", lifespan=lifespan)
    # the dashboard's read-only pages are open, as the probes are: a browser cannot send the token
    require_app_token(app, settings.app_api_token, OPEN_PATHS | DASHBOARD_PATHS)
    received = {
        "calls": 0,
        "rejected": 0,
        "rows": 0,
        "duplicates": 0,
        "conflicts": 0,
        "unexpected_errors": 0,
        "unavailable": 0,
    }
    billed = BilledCalls(store if settings.state_store else None, settings.state_store)
    # (window id, window end, epoch seconds when the call arrived and when its rows were billed, after the
    # record of billed calls): how late windows arrive, and what billing adds (bench/pipeline.py)
    windows: deque[dict] = deque(maxlen=1000)
    route = "/" + settings.service_route.strip("/")
    errors = ErrorReport(log)
    metrics = BillingMetrics(received, settings.metrics_max_customers)
    # told of each billed call, once its rows are billed (message_proc.calls): the metrics, and any other
    app.state.on_billed = on_billed = CallObservers(errors)
    on_billed.add(metrics.observe)
    dashboard = Dashboard(settings, settings.joiner_app_id, received)
    on_billed.add(dashboard.observe)
    dashboard.mount(app)

    def bill_combined(envelope: dict[str, Any], headers: dict[str, str]) -> None:
        """A window's rows combined from its replicas' parts (message_proc.combine): billed once."""
        received["rows"] += len(envelope["rows"])
        window = {name: value for name, value in headers.items() if name != SOURCE_HEADER}
        on_billed(BilledCall(envelope["rows"], window, "billed", time.time()))
        log.info("Data received: %s", json.dumps(envelope, separators=(", ", ":"), ensure_ascii=False))

    combiner = Combiner(bill_combined, settings.combine_wait, billed.store, settings.state_store, counts=received)
    app.state.combiner = combiner

    @app.post(route)
    async def receive(request: Request) -> JSONResponse:
        try:
            return await _receive(request)
        except Exception as error:  # noqa: BLE001 - no exception leaves the route; the caller retries a 500
            received["unexpected_errors"] += 1
            errors(f"POST {route}", error)
            return JSONResponse({"error": f"{type(error).__name__} while receiving the call"}, status_code=500)

    async def _receive(request: Request) -> JSONResponse:
        arrived = time.time()
        for name in WINDOW_HEADERS:
            if len(request.headers.get(name, "")) > MAX_HEADER_CHARS:
                received["rejected"] += 1
                return _rejected(400, f"header {name} is longer than {MAX_HEADER_CHARS} characters")
        try:
            body = await read_limited(request, settings.max_body_bytes)
            data = read_body(body, max_bytes=settings.max_body_bytes)
            if (problem := value_problem(data, where="body")) is not None:
                raise MalformedEvent(problem)
        except PayloadTooLarge as error:
            received["rejected"] += 1
            return _rejected(413, str(error))
        except MalformedEvent as error:
            received["rejected"] += 1
            return _rejected(400, str(error))
        source = request.headers.get(SOURCE_HEADER, "")
        if source and not SOURCE.fullmatch(source):
            received["rejected"] += 1
            return _rejected(400, f"header {SOURCE_HEADER} must be a joiner replica's name (letters, digits, _ and -)")
        window_id = request.headers.get("window-id")
        if window_id is not None:
            # parts of one window from several joiner replicas are each billed; a retry is one source's again
            call = (source, window_id, request.headers.get("window-chunk", "1/1"))
            digest = hashlib.sha256(body).digest()
            try:
                seen = await billed.seen(call, digest)
                if seen == "duplicate":
                    received["duplicates"] += 1
                    log.info("window %s chunk %s received again: a retry, not logged twice", *map(printable, call[1:]))
                    return JSONResponse({"status": "ok", "duplicate": True})
                if isinstance(data, dict) and "partial" in data:  # a replica's part of a window's aggregate
                    headers = {name: request.headers[name] for name in WINDOW_HEADERS if name in request.headers}
                    kept = await combiner.take(window_id, source, call[2], data, headers)
                    await billed.record(call, digest)  # once the part is kept: a retry is then a duplicate
                    return JSONResponse({"status": "ok", "part": kept})
                await billed.record(call, digest)  # before the rows are billed: see message_proc.billed
            except ValueError as error:  # a part whose envelope does not say how it combines
                received["rejected"] += 1
                return _rejected(400, f"window {printable(window_id, 80)}: {error}")
            except SidecarError as error:
                received["unavailable"] += 1
                log.error(
                    "window %s chunk %s not billed now, the record of billed calls is unavailable (the "
                    "joiner sends it again): %s",
                    *map(printable, call[1:]),
                    printable(error, 300),
                )
                return JSONResponse({"error": "the record of billed calls is unavailable"}, status_code=503)
            if seen == "conflict":
                received["conflicts"] += 1
                log.error(
                    "window %s chunk %s received before with other rows: billed, but look at its sender",
                    *map(printable, call[1:]),
                )
        received["calls"] += 1
        received["rows"] += len(data) if isinstance(data, list) else 1
        window = {name: request.headers[name] for name in WINDOW_HEADERS if name in request.headers}
        outcome: Outcome = "conflict" if window_id is not None and seen == "conflict" else "billed"
        on_billed(BilledCall(rows_of(data), window, outcome, arrived))
        if "window-end" in request.headers:
            windows.append(
                {
                    "id": request.headers.get("window-id"),
                    "end": request.headers["window-end"],
                    "arrived": arrived,
                    "received": time.time(),
                }
            )
        log.info("Data received: %s", json.dumps(data, separators=(", ", ":"), ensure_ascii=False))
        return JSONResponse({"status": "ok"})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict:
        return {**received, "combining": len(combiner.pending), "windows": list(windows)}

    add_metrics_route(app, metrics.registry)

    return app


def freeze_start_up_heap() -> None:
    """Move what start-up made (the web stack, pydantic, gRPC and the Dapr SDK: ~75,000 objects) out of
    the collector's sight. A full collection rescanned it all, 50 ms on an idle core of the benchmark's
    machine and over 100 ms under load, once every few dozen windows: the p99 of bench/pipeline.py. Frozen,
    a full collection scans only what billing keeps (its bounded record of calls)."""
    import dapr.aio.clients  # noqa: F401 - loaded now (the first call would load it) to be frozen too

    gc.collect()
    gc.freeze()


async def _run_combiner(combiner: Combiner) -> None:
    """Take back what a previous run held (retried while the state store does not answer), then combine."""
    delay = 0.5
    while True:
        try:
            await combiner.restore()
            break
        except SidecarError as error:
            log.warning("the parts a previous run held are not read yet (tried again): %s", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    await combiner.run()


async def _connect(sidecar: Sidecar) -> None:
    try:
        await sidecar.connect()
    except SidecarError as error:  # the first call will try again
        log.warning("the state store's client is not made yet: %s", error)


def _rejected(status: int, reason: str) -> JSONResponse:
    log.warning("rejected call: %s", printable(reason, 300))
    return JSONResponse({"error": reason}, status_code=status)
