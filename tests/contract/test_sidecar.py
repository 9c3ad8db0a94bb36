"""What the shared sidecar client sends for a service invocation (HTTP API of daprd)."""

import json

import httpx
import pytest

from streaming_runtime.settings import ServiceSettings
from streaming_runtime.sidecar import Sidecar, SidecarError

pytestmark = pytest.mark.anyio


def sidecar_answering(status: int, seen: list[httpx.Request]) -> Sidecar:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text="nope" if status >= 400 else "")

    settings = ServiceSettings(dapr_http_port=3999, dapr_api_token="tok")
    client = httpx.AsyncClient(
        base_url=settings.dapr_http_endpoint, transport=httpx.MockTransport(handler), headers={"dapr-api-token": "tok"}
    )
    return Sidecar(settings, http=client)


async def test_invoke_posts_the_json_rows_to_the_target_method():
    seen: list[httpx.Request] = []
    sidecar = sidecar_answering(200, seen)
    await sidecar.invoke("billable-proc", "billables", [{"a": 1}], {"window-id": "5"})
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1:3999/v1.0/invoke/billable-proc/method/billables"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["dapr-api-token"] == "tok"
    assert request.headers["window-id"] == "5"
    assert json.loads(request.content) == [{"a": 1}]


async def test_invoke_raises_with_the_status_when_the_target_fails():
    sidecar = sidecar_answering(500, [])
    with pytest.raises(SidecarError, match="answered HTTP 500: nope"):
        await sidecar.invoke("billable-proc", "billables", [])


async def test_a_publish_while_the_sidecar_is_down_fails_without_stopping_the_event_loop():
    """The SDK's gRPC client waits for the sidecar with blocking sleeps when it is made; made on the event
    loop, that stopped every delivery for up to 60 s. Now the publish fails (the caller retries) and the
    loop goes on meanwhile."""
    import asyncio
    import socket
    import time

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sidecar = Sidecar(ServiceSettings(dapr_http_port=port, dapr_grpc_port=port))
    ticks = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(SidecarError, match="not ready"):
            await sidecar.publish("redis-stream", "late", {"a": 1})
    finally:
        task.cancel()
    assert time.monotonic() - started < 10
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    assert len(ticks) > 10 and max(gaps) < 0.5  # the loop never stood still
