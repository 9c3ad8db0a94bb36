"""The fuzz tier: arbitrary bytes, arbitrary JSON and arbitrary CloudEvent envelopes (single and bulk) at
each service's routes, in-process. Whatever comes, the joiner answers 200 with SUCCESS/DROP (per entry
for a bulk delivery) and meets no error of its own; good events beside poison are counted exactly once
and billed; the sender still delivers afterwards. billable-proc answers 200, 400 or 413, never 500."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from joiner.app import JoinerSettings, create_app
from joiner.config import config_from_yaml
from message_proc.app import ProcessorSettings
from message_proc.app import create_app as create_billing_app
from tests.contract.support import ManualClock, RecordingSidecar
from tests.contract.test_joiner_service import EXAMPLE

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# what a publisher may put in a CloudEvent: any attribute of any type
envelopes = st.fixed_dictionaries(
    {"specversion": st.just("1.0")},
    optional=dict.fromkeys(
        ("id", "time", "topic", "pubsubname", "datacontenttype", "data", "data_base64", "type"), json_values
    ),
)
readings = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["t1", "t2"]) | st.text(max_size=3) | st.integers(),
        "power_use": st.floats(allow_nan=True) | st.integers() | st.text(max_size=3),
        "kwh_use": json_values,
    }
)


class Client:
    """An app with its lifespan run on an event loop of its own, called from synchronous hypothesis
    tests; the app's tasks (the sender) run whenever a call does."""

    def __init__(self, app) -> None:
        self.app = app
        self.runner = asyncio.Runner()
        loop = self.runner.get_loop()
        self.ready, self.stop = asyncio.Event(), asyncio.Event()
        self.holder = loop.create_task(self._hold())  # the lifespan lives in one task, from start to stop
        self.runner.run(self.ready.wait())

    async def _hold(self) -> None:
        async with LifespanManager(self.app) as manager:
            self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://app")
            self.ready.set()
            await self.stop.wait()
            await self.http.aclose()

    def post(self, route: str, **kwargs) -> httpx.Response:
        return self.runner.run(self.http.post(route, **kwargs))

    def get(self, route: str) -> httpx.Response:
        return self.runner.run(self.http.get(route))

    def run(self, coroutine):
        return self.runner.run(coroutine)

    def close(self) -> None:
        self.stop.set()
        self.runner.run(asyncio.wait_for(self.holder, timeout=30))
        self.runner.close()


def served(app) -> Iterator[Client]:
    client = Client(app)
    try:
        yield client
    finally:
        client.close()


def dumps(value) -> bytes:
    """JSON as a publisher may write it: NaN and Infinity included, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True).encode()


@pytest.fixture(scope="module")
def joiner():
    clock, sidecar = ManualClock(), RecordingSidecar()
    app = create_app(JoinerSettings(), config=config_from_yaml(EXAMPLE), sink=sidecar, clock=clock)
    for client in served(app):
        yield client, app, sidecar, clock


def good(data: dict, topic: str) -> dict:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "type": "t",
        "source": "s",
        "topic": topic,
        "datacontenttype": "application/json",
        "data": data,
    }


def answer_of(client, route: str, body: bytes) -> dict:
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def assert_single(answer: dict) -> None:
    assert answer in ({"status": "SUCCESS"}, {"status": "DROP"}) or set(answer) == {"statuses"}, answer


@FUZZ
@given(body=st.binary(max_size=300))
def test_any_bytes_get_an_answer_daprd_understands(joiner, body):
    client, app, _, _ = joiner
    for route in ("/tenants", "/poweruse"):
        assert_single(answer_of(client, route, body))
    assert app.state.joiner.errors.total == 0


@FUZZ
@given(value=json_values, wrap=st.booleans())
def test_any_json_bare_or_as_cloudevent_data_gets_an_answer(joiner, value, wrap):
    client, app, _, _ = joiner
    body = dumps(good(value, "poweruse") if wrap else value)
    assert_single(answer_of(client, "/poweruse", body))
    assert app.state.joiner.errors.total == 0


@FUZZ
@given(envelope=envelopes)
def test_any_cloudevent_envelope_gets_an_answer(joiner, envelope):
    client, app, _, _ = joiner
    assert_single(answer_of(client, "/tenants", dumps(envelope)))
    assert app.state.joiner.errors.total == 0


@FUZZ
@given(
    poison=st.lists(envelopes | readings.map(lambda r: good(r, "poweruse")) | json_values, max_size=6),
    as_text=st.booleans(),
)
def test_a_bulk_of_anything_answers_each_entry_and_counts_the_good_ones_once(joiner, poison, as_text):
    client, app, _, _ = joiner
    stats = app.state.joiner.stats
    marker = uuid.uuid4().hex
    goods = [good({"tenant_id": marker, "power_use": 0.5, "kwh_use": n}, "poweruse") for n in range(3)]
    events = [*goods[:2], *poison, goods[2]]
    entries = [
        {"entryId": f"e{n}", "event": e if not as_text and _strict_json(e) else json.dumps(e, allow_nan=True)}
        for n, e in enumerate(events)
    ]
    accepted, filtered = sum(stats.accepted.values()), sum(stats.filtered.values())
    answer = answer_of(client, "/poweruse", dumps({"entries": entries, "id": "b", "topic": "poweruse"}))
    statuses = {s["entryId"]: s["status"] for s in answer["statuses"]}
    assert list(statuses) == [f"e{n}" for n in range(len(events))]
    assert set(statuses.values()) <= {"SUCCESS", "DROP"}
    for n in (0, 1, len(events) - 1):  # the good ones, whatever stands beside them
        assert statuses[f"e{n}"] == "SUCCESS"
    taken = sum(stats.accepted.values()) + sum(stats.filtered.values()) - accepted - filtered
    assert taken == list(statuses.values()).count("SUCCESS")  # each SUCCESS counted once, no DROP buffered
    assert app.state.joiner.errors.total == 0


def _strict_json(value) -> bool:
    """Whether daprd could hand this event over as a JSON object (it writes no NaN or Infinity):
    otherwise it travels as text, which is what an entry's event then is."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def test_after_the_fuzzing_the_sender_still_delivers(joiner):
    client, app, sidecar, clock = joiner
    tenant = uuid.uuid4().hex
    assert (
        answer_of(client, "/tenants", dumps(good({"tenant_id": tenant, "customer_id": 1}, "tenants")))["status"]
        == "SUCCESS"
    )
    assert (
        answer_of(client, "/poweruse", dumps(good({"tenant_id": tenant, "power_use": 2.0, "kwh_use": 5}, "poweruse")))[
            "status"
        ]
        == "SUCCESS"
    )
    clock.advance(20)
    app.state.joiner.close_due()
    client.run(app.state.joiner.outbox.join())  # the sender took the window (a wait, not a sleep)
    rows = [row for _, _, body, _ in sidecar.invocations for row in body]
    assert {"customer_id": 1, "tenant_id": tenant, "tenant_kwh_usage": 5} in rows
    assert app.state.joiner.errors.total == 0


@pytest.fixture(scope="module")
def billing():
    yield from served(create_billing_app(ProcessorSettings()))


@FUZZ
@given(
    body=st.binary(max_size=300) | json_values.map(dumps),
    headers=st.dictionaries(
        st.sampled_from(["window-id", "window-chunk", "window-end"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300),
    ),
)
def test_billable_proc_answers_anything_without_an_error_of_its_own(billing, body, headers):
    response = billing.post("/billables", content=body, headers={"content-type": "application/json", **headers})
    assert response.status_code in (200, 400, 413), response.text
    assert billing.get("/stats").json()["unexpected_errors"] == 0
