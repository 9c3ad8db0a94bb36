"""billable-proc's dashboard, in-process: the page and its own assets only, the figures of /dashboard/data
for the windows posted, duplicates counted once, the hour bound, server-sent events after a new window,
and the joiner's /stats asked through the sidecar's invoke API (a stand-in sidecar on a local port)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from message_proc.app import ProcessorSettings, create_app
from message_proc.dashboard import routes
from message_proc.dashboard.routes import HEARTBEAT_SECONDS, PATHS
from tests.contract.support import serve

pytestmark = pytest.mark.anyio

FIRST_WINDOW = [
    {"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1034},
    {"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1134},
    {"customer_id": 924, "tenant_id": "dc:kddi:eu:ber1:15", "tenant_kwh_usage": 345},
    {"customer_id": 243, "tenant_id": "dc:kddi:cn:hnk2:11", "tenant_kwh_usage": 1119},
    {"customer_id": 243, "tenant_id": "dc:kddi:cn:hnk2:11", "tenant_kwh_usage": 1201},
]
END = 1_764_000_020.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings(**values: Any) -> ProcessorSettings:
    # no sidecar: the joiner's health is unknown (a port nothing listens on answers at once)
    return ProcessorSettings(**{"dapr_http_port": closed_port(), **values})


def window_headers(window_id: str, end: float, chunk: str = "1/1") -> dict[str, str]:
    return {"window-id": window_id, "window-chunk": chunk, "window-end": str(end)}


async def post_window(
    client: httpx.AsyncClient,
    rows: list[dict],
    window_id: str,
    end: float,
    chunk: str = "1/1",
    headers: dict[str, str] | None = None,
) -> dict:
    answer = await client.post(
        "/billables", json=rows, headers={**window_headers(window_id, end, chunk), **(headers or {})}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def by_customer(entries: list[dict]) -> dict[str, tuple[int, int, float]]:
    return {e["customer"]: (e["tenants"], e["readings"], e["kwh"]) for e in entries}


@contextlib.asynccontextmanager
async def listening(app: FastAPI) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a local port, in this event loop: a stream of events is read as it
    comes (httpx's in-process transport would wait for the response to end)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def snapshots(lines: AsyncIterator[str]) -> AsyncIterator[dict]:
    """The ``snapshot`` events of a server-sent event stream, parsed."""
    event, data = None, []
    async for line in lines:
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].strip())
        elif line == "" and data:
            if event == "snapshot":
                yield json.loads("\n".join(data))
            event, data = None, []


async def test_the_page_loads_only_files_of_its_own():
    async with serve(create_app(settings(app_api_token="app-token"))) as client:
        page = await client.get("/dashboard")  # without the app token: a browser cannot send it
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assets = [ref for ref in references if not ref.startswith("data:")]
        assert sorted(assets) == ["dashboard/static/dashboard.css", "dashboard/static/dashboard.js"]
        texts = {"/dashboard": page.text}
        for asset in assets:
            answer = await client.get("/" + asset)  # relative to /dashboard
            assert answer.status_code == 200, asset
            assert answer.headers["content-type"].startswith(("text/css", "text/javascript")), asset
            texts[asset] = answer.text
        assert 'EventSource("dashboard/events")' in texts["dashboard/static/dashboard.js"]
        for name, text in texts.items():
            assert not re.search(r"https?://", text), f"{name} names a URL of elsewhere"
            assert "@import" not in text and "url(" not in text, name
        data = await client.get("/dashboard/data")  # no token either
        assert data.status_code == 200 and data.json()["latest"] == []
        for path in PATHS:  # open for reading only
            assert (await client.post(path, json=[])).status_code == 405, path
        # the other routes still need the token, and a file that is not the dashboard's is not served
        assert (await client.get("/stats")).status_code == 401
        assert (await client.post("/billables", json=FIRST_WINDOW)).status_code == 401
        missing = await client.get("/dashboard/static/app.py")
        assert missing.status_code == 401  # not an open path: refused before any lookup
        own = await client.get("/dashboard/static/app.py", headers={"dapr-api-token": "app-token"})
        assert own.status_code == 404 and "no dashboard file" in own.json()["error"]


async def test_the_data_adds_up_customers_tenants_readings_and_kwh_per_window():
    async with serve(create_app(settings())) as client:
        empty = (await client.get("/dashboard/data")).json()
        assert (empty["customers"], empty["latest"], empty["last_billed"]) == ([], [], None)
        await post_window(client, FIRST_WINDOW, "1764000000000", END)
        # the second window in two chunks: one window of the dashboard
        second = [{"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1000}]
        await post_window(client, second, "1764000020000", END + 20, "1/2")
        await post_window(client, second * 2, "1764000020000", END + 20, "2/2")
        data = (await client.get("/dashboard/data")).json()
    first, newest = data["latest"][1], data["latest"][0]
    assert (first["id"], first["end"]) == ("1764000000000", END)
    assert by_customer(first["rows"]) == {"924": (2, 3, 1034 + 1134 + 345), "243": (1, 2, 1119 + 1201)}
    assert (newest["id"], newest["calls"]) == ("1764000020000", 2)
    assert by_customer(newest["rows"]) == {"924": (1, 3, 3000)}
    totals = {c["customer"]: c for c in data["customers"]}
    assert by_customer(data["customers"]) == {"243": (1, 2, 2320), "924": (2, 6, 2513 + 3000)}
    assert (totals["924"]["windows"], totals["243"]["windows"]) == (2, 1)
    assert data["chart"]["ends"] == [END, END + 20]
    assert data["chart"]["series"] == {"924": [2513, 3000], "243": [2320, 0]}
    assert data["window_seconds"] == 20  # from the gap between window ends (no window-start header)
    assert data["billable_proc"]["calls"] == 3 and data["billable_proc"]["last_delivery"] == data["last_billed"]
    joiner = data["joiner"]  # no sidecar here
    assert joiner["status"] == "unknown" and joiner["unknown_since"] is not None and joiner["error"]


async def test_a_retried_call_is_counted_once():
    async with serve(create_app(settings())) as client:
        await post_window(client, FIRST_WINDOW, "1764000000000", END)
        again = await post_window(client, FIRST_WINDOW, "1764000000000", END)
        assert again == {"status": "ok", "duplicate": True}
        data = (await client.get("/dashboard/data")).json()
    assert by_customer(data["customers"]) == {"243": (1, 2, 2320), "924": (2, 3, 2513)}
    assert data["latest"][0]["calls"] == 1
    assert (data["billable_proc"]["calls"], data["billable_proc"]["duplicates"]) == (1, 1)


async def test_windows_an_hour_older_than_the_newest_are_dropped():
    async with serve(create_app(settings())) as client:
        await post_window(client, FIRST_WINDOW, "old", END)
        await post_window(client, FIRST_WINDOW[:1], "middle", END + 1800)
        kept = (await client.get("/dashboard/data")).json()
        assert [w["id"] for w in kept["latest"]] == ["middle", "old"]
        await post_window(client, FIRST_WINDOW[:1], "new", END + 3601)
        data = (await client.get("/dashboard/data")).json()
    assert [w["id"] for w in data["latest"]] == ["new", "middle"]
    assert (data["windows_kept"], data["windows_evicted"]) == (2, 1)
    assert by_customer(data["customers"]) == {"924": (1, 2, 2068)}  # 243 was only in the dropped window
    assert data["chart"]["ends"] == [END + 1800, END + 3601]


async def test_a_new_window_is_sent_as_an_event_at_once():
    app = create_app(settings(app_api_token="app-token"))  # the stream needs no token, the POST does
    token = {"dapr-api-token": "app-token"}
    async with (
        listening(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/dashboard/events") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = snapshots(stream.aiter_lines())
        first = await anext(events)
        assert first["latest"] == [] and first["joiner"]["status"] == "unknown"
        posted = time.monotonic()
        await post_window(client, FIRST_WINDOW, "1764000000000", END, headers=token)
        while True:  # heartbeats carry no window; the deadline is the heartbeat's period
            event = await asyncio.wait_for(anext(events), HEARTBEAT_SECONDS - 1 - (time.monotonic() - posted))
            if event["latest"]:
                break
    assert time.monotonic() - posted < HEARTBEAT_SECONDS - 1  # woken by the window, not the heartbeat
    assert by_customer(event["customers"]) == {"243": (1, 2, 2320), "924": (2, 3, 2513)}


async def test_the_joiners_stats_come_through_the_sidecars_invoke_api():
    asked: list[tuple[str, str | None]] = []
    sidecar = FastAPI()
    counters = {"accepted": {"tenants": 10, "poweruse": 30}, "late": {"poweruse": 1}, "windows_closed": 4}

    @sidecar.get("/v1.0/invoke/{app_id}/method/stats")
    async def invoke(app_id: str, request: Request) -> dict:
        asked.append((app_id, request.headers.get("dapr-api-token")))
        counters["accepted"]["poweruse"] += 20
        return {**counters, "deliveries_failed": 2, "dead_lettered": 1, "dropped": {"poweruse": 1}}

    async with listening(sidecar) as url:
        port = int(url.rpartition(":")[2])
        app = create_app(ProcessorSettings(dapr_http_port=port, dapr_api_token="dapr-token"))
        async with serve(app) as client:
            first = (await client.get("/dashboard/data")).json()["joiner"]
            # asked again once the last answer is older than JoinerHealth.every (3 s)
            deadline = time.monotonic() + 10
            while len(asked) < 2:
                assert time.monotonic() < deadline, "the joiner was not asked again"
                second = (await client.get("/dashboard/data")).json()["joiner"]
                await asyncio.sleep(0.2)
    assert asked[0] == ("join-tenants-poweruse", "dapr-token")
    assert first["status"] == "ok" and first["unknown_since"] is None
    assert first["counts"]["accepted"] == {"total": 60, "per_stream": {"tenants": 10, "poweruse": 50}}
    assert (first["counts"]["windows_closed"]["total"], first["counts"]["deliveries_failed"]["total"]) == (4, 2)
    assert first["rates"]["accepted"] is None  # one answer: no rate yet
    assert second["rates"]["accepted"] > 0 and second["rates"]["late"] == 0


async def test_the_joiners_app_id_comes_from_proc_joiner_app_id(monkeypatch):
    monkeypatch.setenv("PROC_JOINER_APP_ID", "joiner-eu")
    async with serve(create_app(ProcessorSettings(dapr_http_port=closed_port()))) as client:
        joiner = (await client.get("/dashboard/data")).json()["joiner"]
    assert joiner["app_id"] == "joiner-eu" and joiner["status"] == "unknown"
    assert "ConnectError" in joiner["error"]


async def test_the_drain_ends_the_open_streams_so_that_the_server_can_stop():
    """At the first SIGTERM the service drains (streaming_runtime.service.DrainingServer); an open stream
    would otherwise hold uvicorn's shutdown until the browser goes."""
    app = create_app(settings())
    async with (
        listening(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/dashboard/events") as stream,
    ):
        events = snapshots(stream.aiter_lines())
        await anext(events)
        drained = time.monotonic()
        await app.state.drain()
        rest = [event async for event in events]  # ends when the server ends the stream
        assert time.monotonic() - drained < HEARTBEAT_SECONDS - 1
        assert len(rest) <= 1
        refused = await client.get("/dashboard/events")
    assert refused.status_code == 503 and refused.json() == {"error": "billable-proc is stopping"}


async def test_streams_past_the_limit_are_refused(monkeypatch):
    monkeypatch.setattr(routes, "MAX_STREAMS", 1)
    async with (
        listening(create_app(settings())) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/dashboard/events") as stream,
    ):
        await anext(snapshots(stream.aiter_lines()))
        refused = await client.get("/dashboard/events")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "10"
        assert "at most 1" in refused.json()["error"]
