"""A joiner restarted in the middle of a window continues it: its open window goes through a real Dapr
state store (state.redis) to the next run, so tenants from before the restart join readings after it.

A stack of its own: billable-proc and the joiner with JOINER_STATE_STORE=joiner-state, no generators but
their sidecars. The test publishes the example's tenants and readings itself, through those sidecars (as
the topic scopes allow), so that it knows which side of the restart each event is on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from devstack.stack import Stack, data_received
from tests.e2e.support import no_redis_refusals, publish_url, publisher_stack
from tests.e2e.test_power_usage_pipeline import EXPECTED_ROWS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOINER = "join-tenants-poweruse"
WINDOW = 20.0
NEEDED = 12.0  # seconds of the window the scenario needs: publish, restart, publish


def example_messages() -> dict[str, list]:
    from streaming_runtime.expressions import compile_expression

    run_file = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    return {
        app["env"]["STREAM_TOPIC"]: compile_expression(app["env"]["MESSAGE_EXPR"], setting="MESSAGE_EXPR").evaluate(
            None
        )
        for app in run_file["apps"]
        if "MESSAGE_EXPR" in app.get("env", {})
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("handover")
    overrides = {JOINER: {"JOINER_STATE_STORE": "joiner-state", "JOINER_WINDOW_SIZE": f"{WINDOW:g}s"}}
    with publisher_stack(run_dir, ("billable-proc", JOINER), overrides) as running:
        yield running
        no_redis_refusals(running)


def poll(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout:.0f}s")


def publish(stack: Stack, pubsub: str, topic: str, events: list) -> None:
    url, headers = publish_url(stack, pubsub, topic)
    for event in events:
        answer = httpx.post(url, json=event, headers=headers, timeout=10)
        assert answer.status_code == 204, answer.text


def joiner_stats(stack: Stack) -> dict:
    return stack.apps[JOINER].get("/stats").json()


def rows(stack: Stack) -> set[tuple]:
    batches = data_received(stack.apps["billable-proc"].log_text())
    return {(r["customer_id"], r["tenant_id"], r["tenant_kwh_usage"]) for batch in batches for r in batch}


def test_tenants_before_a_restart_join_readings_after_it(stack: Stack):
    messages = example_messages()
    # the scenario must fit in one window (windows are aligned on the epoch): start it early in one
    poll(lambda: WINDOW - time.time() % WINDOW >= NEEDED, WINDOW, "a window with enough time left")
    window_end = (time.time() // WINDOW + 1) * WINDOW

    publish(stack, "redis-stream", "tenants", messages["tenants"])
    poll(lambda: joiner_stats(stack)["accepted"].get("tenants") == 5, 10, "the joiner did not accept the 5 tenants")
    stack.restart_app(JOINER)
    assert joiner_stats(stack)["restored"] == 5  # taken over from the state store by the new run
    assert "took over 1 open window(s), 5 events" in stack.apps[JOINER].log_text()
    publish(stack, "rabbit-stream", "poweruse", messages["poweruse"])
    poll(
        lambda: sum(joiner_stats(stack)[kind].get("poweruse", 0) for kind in ("accepted", "filtered")) == 8,
        10,
        "the joiner did not take the 8 readings",
    )
    assert time.time() < window_end, "the scenario overran its window: the test needs a faster machine"

    poll(lambda: rows(stack) >= EXPECTED_ROWS, WINDOW + 15, "billable-proc did not receive the billable rows")
    assert rows(stack) == EXPECTED_ROWS


def test_a_restarted_billable_proc_still_recognises_a_call_it_billed(stack: Stack):
    """billable-proc keeps its record of billed calls in the billing-state store (real state.redis): after a
    restart, a retry of a call it billed before is answered as a duplicate and not billed again."""
    proc, joiner = stack.apps["billable-proc"], stack.apps[JOINER]
    path = "/v1.0/invoke/billable-proc/method/billables"  # through the joiner's sidecar, as the joiner calls it
    headers = {"window-id": f"e2e-{time.time_ns()}", "window-chunk": "1/1", "content-type": "application/json"}
    body = b'[{"customer_id": 4250, "tenant_id": "e2e-restart", "tenant_kwh_usage": 1}]'
    first = joiner.call_sidecar("POST", path, content=body, headers=headers)
    stack.restart_app("billable-proc")
    again = joiner.call_sidecar("POST", path, content=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == {"status": "ok", "duplicate": True}
    billed = [row for batch in data_received(proc.log_text()) for row in batch if row["tenant_id"] == "e2e-restart"]
    assert billed == [{"customer_id": 4250, "tenant_id": "e2e-restart", "tenant_kwh_usage": 1}]
