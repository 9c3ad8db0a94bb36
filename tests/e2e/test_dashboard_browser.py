"""billable-proc's dashboard in a real browser: headless Chromium from Debian's packages, driven by selenium
through Debian's chromedriver (``make setup-browser`` installs both; nothing is downloaded at run time).

billable-proc runs as it is shipped (``python -m message_proc``, with an app token) without a sidecar: the
test posts windows as the joiner's sidecar does, and the page, which has no token, shows them as they
come, without a reload. The joiner's health is unknown (no sidecar to ask). With ``DASHBOARD_SCREENSHOT``
set the page is saved there as a PNG (docs/images/dashboard.png is one).

The last test reads the dashboard of the real pipeline (the stack of tests/e2e/conftest.py): its newest
window is the one billable-proc logged last, and the joiner's /stats reach it through Dapr.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from devstack.stack import Stack, data_received
from tests.e2e.support import poll

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "browser-test-app-token"
# the example's first window (dapr.yaml): the readings of the tenants of billable customers 924 and 243
FIRST_WINDOW = [
    {"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1034},
    {"customer_id": 243, "tenant_id": "dc:kddi:cn:hnk2:11", "tenant_kwh_usage": 1119},
    {"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1134},
    {"customer_id": 243, "tenant_id": "dc:kddi:cn:hnk2:11", "tenant_kwh_usage": 1201},
]
SECOND_WINDOW = [
    {"customer_id": 924, "tenant_id": "dc:eqix:us:chi1:12", "tenant_kwh_usage": 1040},
    {"customer_id": 243, "tenant_id": "dc:kddi:cn:hnk2:11", "tenant_kwh_usage": 1110},
]
T = TypeVar("T")


def kwh_per_customer(rows: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for row in rows:
        totals[str(row["customer_id"])] = totals.get(str(row["customer_id"]), 0) + row["tenant_kwh_usage"]
    return totals


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T | None], timeout: float, what: str, proc: subprocess.Popen | None) -> T:
    """``condition``'s first value but None and False within ``timeout``; fails at once if ``proc`` ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := condition()) is not None and value is not False:
            return value
        assert proc is None or proc.poll() is None, f"billable-proc ended (exit {proc.returncode}) before {what}"
        time.sleep(0.2)
    raise AssertionError(f"{what}: not seen within {timeout:.0f}s")


@pytest.fixture
def billable_proc(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = {
        **os.environ,
        "APP_PORT": str(port),
        "APP_API_TOKEN": TOKEN,
        "DAPR_HTTP_PORT": str(free_port()),  # no sidecar there: the joiner's health is unknown
        "PROC_JOINER_APP_ID": "join-tenants-poweruse",
    }
    env.pop("PROC_STATE_STORE", None)
    with open(tmp_path / "billable-proc.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "message_proc"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30, "billable-proc's /healthz", proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print((tmp_path / "billable-proc.log").read_text(errors="replace")[-3000:])


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), (
            f"{path} is missing: `make setup-browser` installs chromium and chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def post_window(url: str, rows: list[dict], window_id: str, end: float) -> None:
    """As the joiner's sidecar delivers a window (its headers, the app token daprd adds)."""
    headers = {
        "dapr-api-token": TOKEN,
        "window-id": window_id,
        "window-chunk": "1/1",
        "window-start": str(end - 20),
        "window-end": str(end),
    }
    answer = httpx.post(url + "/billables", json=rows, headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text


def page_figures(driver: webdriver.Chrome) -> dict[str, Any]:
    """What the page shows now: the totals per customer, the windows listed, the health lines."""
    return driver.execute_script(
        """
        const rows = (selector) => Array.from(document.querySelectorAll(selector));
        return {
          totals: Object.fromEntries(rows("#totals tbody tr[data-customer]").map(
            (tr) => [tr.dataset.customer, [Number(tr.dataset.kwh), tr.querySelector("td.kwh").textContent]])),
          windows: [...new Set(rows("#windows tbody tr[data-window-id]").map((tr) => tr.dataset.windowId))],
          lines: rows("#chart polyline").length,
          joiner: document.getElementById("joiner-status").textContent,
          connection: document.getElementById("connection").textContent,
          freshness: document.getElementById("freshness").textContent,
          marker: document.body.dataset.testMarker || null,
        };
        """
    )


def figures_when(driver: webdriver.Chrome, check: Callable[[dict], bool]) -> Callable[[], dict | None]:
    """For wait_until: the page's figures once ``check`` holds for them."""

    def now() -> dict | None:
        figures = page_figures(driver)
        return figures if check(figures) else None

    return now


def shows(totals: dict[str, float]) -> Callable[[dict], bool]:
    def check(figures: dict) -> bool:
        shown = figures["totals"]
        return set(shown) == set(totals) and all(
            shown[c][0] == kwh and shown[c][1] == str(int(kwh)) for c, kwh in totals.items()
        )

    return check


def test_the_dashboard_shows_each_window_as_it_is_billed(billable_proc, browser):
    url, proc = billable_proc
    end = float(int(time.time()))
    post_window(url, FIRST_WINDOW, "w-1", end)
    browser.get(url + "/dashboard")  # no token: the browser has none
    expected = kwh_per_customer(FIRST_WINDOW)
    assert expected == {"924": 2168, "243": 2320}
    figures = wait_until(figures_when(browser, shows(expected)), 30, "customers 924 and 243", proc)
    assert figures["windows"] == ["w-1"] and figures["lines"] == 2
    assert "health unknown since" in figures["joiner"] and "join-tenants-poweruse" in figures["joiner"]
    assert figures["connection"].startswith("live")
    assert figures["freshness"].startswith("last window billed")

    browser.execute_script("document.body.dataset.testMarker = 'not reloaded'")
    post_window(url, SECOND_WINDOW, "w-2", end + 20)
    both = {c: kwh + kwh_per_customer(SECOND_WINDOW)[c] for c, kwh in expected.items()}
    second = figures_when(browser, lambda f: f["windows"] == ["w-2", "w-1"] and shows(both)(f))
    figures = wait_until(second, 30, "the second window", proc)
    assert figures["marker"] == "not reloaded"  # updated by the event stream, not a reload
    if screenshot := os.environ.get("DASHBOARD_SCREENSHOT"):
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(screenshot), screenshot

    # billable-proc gone: the page says its figures are no longer live
    proc.terminate()
    proc.wait(timeout=15)
    lost = wait_until(
        figures_when(browser, lambda f: f["connection"].startswith("no connection")), 30, "no connection", None
    )
    assert "not updated" in lost["connection"]


def test_the_real_pipelines_windows_show_on_the_dashboard_with_the_joiners_health(stack: Stack):
    proc = stack.apps["billable-proc"]

    def newest_window_as_logged() -> dict | None:
        data = proc.get("/dashboard/data").json()
        batches = data_received(proc.log_text())
        if not data["latest"] or not batches or data["joiner"]["status"] != "ok":
            return None
        shown = {r["customer"]: r["kwh"] for r in data["latest"][0]["rows"]}
        logged = kwh_per_customer(batches[-1])
        return data if shown == logged and {"924", "243"} <= set(shown) else None

    data = poll(newest_window_as_logged, 120, "the newest window on the dashboard as billable-proc logged it", stack)
    assert data["billable_proc"]["calls"] >= len(data["latest"])
    assert data["joiner"]["counts"]["windows_closed"]["total"] > 0  # GET /stats through Dapr, allowed
    assert data["joiner"]["counts"]["accepted"]["per_stream"]["poweruse"] > 0
