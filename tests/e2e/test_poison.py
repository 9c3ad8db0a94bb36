"""Poison published through Dapr costs nothing else, on the real runtime: good tenants and readings
published among poison, through the publishers' own sidecars, are billed once each; the joiner counts as
dropped exactly the poison that reached it, meets no error of its own, and the generators' rows of the same
window are all billed.

What each kind of poison becomes on its way through daprd (the pinned 1.18.2; the publishing sidecar
re-encodes what it is given, the subscribing one reads each message as a CloudEvent before delivering it):

* reaches the joiner as poison, which drops it: a CloudEvent of the publisher's own whose ``time`` is a
  number (daprd keeps ``time``; ``topic`` and ``pubsubname`` it overwrites); data nested 5,000 deep (Go
  reads up to 10,000); a body that is not JSON (text/plain, and application/json); and inside
  ``data_base64``, which daprd never decodes, a lone surrogate, ``1e400`` and nesting 5,000 deep;
* never reaches the joiner: a non-JSON body sent as application/cloudevents+json (the publishing sidecar
  answers 500); ``1e400`` in ``data`` (the publishing sidecar keeps numbers as text, the subscribing one
  cannot read it as a float64 and moves it to the dead-letter topic itself);
* reaches the joiner as a good event: a lone surrogate in ``data`` (the publishing sidecar reads it as
  U+FFFD and writes that).

A stack of its own (the whole of dapr.yaml, generators included): every row billed here would be an
unexpected row for tests/e2e/test_power_usage_pipeline.py, which checks the exact set of billed rows.

The last test shows a defect of daprd 1.18.2 that poison could use to stop the joiner's sidecar, and that
the shipped configuration avoids it.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.stack import Stack, data_received
from tests.e2e.support import death_of, poll, publisher_stack, redis_command
from tests.e2e.test_power_usage_pipeline import EXPECTED_ROWS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOINER = "join-tenants-poweruse"
WINDOW = 8.0  # the scenario is published within the first seconds of one window
CE_JSON = "application/cloudevents+json"
JSON = "application/json"
DEEP = 5_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    overrides = {
        JOINER: {"JOINER_WINDOW_SIZE": f"{WINDOW:g}s"},
        "tenants-gen": {"MESSAGE_DELAY": "100ms"},
        "poweruse-gen": {"MESSAGE_DELAY": "100ms"},
    }
    with Stack(ROOT / "dapr.yaml", tmp_path_factory.mktemp("poison"), overrides, quiet=True) as running:
        yield running


@pytest.fixture
def bare_stack(tmp_path_factory) -> Iterator[Stack]:
    """billable-proc and the joiner, the generators' sidecars alone (a test that kills a sidecar has a
    stack to itself)."""
    run_dir = tmp_path_factory.mktemp("poison-bare")
    with publisher_stack(run_dir, ("billable-proc", JOINER), {JOINER: {"JOINER_WINDOW_SIZE": "2s"}}) as running:
        yield running


def start_of_a_window(stack: Stack) -> float:
    """Wait for a window to begin (windows are aligned on the epoch); the end of that window."""
    poll(lambda: time.time() % WINDOW < 0.5, WINDOW + 1, "the start of a window", stack)
    return (time.time() // WINDOW + 1) * WINDOW


class Publisher:
    """POST /v1.0/publish/<pubsub>/<topic> on a sidecar, the body as given (bytes: no re-encoding here)."""

    def __init__(self, stack: Stack, app_id: str, pubsub: str, topic: str) -> None:
        sidecar = stack.apps[app_id]
        self.url = f"{sidecar.sidecar_url}/v1.0/publish/{pubsub}/{topic}"
        self.client = httpx.Client(timeout=10, headers=sidecar.dapr_headers)

    def __call__(self, body: bytes | dict, content_type: str = JSON, expect: int = 204) -> httpx.Response:
        content = json.dumps(body).encode() if isinstance(body, dict) else body
        answer = self.client.post(self.url, content=content, headers={"content-type": content_type})
        assert answer.status_code == expect, (answer.status_code, answer.text, content[:200])
        return answer

    def close(self) -> None:
        self.client.close()


def stats(stack: Stack) -> dict:
    return stack.apps[JOINER].get("/stats").json()


def dropped(stack: Stack, topic: str) -> int:
    return stats(stack)["dropped"].get(topic, 0)


def batches(stack: Stack) -> list[list[tuple]]:
    return [
        [(row["customer_id"], row["tenant_id"], row["tenant_kwh_usage"]) for row in batch]
        for batch in data_received(stack.apps["billable-proc"].log_text())
    ]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def envelope(event_id: str, **attributes) -> dict:
    """A CloudEvent of the publisher's own (published as application/cloudevents+json)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "test-poison",
        "type": "com.example.poison",
        "datacontenttype": JSON,
        **attributes,
    }


