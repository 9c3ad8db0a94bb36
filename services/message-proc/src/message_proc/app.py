"""message-proc (deployed as billable-proc): logs each invocation's JSON body.

A call that carries ``window-id`` (and ``window-chunk``) is logged once: the joiner retries a call whose
answer it did not get, and a retry of one that did arrive is answered ok and counted as a duplicate, so
the rows of a window are billed once. The memory of calls is bounded (the newest 10,000)."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from streaming_runtime.cloudevents import read_body
from streaming_runtime.errors import MalformedEvent, PayloadTooLarge
from streaming_runtime.service import api_token_guard, read_limited
from streaming_runtime.settings import ServiceSettings

log = logging.getLogger("message-proc")
SEEN_CALLS = 10_000


class ProcessorSettings(ServiceSettings):
    service_route: str = Field("billables", validation_alias="PROC_SERVICE_ROUTE", min_length=1)


def create_app(settings: ProcessorSettings) -> FastAPI:
    app = FastAPI(title="message-proc")
    received = {"calls": 0, "rejected": 0, "rows": 0, "duplicates": 0}
    seen: OrderedDict[tuple[str, str], None] = OrderedDict()  # (window id, chunk) of the calls logged
    # (window id, window end, seconds since epoch when received): how late windows arrive (bench/)
    windows: deque[dict] = deque(maxlen=1000)
    guard = api_token_guard(settings)
    route = "/" + settings.service_route.strip("/")

    @app.post(route, dependencies=[Depends(guard)])
    async def receive(request: Request) -> JSONResponse:
        try:
            data = read_body(await read_limited(request, settings.max_body_bytes), max_bytes=settings.max_body_bytes)
        except PayloadTooLarge as error:
            received["rejected"] += 1
            return _rejected(413, str(error))
        except MalformedEvent as error:
            received["rejected"] += 1
            return _rejected(400, str(error))
        window_id = request.headers.get("window-id")
        if window_id is not None:
            call = (window_id, request.headers.get("window-chunk", "1/1"))
            if call in seen:
                received["duplicates"] += 1
                log.info("window %s chunk %s received again: a retry, not logged twice", *call)
                return JSONResponse({"status": "ok", "duplicate": True})
            seen[call] = None
            if len(seen) > SEEN_CALLS:
                seen.popitem(last=False)
        received["calls"] += 1
        received["rows"] += len(data) if isinstance(data, list) else 1
        if "window-end" in request.headers:
            windows.append(
                {"id": request.headers.get("window-id"), "end": request.headers["window-end"], "received": time.time()}
            )
        log.info("Data received: %s", json.dumps(data, separators=(", ", ":"), ensure_ascii=False))
        return JSONResponse({"status": "ok"})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict:
        return {**received, "windows": list(windows)}

    return app


def _rejected(status: int, reason: str) -> JSONResponse:
    log.warning("rejected call: %s", reason)
    return JSONResponse({"error": reason}, status_code=status)


