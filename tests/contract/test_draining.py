"""A service stopped by a signal drains while it still listens (streaming_runtime.DrainingServer), so that
daprd's block-shutdown keeps the sidecar up for the drain; the joiner answers RETRY while it stops."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.contract.support import serve, wait_for
from tests.contract.test_joiner_service import make_app, post

APP = """
import asyncio, logging, sys
from pathlib import Path
import uvicorn
from fastapi import FastAPI
from streaming_runtime.service import DrainingServer

logging.basicConfig(level=logging.INFO)
port, started, release = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
app = FastAPI()

@app.get("/healthz")
async def healthz():
    return {"status": "ok"}

async def drain():
    started.touch()
    while not release.exists():  # the test says when the drain is done
        await asyncio.sleep(0.02)

app.state.drain = drain
DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None), lambda: app.state.drain).run()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not within {timeout}s")


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def draining_app(tmp_path):
    port = free_port()
    started, release = tmp_path / "started", tmp_path / "release"
    script = tmp_path / "app.py"
    script.write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port), str(started), str(release)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        until(lambda: healthy(port) or proc.poll() is not None, 30, "the app listening")
        assert proc.poll() is None, proc.stdout.read()
        yield proc, port, started, release
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_the_first_signal_drains_while_the_health_check_still_answers(draining_app):
    proc, port, started, release = draining_app
    proc.send_signal(signal.SIGTERM)
    until(started.exists, 10, "the drain started")
    assert healthy(port), "the server stopped listening before its drain was done"
    assert proc.poll() is None
    release.touch()
    proc.wait(timeout=10)
    assert not healthy(port)
    assert "draining before stopping" in proc.stdout.read()


def test_a_second_signal_stops_without_waiting_for_the_drain(draining_app):
    proc, port, started, _ = draining_app
    proc.send_signal(signal.SIGTERM)
    until(started.exists, 10, "the drain started")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert not healthy(port)


@pytest.mark.anyio
async def test_the_joiner_answers_retry_once_draining_and_delivers_what_it_held():
    app, sidecar, _ = make_app()
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": "c1"})
        await post(client, "/poweruse", {"panel_id": "p1", "tenant_id": "t1", "power_use": 2.0, "kwh_use": 3.0})
        drain = asyncio.ensure_future(app.state.drain())
        await wait_for(lambda: app.state.joiner.stopping, what="the joiner stopping")
        late = await post(client, "/poweruse", {"panel_id": "p2", "tenant_id": "t1", "power_use": 5.0, "kwh_use": 7.0})
        assert late == {"status": "RETRY"}  # the broker gives it to the next joiner
        await drain
        assert (await client.get("/healthz")).status_code == 200  # still serving after its drain
    [(app_id, method, rows, _)] = sidecar.invocations
    assert (app_id, method) == ("billable-proc", "billables")
    assert rows == [{"customer_id": "c1", "tenant_id": "t1", "tenant_kwh_usage": 3.0}]