def poison(tag: str, good: dict, field: str) -> list[tuple[str, bytes, str]]:
    """(what, body, content type): the kinds that reach the joiner as poison and are dropped. Each is
    ``good`` (a tenant or reading of the test's own) with one thing wrong, so that one taken by mistake
    would make a row twice."""
    text = json.dumps(good)
    without = json.dumps({key: value for key, value in good.items() if key != field})

    def with_field(value: str) -> str:  # raw JSON text: ``value`` as written, not re-encoded
        return without[:-1] + f', "{field}": {value}}}'

    return [
        ("time is a number", json.dumps(envelope(f"{tag}-time", time=12, data=good)).encode(), CE_JSON),
        (
            "a lone surrogate in data_base64",
            json.dumps(envelope(f"{tag}-surrogate", data_base64=b64(text[:-1] + ', "note": "\\ud800"}'))).encode(),
            CE_JSON,
        ),
        (
            "1e400 in data_base64",
            json.dumps(envelope(f"{tag}-inf", data_base64=b64(with_field("1e400")))).encode(),
            CE_JSON,
        ),
        (
            f"nested {DEEP:,} deep in data_base64",
            json.dumps(envelope(f"{tag}-deep64", data_base64=b64(with_field("[" * DEEP + "]" * DEEP)))).encode(),
            CE_JSON,
        ),
        (f"nested {DEEP:,} deep", with_field("[" * DEEP + "]" * DEEP).encode(), JSON),
        ("not JSON, as text/plain", f"not json {tag}".encode(), "text/plain"),
        ("not JSON, as application/json", f"not json {tag} {{".encode(), JSON),
    ]


def tenant(tenant_id: str, customer: int) -> dict:
    return {"tenant_id": tenant_id, "customer_id": customer}


def reading(tenant_id: str, kwh: int, power: float = 1.5) -> dict:
    return {"panel_id": 9, "tenant_id": tenant_id, "power_use": power, "kwh_use": kwh}


# what the joiner's log gives as the reason, per kind above, in that order
REASONS = [
    "CloudEvent attribute time is int, not a string",
    "is not Unicode text (a lone surrogate)",
    "is inf, not a finite number",
    "is nested deeper than 32 levels",
    "is nested deeper than 32 levels",
    "event is a string, not a JSON object",
    "data is not JSON",
]


# -- the test ----------------------------------------------------------------------------------------


