"""Running a service: settings and expressions are checked before the server starts, so a bad
value ends the process with one line naming it (exit 2) instead of a trace."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import TypeVar

import uvicorn
from fastapi import FastAPI, Request

from streaming_runtime.errors import ConfigError, PayloadTooLarge
from streaming_runtime.logs import configure_logging
from streaming_runtime.settings import ServiceSettings, load_settings

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
EXIT_CONFIG = 2
DRAIN_SECONDS = 25.0
log = logging.getLogger(__name__)


def serve(name: str, settings_cls: type[SettingsT], build_app: Callable[[SettingsT], FastAPI]) -> None:
    """Load settings, build the app, run uvicorn. ConfigError -> one stderr line and exit 2."""
    try:
        settings = load_settings(settings_cls)
        configure_logging(settings.log_level)
        app = build_app(settings)
    except ConfigError as error:
        print(f"{name}: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    logging.getLogger(name).info("listening on %s:%d", settings.app_host, settings.app_port)
    config = uvicorn.Config(app, host=settings.app_host, port=settings.app_port, log_config=None, access_log=False)
    DrainingServer(config, lambda: getattr(app.state, "drain", None)).run()


class DrainingServer(uvicorn.Server):
    """uvicorn that, at the first SIGTERM or SIGINT, runs the app's drain (``app.state.drain``, an async
    callable the app sets once started) while it still listens, then stops as uvicorn does.

    Plain uvicorn stops listening before the app's shutdown runs. On Kubernetes daprd gets SIGTERM at the
    same moment; with ``dapr.io/block-shutdown-duration`` it stays up until that duration passes or the
    app's health check fails, whichever is first. Draining while still listening keeps the health check
    green, so the sidecar is there for the drain's last deliveries and saves, and goes as soon as the app
    is gone. A second signal, or a drain longer than ``drain_seconds``, stops at once."""

    def __init__(
        self,
        config: uvicorn.Config,
        drain_of: Callable[[], Callable[[], Awaitable[None]] | None],
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        super().__init__(config)
        self.drain_of = drain_of
        self.drain_seconds = drain_seconds
        self.draining = False
        self._drain_task: asyncio.Task[None] | None = None  # held here: the loop keeps only a weak reference

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.drain_of() if self.started else None
        if self.draining or drain is None:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        # a signal handler may interrupt the loop anywhere: hand the drain to the loop, thread-safely
        asyncio.get_event_loop().call_soon_threadsafe(self._start_drain, drain, sig)

    def _start_drain(self, drain: Callable[[], Awaitable[None]], sig: int) -> None:
        self._drain_task = asyncio.ensure_future(self._drain_then_exit(drain, sig))

    async def _drain_then_exit(self, drain: Callable[[], Awaitable[None]], sig: int) -> None:
        log.info("signal %d: draining before stopping (at most %gs)", sig, self.drain_seconds)
        try:
            await asyncio.wait_for(drain(), timeout=self.drain_seconds)
        except TimeoutError:
            log.error("drain not done after %gs: stopping anyway", self.drain_seconds)
        except Exception as error:  # noqa: BLE001 - the server must stop whatever the drain did
            log.error("drain failed, stopping anyway: %s", error)
        super().handle_exit(sig, None)


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The request body, read no further than ``max_bytes`` (PayloadTooLarge past it), so an oversized
    payload costs the service at most the limit in memory."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"payload of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"payload of more than {max_bytes} bytes exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
