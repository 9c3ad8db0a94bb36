"""The app API token (``APP_API_TOKEN``): daprd sends it as the ``dapr-api-token`` header on every call it
makes to the app, so a request without it did not come through the app's own sidecar.

Checked in a pure ASGI middleware, before any routing: every path needs it but the probes, which kubelet
and daprd's health check call without headers (``/healthz`` and ``/readyz`` answer a status and nothing
else of value). A plain-function FastAPI dependency would run in a worker thread, a hop per delivery
that cost more than the whole join (docs/performance.md).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
HEADER = b"dapr-api-token"
_REFUSAL = json.dumps({"error": "missing or wrong dapr-api-token"}).encode()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AppTokenMiddleware:
    """401 for an HTTP request whose ``dapr-api-token`` is not ``token``, but on ``open_paths``; each
    refusal is logged (without the header's value)."""

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        if not token:
            raise ValueError("an empty app token would let every request in")
        self.app = app
        self.token = token.encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        log.warning("refused %s %s: missing or wrong dapr-api-token", scope["method"], scope["path"])
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_REFUSAL)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": _REFUSAL})

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == HEADER:
                return hmac.compare_digest(value, self.token)
        return False


def require_app_token(app: Any, token: str | None, open_paths: frozenset[str] = OPEN_PATHS) -> None:
    """Put the check in front of ``app`` (a Starlette/FastAPI app) when a token is configured;
    ``open_paths``: those that need none (the probes; billable-proc's read-only dashboard too)."""
    if token is None:
        log.warning("APP_API_TOKEN is not set: any process that reaches this port can call every route")
        return
    app.add_middleware(AppTokenMiddleware, token=token, open_paths=open_paths)