def test_poison_published_through_dapr_costs_nothing_else(stack: Stack):
    tag = f"poison-e2e-{uuid.uuid4().hex[:12]}"
    t1, t2, t3 = f"{tag}:t1", f"{tag}:t2", f"{tag}:t3"  # the generators' tenants are dc:…; no join with them
    expected = Counter(
        {
            (4242, t1, 1001): 1,
            (4242, t1, 1002): 1,
            (4242, t1, 1003): 1,
            (4242, t1, 1004): 1,
            (4243, t2, 2001): 1,
            (4244, t3, 3001): 1,
        }
    )

    tenants = Publisher(stack, "tenants-gen", "redis-stream", "tenants")
    poweruse = Publisher(stack, "poweruse-gen", "rabbit-stream", "poweruse")
    before = {topic: dropped(stack, topic) for topic in ("tenants", "poweruse")}
    tenant_poison = poison(f"{tag}-tenant", tenant(t1, 4242), "customer_id")
    reading_poison = poison(f"{tag}-reading", reading(t1, 1005), "kwh_use")
    try:
        window_end = start_of_a_window(stack)
        # tenants (Redis Streams, one event per delivery): good ones before, among and after the poison
        tenants(tenant(t1, 4242))
        for _, body, content_type in tenant_poison[:4]:
            tenants(body, content_type)
        # a lone surrogate in data: the sidecar writes U+FFFD; the joiner gets a good tenant
        tenants(f'{{"tenant_id": "{t3}", "customer_id": 4244, "note": "\\ud800"}}'.encode())
        for _, body, content_type in tenant_poison[4:]:
            tenants(body, content_type)
        # never reach the joiner: refused by the publishing sidecar; dead-lettered by the subscribing one
        answer = tenants(f"not json {tag}".encode(), CE_JSON, expect=500)
        assert "ERR_PUBSUB_CLOUD_EVENTS_SER" in answer.text
        tenants(f'{{"tenant_id": "{t1}", "customer_id": 1e400, "probe": "{tag}-raw-inf"}}'.encode())
        tenants(tenant(t2, 4243))

        # readings (RabbitMQ, bulk deliveries of up to 100): poison shares deliveries with good readings
        poweruse(reading(t1, 1001))
        for _, body, content_type in reading_poison[:3]:
            poweruse(body, content_type)
        poweruse(reading(t1, 1002))
        poweruse(reading(t1, 1999, power=0.5))  # filtered by `where`: not billed, not dropped
        poweruse(
            f'{{"panel_id": 9, "tenant_id": "{t1}", "power_use": 1.5, "kwh_use": 1004, "note": "\\ud800"}}'.encode()
        )
        for _, body, content_type in reading_poison[3:]:
            poweruse(body, content_type)
        poweruse(reading(t2, 2001))
        poweruse(reading(t3, 3001))
        poweruse(f"not json {tag}".encode(), CE_JSON, expect=500)

        poll(
            lambda: all(dropped(stack, topic) >= before[topic] + 7 for topic in before),
            20,
            "the joiner did not drop the 7 kinds of poison on each topic",
            stack,
        )
        # 1e400 in a reading's data: daprd cannot read it, so it never reaches the joiner (beside an entry
        # the joiner drops it is the last test's case)
        poweruse(f'{{"panel_id": 9, "tenant_id": "{t1}", "power_use": 1.5, "kwh_use": 1e400}}'.encode())
        poweruse(reading(t1, 1003))
    finally:
        tenants.close()
        poweruse.close()
    assert time.time() < window_end - 1, "the scenario overran its window: the test needs a faster machine"

    def mine(rows) -> list[tuple]:
        return [row for row in rows if str(row[1]).startswith(tag)]

    poll(
        lambda: Counter(mine(row for batch in batches(stack) for row in batch)) >= expected,
        window_end - time.time() + 30,
        "the good tenants and readings published among the poison were not billed",
        stack,
    )
    poll(
        lambda: len(redis_stream_lines_with(stack, "tenants-deadletter", tag)) >= 8,
        30,
        "the tenant poison did not reach tenants-deadletter",
        stack,
    )

    every_batch = batches(stack)
    rows = [row for batch in every_batch for row in batch]
    # each good row exactly once; nothing made of poison, nothing of the filtered reading
    assert Counter(mine(rows)) == expected
    # the window with the poison billed every billable row of the generators too, and only those
    [window_rows] = [batch for batch in every_batch if mine(batch)]
    assert set(window_rows) - set(mine(window_rows)) == EXPECTED_ROWS
    assert set(rows) - set(mine(rows)) == EXPECTED_ROWS

    after = stats(stack)
    # exactly the poison that reached the joiner, counted once (daprd redelivered none of it)
    assert after["dropped"] == {topic: before[topic] + 7 for topic in before}
    assert after["unexpected_errors"] == 0
    assert after["pair_errors"] == 0 and after["deliveries_failed"] == 0
    assert after["bulk_deliveries"].get("poweruse", 0) > 0 and "tenants" not in after["bulk_deliveries"]

    joiner_log = stack.apps[JOINER].log_text()
    assert "Traceback" not in joiner_log
    for topic in before:
        lines = [line for line in joiner_log.splitlines() if f"dropped malformed event stream={topic} " in line]
        assert len(lines) == 7, lines
        for reason, count in Counter(REASONS).items():
            assert sum(reason in line for line in lines) == count, (topic, reason, lines)
        assert all(len(line) < 600 for line in lines)
    # the 7 the joiner dropped and the 1e400 daprd could not read, all in the dead-letter topic
    letters = redis_stream_lines_with(stack, "tenants-deadletter", tag)
    assert len(letters) == 8
    assert any(f"{tag}-raw-inf" in letter for letter in letters)
    for running in stack.apps.values():
        assert running.app.death() is None and running.sidecar.death() is None
        assert "panic:" not in running.sidecar.log_path.read_text(errors="replace")


