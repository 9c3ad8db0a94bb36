"""The dashboard's routes: the page and its own static files, a JSON snapshot, and server-sent events.

``GET /dashboard/events`` sends a ``snapshot`` event at once, after every billed window and at least every
``HEARTBEAT_SECONDS`` (with the joiner's health, asked anew). At most ``MAX_STREAMS`` streams are open at
a time (503 past that); :meth:`Streams.close` ends them all, which the service's drain does at the first
SIGTERM (an open stream would otherwise hold uvicorn's shutdown).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

from message_proc.dashboard.joiner import JoinerHealth
from message_proc.dashboard.store import BillingStore

log = logging.getLogger("message-proc")
HEARTBEAT_SECONDS = 5.0
MAX_STREAMS = 16
RETRY_MILLISECONDS = 2000  # how soon a browser's EventSource reconnects after the stream ends
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
PATHS = frozenset({"/dashboard", "/dashboard/data", "/dashboard/events", *(f"/dashboard/static/{n}" for n in STATIC)})
NO_CACHE = {"cache-control": "no-store"}
# the browser too loads nothing from elsewhere: scripts, styles, the event stream, from this origin only
PAGE_HEADERS = {
    **NO_CACHE,
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def _asset(name: str) -> bytes:
    return resources.files("message_proc.dashboard").joinpath("static", name).read_bytes()


class Streams:
    """The open event streams: woken by a billed window, ended all at once by :meth:`close`."""

    def __init__(self) -> None:
        self.open = 0
        self.closing = False
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        if self.closing:  # closed while this stream was making its event: no wait
            return
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass

    async def close(self) -> None:
        self.closing = True
        self.notify()


def add_routes(
    app: FastAPI,
    store: BillingStore,
    health: JoinerHealth,
    counters: Mapping[str, int],
    streams: Streams,
    heartbeat: float = HEARTBEAT_SECONDS,
    clock: Callable[[], float] = time.time,
) -> None:
    """The dashboard's routes on ``app`` itself (an included router would hide them from code that lists
    ``app.routes``)."""
    page, assets = _asset("dashboard.html"), {name: _asset(name) for name in STATIC}

    def snapshot() -> dict[str, Any]:
        return {
            **store.snapshot(),
            "generated_at": clock(),
            "stale_after_windows": 3,
            "billable_proc": {
                "calls": counters.get("calls", 0),
                "rows": counters.get("rows", 0),
                "duplicates": counters.get("duplicates", 0),
                "conflicts": counters.get("conflicts", 0),
                "rejected": counters.get("rejected", 0),
                "last_delivery": store.last_billed,
            },
            "joiner": health.as_dict(),
        }

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.get("/dashboard/static/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        if name not in assets:
            return JSONResponse({"error": f"no dashboard file {name[:100]!r}"}, status_code=404)
        return Response(assets[name], media_type=f"{STATIC[name]}; charset=utf-8", headers=NO_CACHE)

    @app.get("/dashboard/data")
    async def dashboard_data() -> JSONResponse:
        """The dashboard's figures as JSON (what each event of /dashboard/events carries)."""
        try:
            await health.refresh()
            return JSONResponse(snapshot(), headers=NO_CACHE)
        except Exception as error:  # noqa: BLE001 - no exception leaves a route
            log.error("dashboard data failed: %s: %s", type(error).__name__, error)
            return JSONResponse({"error": f"{type(error).__name__} while making the snapshot"}, status_code=500)

    @app.get("/dashboard/events")
    async def dashboard_events() -> Response:
        """Server-sent events: a ``snapshot`` event (the JSON of /dashboard/data) per change."""
        if streams.open >= MAX_STREAMS or streams.closing:
            reason = (
                "billable-proc is stopping"
                if streams.closing
                else f"{streams.open} dashboard streams are open already (at most {MAX_STREAMS})"
            )
            return JSONResponse(
                {"error": reason},
                status_code=503,
                headers={"retry-after": "10"},
            )
        return StreamingResponse(
            _events(),
            media_type="text/event-stream",
            headers={**NO_CACHE, "x-accel-buffering": "no"},
        )

    async def _events() -> AsyncIterator[str]:
        # counted once started: a generator never started runs no ``finally`` to count it out
        streams.open += 1
        try:
            yield f"retry: {RETRY_MILLISECONDS}\n\n"
            while not streams.closing:
                try:
                    await health.refresh()
                    data = json.dumps(snapshot(), separators=(",", ":"), allow_nan=False)
                except Exception as error:  # noqa: BLE001 - the stream stays up; the page shows it stalled
                    log.error("dashboard event failed: %s: %s", type(error).__name__, error)
                    data = json.dumps({"error": f"{type(error).__name__} while making the snapshot"})
                yield f"event: snapshot\ndata: {data}\n\n"
                await streams.wait(heartbeat)
        finally:
            streams.open -= 1
