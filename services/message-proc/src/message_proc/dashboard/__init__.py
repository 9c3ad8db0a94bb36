"""billable-proc's live dashboard (``GET /dashboard``): billed kWh per customer and window over the last
hour, and the pipeline's health (its own calls and duplicates, the joiner's counters through Dapr).

Everything it serves is in this package (``static/``): no CDN, no font or script from elsewhere. The
dashboard's paths are read-only and open without the app token (a browser cannot send it), as the probes
are: :data:`PATHS`. docs/operations.md, "Dashboard".
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from message_proc.calls import BilledCall
from message_proc.dashboard.joiner import JoinerHealth
from message_proc.dashboard.routes import PATHS, Streams, add_routes
from message_proc.dashboard.store import BillingStore
from streaming_runtime.settings import ServiceSettings

__all__ = ["PATHS", "Dashboard"]


class Dashboard:
    def __init__(
        self,
        settings: ServiceSettings,
        joiner_app_id: str,
        counters: Mapping[str, int],
        health: JoinerHealth | None = None,
    ) -> None:
        self.store = BillingStore()
        self.streams = Streams()
        self.health = health or JoinerHealth(
            joiner_app_id, dapr_http_endpoint=settings.dapr_http_endpoint, dapr_api_token=settings.dapr_api_token
        )
        self.counters = counters

    def mount(self, app: FastAPI) -> None:
        """Add the routes, and end the open event streams at the first SIGTERM (the service's drain,
        streaming_runtime.service.DrainingServer), before any drain the app had."""
        add_routes(app, self.store, self.health, self.counters, self.streams)
        previous = getattr(app.state, "drain", None)

        async def drain() -> None:
            await self.streams.close()
            if previous is not None:
                await previous()

        app.state.drain = drain

    def observe(self, call: BilledCall) -> None:
        """An observer of billed calls (message_proc.calls): its rows are billed, count them in and wake
        the open streams. Not called for a duplicate, which is not billed again."""
        self.store.add(call.headers, call.rows, call.arrived)
        self.streams.notify()
