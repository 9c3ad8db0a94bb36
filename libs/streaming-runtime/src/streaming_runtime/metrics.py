"""What every service's Prometheus metrics share: a registry of their own per app, and ``GET /metrics``.

Each app gets its own :class:`CollectorRegistry`, never prometheus_client's global one, so that several
apps in one process (the tests, an embedding server) neither clash on names nor count each other's
events. The route answers the Prometheus text format (``CONTENT_TYPE_LATEST``) and never raises: a
collector that fails is reported once (:class:`~streaming_runtime.logs.ErrorReport`) and the scrape gets a
500 with one line, which Prometheus records as a failed scrape (``up == 0``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from streaming_runtime.logs import ErrorReport

# prometheus_client adds a `<name>_created` gauge beside each counter and histogram: a series per metric
# that nothing here reads, and that the text format shows as a metric of its own
disable_created_metrics()

# how long a window takes to reach its target, or its rows to be billed: ms on loopback, minutes parked
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

RegistrySource = CollectorRegistry | Callable[[], CollectorRegistry | None]


def new_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry for one app, holding ``collectors``. Not auto-described: a custom collector (one that
    reads a service's counters at each scrape) is then not collected at registration."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text a scrape gets, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def add_metrics_route(app: FastAPI, registry: RegistrySource, errors: ErrorReport | None = None) -> None:
    """``GET /metrics`` on ``app``: ``registry``, or a function giving it (None until the app's lifespan has
    made it: then 503). ``errors``: where a failing scrape is reported (default: the app's logger)."""
    report = errors or ErrorReport(logging.getLogger(app.title))

    async def metrics() -> Response:
        try:
            current = registry if isinstance(registry, CollectorRegistry) else registry()
            if current is None:
                return PlainTextResponse("metrics not available yet: the service is starting\n", status_code=503)
            body, content_type = exposition(current)
            return Response(body, media_type=content_type)
        except Exception as error:  # noqa: BLE001 - no exception leaves a route; the scrape fails, and says so
            report("GET /metrics", error)
            return PlainTextResponse(f"metrics unavailable: {type(error).__name__}\n", status_code=500)

    app.add_api_route("/metrics", metrics, methods=["GET"], summary="Prometheus metrics (text format)")