def redis_stream_lines_with(stack: Stack, key: str, marker: str) -> list[str]:
    return [line for line in redis_command(stack, "XRANGE", key, "-", "+").splitlines() if marker in line]


# -- JSON nested as deep as daprd passes ----------------------------------------------------------


def test_a_reading_nested_just_under_daprds_limit_costs_no_reading_beside_it(stack: Stack):
    tag = f"poison-e2e-deep-{uuid.uuid4().hex[:12]}"
    depth = 9_990  # Go reads 10,000 levels: both sidecars pass it; the bulk body puts it ~5 levels deeper
    poweruse = Publisher(stack, "poweruse-gen", "rabbit-stream", "poweruse")
    tenants = Publisher(stack, "tenants-gen", "redis-stream", "tenants")
    before = dropped(stack, "poweruse")
    try:
        window_end = start_of_a_window(stack)
        tenants({"tenant_id": tag, "customer_id": 4245})
        poweruse({"panel_id": 9, "tenant_id": tag, "power_use": 1.5, "kwh_use": 5001})
        poweruse(
            f'{{"panel_id": 9, "tenant_id": "{tag}", "power_use": 1.5, "kwh_use": {"[" * depth + "]" * depth}}}'.encode()
        )
        poweruse({"panel_id": 9, "tenant_id": tag, "power_use": 1.5, "kwh_use": 5002})
    finally:
        poweruse.close()
        tenants.close()

    def billed() -> list[tuple]:
        return [row for batch in batches(stack) for row in batch if row[1] == tag]

    # until the good readings are billed, or the joiner has counted the one poisoned reading twice
    poll(
        lambda: len(billed()) >= 2 or dropped(stack, "poweruse") > before + 1,
        window_end - time.time() + 30,
        "neither billed nor dropped again",
        stack,
    )
    assert dropped(stack, "poweruse") == before + 1, "the delivery with the deep reading was dropped and redelivered"
    assert sorted(billed()) == [(4245, tag, 5001), (4245, tag, 5002)]


# -- a defect of daprd 1.18.2, and how the configuration avoids it ----------------------------------
#
# In a bulk delivery, daprd leaves out an entry it cannot read as a CloudEvent (1e400 in data) but looks up
# the app's DROP answers by their place in the whole batch (pkg/runtime/subscription/postman/http/http.go):
# when the Subscription has a deadLetterTopic, an answer past the end makes the sidecar panic and exit. The
# poweruse Subscription therefore has none, and the joiner publishes its dropped readings itself.


def test_a_reading_daprd_cannot_read_beside_one_the_joiner_drops_costs_nothing_else(bare_stack: Stack):
    stack = bare_stack  # no generators: the joiner's counts are the test's alone
    tag = f"poison-e2e-crash-{uuid.uuid4().hex[:12]}"
    sidecar = stack.apps[JOINER].sidecar
    poweruse = Publisher(stack, "poweruse-gen", "rabbit-stream", "poweruse")
    try:
        for _ in range(3):  # back to back: each pair shares a bulk delivery (maxAwaitDurationMs: 40)
            poweruse(f'{{"panel_id": 9, "tenant_id": "{tag}", "power_use": 1.5, "kwh_use": 1e400}}'.encode())
            poweruse({"panel_id": 9, "tenant_id": tag, "power_use": 1.5})  # no kwh_use: the joiner drops it
        poll(
            lambda: dropped(stack, "poweruse") >= 3, 20, "the joiner did not drop the 3 readings without kwh_use", stack
        )
        poweruse({"panel_id": 9, "tenant_id": tag, "power_use": 1.5, "kwh_use": 7001})
    except httpx.TransportError as error:  # the sidecar we publish through went away
        pytest.fail(
            death_of(stack.apps[JOINER]) or death_of(stack.apps["poweruse-gen"]) or f"publishing failed: {error!r}"
        )
    finally:
        poweruse.close()
    poll(
        lambda: stats(stack)["accepted"].get("poweruse", 0) >= 1,
        20,
        "the good reading after them was not accepted",
        stack,
    )
    poll(lambda: stats(stack)["dead_lettered"] >= 3, 20, "the joiner did not dead-letter the 3 dropped readings", stack)
    after = stats(stack)
    assert after["dropped"] == {"poweruse": 3} and after["dead_lettered"] == 3 and after["dead_letters_lost"] == 0
    assert sidecar.death() is None and "panic:" not in sidecar.log_path.read_text(errors="replace")
