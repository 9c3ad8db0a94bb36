"""Running a service: settings and expressions are checked before the server starts, so a bad
value ends the process with one line naming it (exit 2) instead of a trace."""

from __future__ import annotations

import hmac
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI, HTTPException, Request

from streaming_runtime.errors import ConfigError, PayloadTooLarge
from streaming_runtime.logs import configure_logging
from streaming_runtime.settings import ServiceSettings, load_settings

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
EXIT_CONFIG = 2


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
    uvicorn.run(app, host=settings.app_host, port=settings.app_port, log_config=None, access_log=False)


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


def api_token_guard(settings: ServiceSettings) -> Callable[[Request], Awaitable[None]]:
    """A dependency that checks ``dapr-api-token`` when ``APP_API_TOKEN`` is set.

    daprd sends that header on every call to the app; the SDK does not check it, so we do. It is a
    coroutine function because FastAPI runs a plain function dependency in a worker thread: a thread
    hop per delivery, which cost more than the whole join (see bench/pipeline.py)."""
    expected = settings.app_api_token

    async def check(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("dapr-api-token", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong dapr-api-token")

    return check
