"""``GET /metrics`` of each service, in process: exactly the metrics docs/metrics.md lists for it, each
moving when its event happens, and a route that answers whatever its collectors do."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from message_gen.app import create_app as create_generator
from message_gen.settings import GeneratorSettings
from message_proc.app import ProcessorSettings
from message_proc.app import create_app as create_processor
from message_proc.billed import BilledCalls
from streaming_runtime.metrics import add_metrics_route, new_registry
from tests.contract.support import ManualClock, RecordingSidecar, serve, wait_for
from tests.contract.test_joiner_service import EXAMPLE, app_on, close_window, post

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
PREFIXES = {"message-gen": "message_gen_", "billable-proc": "billable_proc_", "joiner": "joiner_"}
ROW = re.compile(r"^\|\s*`(?P<name>[a-z_]+)`\s*\|\s*(?P<type>counter|gauge|histogram)\s*\|")
SUFFIX = {"counter": "_total"}  # the parser names a counter's family without it
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def documented() -> dict[str, dict[str, str]]:
    """service -> {metric name: type}, from the tables under each service's heading of docs/metrics.md."""
    found: dict[str, dict[str, str]] = {service: {} for service in PREFIXES}
    service = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            service = next((s for s in PREFIXES if line[3:].startswith(s)), None)
        elif service is not None and (row := ROW.match(line)):
            found[service][row["name"]] = row["type"]
    return found


def exposed(text: str) -> dict[str, str]:
    """{metric name: type} of every metric of ours (the services' prefixes) in a scrape."""
    return {
        family.name + SUFFIX.get(family.type, ""): family.type
        for family in text_string_to_metric_families(text)
        if family.name.startswith(tuple(PREFIXES.values()))
    }


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> str:
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def generator_settings(**values: Any) -> GeneratorSettings:
    base = {
        "MESSAGE_EXPR": '{"n": $id}',
        "CLUSTER_STREAM": "redis-stream",
        "STREAM_TOPIC": "tenants",
        "MESSAGE_COUNT": 3,
        "MESSAGE_DELAY": "0s",
    }
    return GeneratorSettings(**{**base, **values})


GENERATOR = frozenset({("pubsub", "redis-stream"), ("topic", "tenants")})
WINDOW = {"window-id": "1700000000000", "window-chunk": "1/1"}


def rows(*usage: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"customer_id": c, "tenant_id": f"dc:t:{c}", "tenant_kwh_usage": kwh} for c, kwh in usage]


def kwh(scraped: Samples, customer: str) -> float | None:
    return scraped.get(("billable_proc_kwh_total", frozenset({("customer_id", customer)})))


# -- what the docs list is what each service exposes ------------------------------------------------


def test_the_docs_list_metrics_for_every_service():
    tables = documented()
    for service, prefix in PREFIXES.items():
        assert tables[service], f"docs/metrics.md lists no metric under a heading starting {service!r}"
        assert all(name.startswith(prefix) for name in tables[service]), tables[service]


async def test_message_gen_exposes_what_the_docs_list():
    app = create_generator(generator_settings(MESSAGE_COUNT=1), publisher=RecordingSidecar())
    async with serve(app) as client:
        await wait_for(lambda: app.state.stats.finished, what="generator finished")
        assert exposed(await scrape(client)) == documented()["message-gen"]


async def test_billable_proc_exposes_what_the_docs_list():
    async with serve(create_processor(ProcessorSettings())) as client:
        assert (await client.post("/billables", json=rows((924, 10)), headers=WINDOW)).status_code == 200
        assert exposed(await scrape(client)) == documented()["billable-proc"]


async def test_the_joiner_exposes_what_the_docs_list():
    clock = ManualClock()
    async with serve(app_on(RecordingSidecar(), clock, EXAMPLE)) as client:
        assert exposed(await scrape(client)) == documented()["joiner"]


# -- each metric moves when its event happens -------------------------------------------------------


async def test_message_gen_counts_publishes_failures_and_their_durations():
    sidecar = RecordingSidecar(failures=1)
    app = create_generator(generator_settings(), publisher=sidecar)
    async with serve(app) as client:
        await wait_for(lambda: app.state.stats.finished, what="generator finished")
        scraped = samples(await scrape(client))
    assert len(sidecar.publications) == 3
    assert scraped[("message_gen_published_total", GENERATOR)] == 3
    assert scraped[("message_gen_publish_failures_total", GENERATOR)] == 1
    assert scraped[("message_gen_publish_duration_seconds_count", GENERATOR)] == 4  # 3 publishes, 1 refused
    assert scraped[("message_gen_publish_duration_seconds_sum", GENERATOR)] >= 0


async def test_message_gen_counts_each_message_of_a_bulk_publish():
    sidecar = RecordingSidecar()
    app = create_generator(generator_settings(MESSAGE_COUNT=4, MESSAGE_BATCH=2), publisher=sidecar)
    async with serve(app) as client:
        await wait_for(lambda: app.state.stats.finished, what="generator finished")
        scraped = samples(await scrape(client))
    assert sidecar.bulk_calls == 2
    assert scraped[("message_gen_published_total", GENERATOR)] == 4
    assert scraped[("message_gen_publish_duration_seconds_count", GENERATOR)] == 2


async def test_billable_proc_counts_each_outcome_and_the_kwh_of_billed_rows_per_customer():
    first = rows((924, 1034), (243, 1119), (924, 100.5))
    other = rows((924, 1134), (243, 1201))
    ended = {**WINDOW, "window-end": str(time.time() - 5)}  # its window ended 5 s before the call
    async with serve(create_processor(ProcessorSettings())) as client:
        before = samples(await scrape(client))
        billed = await client.post("/billables", json=first, headers=ended)
        duplicate = await client.post("/billables", json=first, headers=ended)
        conflict = await client.post("/billables", json=other, headers=ended)
        rejected = await client.post("/billables", content=b"{not json", headers={"content-type": "application/json"})
        unwindowed = await client.post("/billables", json=rows((243, 1)))
        scraped = samples(await scrape(client))
    assert [a.status_code for a in (billed, duplicate, conflict, rejected, unwindowed)] == [200, 200, 200, 400, 200]
    assert duplicate.json()["duplicate"] is True
    assert kwh(before, "924") is None and before[("billable_proc_calls_total", frozenset())] == 0
    counts = {name: scraped[(f"billable_proc_{name}_total", frozenset())] for name in ("calls", "rows")}
    assert counts == {"calls": 3, "rows": 6}  # billed, the conflict (billed too), the call without a window
    assert scraped[("billable_proc_duplicates_total", frozenset())] == 1
    assert scraped[("billable_proc_conflicts_total", frozenset())] == 1
    assert scraped[("billable_proc_rejected_total", frozenset())] == 1
    # the rows posted and billed, the duplicate's not
    assert kwh(scraped, "924") == 1034 + 100.5 + 1134
    assert kwh(scraped, "243") == 1119 + 1201 + 1
    # the two windowed calls billed, each 5 s after its window's end; the duplicate is not billed
    assert scraped[("billable_proc_window_delay_seconds_count", frozenset())] == 2
    assert 10 <= scraped[("billable_proc_window_delay_seconds_sum", frozenset())] < 20
    assert scraped[("billable_proc_window_delay_seconds_bucket", frozenset({("le", "2.5")}))] == 0


async def test_rows_without_a_customer_or_a_number_of_kwh_are_billed_and_not_added():
    body = [
        {"customer_id": 924, "tenant_kwh_usage": "n/a"},
        {"customer_id": 924, "tenant_kwh_usage": True},
        {"customer_id": 924, "tenant_kwh_usage": -3},
        {"tenant_kwh_usage": 5},
        {"customer_id": None, "tenant_kwh_usage": 5},
        {"customer_id": [924], "tenant_kwh_usage": 5},
        {"customer_id": True, "tenant_kwh_usage": 5},
        {"customer_id": "c" * 65, "tenant_kwh_usage": 5},
        "not a row",
        {"customer_id": 924, "tenant_kwh_usage": 7},
    ]
    async with serve(create_processor(ProcessorSettings())) as client:
        answer = await client.post("/billables", json=body)
        scraped = samples(await scrape(client))
    assert answer.status_code == 200
    assert scraped[("billable_proc_rows_total", frozenset())] == len(body)
    assert [key for key in scraped if key[0] == "billable_proc_kwh_total"] == [
        ("billable_proc_kwh_total", frozenset({("customer_id", "924")}))
    ]
    assert kwh(scraped, "924") == 7


async def test_the_kwh_of_a_body_in_the_joiners_envelope_are_those_of_its_rows():
    envelope = {"window_start": 1.0, "window_end": 21.0, "window_id": "1000", "rows": rows((924, 5), (243, 6))}
    async with serve(create_processor(ProcessorSettings())) as client:
        assert (await client.post("/billables", json=envelope)).status_code == 200
        scraped = samples(await scrape(client))
    assert (kwh(scraped, "924"), kwh(scraped, "243")) == (5, 6)


async def test_calls_the_record_of_billed_calls_cannot_take_are_counted_unavailable():
    store = RecordingSidecar()
    store.state_down = True
    app = create_processor(ProcessorSettings(PROC_STATE_STORE="billing-state"), store=store)
    async with serve(app) as client:
        answer = await client.post("/billables", json=rows((924, 10)), headers=WINDOW)
        scraped = samples(await scrape(client))
    assert answer.status_code == 503
    assert scraped[("billable_proc_unavailable_total", frozenset())] == 1
    assert scraped[("billable_proc_calls_total", frozenset())] == 0
    assert kwh(scraped, "924") is None


async def test_an_error_of_its_own_is_counted_as_unexpected(monkeypatch):
    async def broken(self, call, digest):
        raise RuntimeError("a bug (test)")

    monkeypatch.setattr(BilledCalls, "seen", broken)
    async with serve(create_processor(ProcessorSettings())) as client:
        answer = await client.post("/billables", json=rows((924, 10)), headers=WINDOW)
        scraped = samples(await scrape(client))
    assert answer.status_code == 500
    assert scraped[("billable_proc_unexpected_errors_total", frozenset())] == 1


async def test_customers_past_the_cap_are_counted_as_other_and_said_once(caplog):
    caplog.set_level(logging.WARNING, logger="message-proc")
    async with serve(create_processor(ProcessorSettings(PROC_METRICS_MAX_CUSTOMERS=2))) as client:
        await client.post("/billables", json=rows((1, 10), (2, 20), (3, 30)))
        await client.post("/billables", json=rows((4, 40), (1, 1), (5, 50)))
        scraped = samples(await scrape(client))
    customers = {dict(labels)["customer_id"] for name, labels in scraped if name == "billable_proc_kwh_total"}
    assert customers == {"1", "2", "other"}
    assert (kwh(scraped, "1"), kwh(scraped, "2"), kwh(scraped, "other")) == (11, 20, 30 + 40 + 50)
    warnings = [r for r in caplog.records if "PROC_METRICS_MAX_CUSTOMERS" in r.getMessage()]
    assert len(warnings) == 1


async def test_two_apps_in_one_process_count_apart():
    async with serve(create_processor(ProcessorSettings())) as one, serve(create_processor(ProcessorSettings())) as two:
        await one.post("/billables", json=rows((924, 10)))
        first, second = samples(await scrape(one)), samples(await scrape(two))
    assert first[("billable_proc_calls_total", frozenset())] == 1
    assert second[("billable_proc_calls_total", frozenset())] == 0
    assert kwh(second, "924") is None


async def test_the_joiners_delivery_latency_counts_each_window_delivered():
    clock = ManualClock()

    class SlowTarget(RecordingSidecar):
        async def invoke(self, app_id, method, data, headers=None):
            clock.advance(3)  # the call takes 3 s of the joiner's clock
            await super().invoke(app_id, method, data, headers)

    sidecar = SlowTarget()
    target = frozenset({("target", "billable-proc/billables")})
    app = app_on(sidecar, clock, EXAMPLE)
    async with serve(app) as client:
        before = samples(await scrape(client))
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        await post(client, "/poweruse", {"tenant_id": "t1", "power_use": 1.5, "kwh_use": 10})
        await close_window(app, clock)
        await wait_for(
            lambda: sidecar.invocations and app.state.joiner.sender.sending is None, what="the window delivered"
        )
        scraped = samples(await scrape(client))
        buffered_bytes = scraped[("joiner_buffered_bytes", frozenset())]
    assert before[("joiner_delivery_latency_seconds_count", target)] == 0
    assert scraped[("joiner_delivery_latency_seconds_count", target)] == 1
    assert scraped[("joiner_delivery_latency_seconds_sum", target)] == 3
    assert scraped[("joiner_delivery_latency_seconds_bucket", target | {("le", "2.5")})] == 0
    assert scraped[("joiner_delivery_latency_seconds_bucket", target | {("le", "5.0")})] == 1
    assert buffered_bytes == 0  # the window closed: nothing held


async def test_the_joiner_exports_the_bytes_its_open_windows_hold():
    clock = ManualClock()
    app = app_on(RecordingSidecar(), clock, EXAMPLE)
    async with serve(app) as client:
        await post(client, "/tenants", {"tenant_id": "t1", "customer_id": 7})
        scraped = samples(await scrape(client))
        held = app.state.joiner.report.as_dict()["buffered_bytes"]
    assert held > 0
    assert scraped[("joiner_buffered_bytes", frozenset())] == held


# -- the route itself -------------------------------------------------------------------------------


class Broken:
    def collect(self):
        raise RuntimeError("a collector's bug (test)")


async def test_a_failing_collector_gets_a_500_with_one_line_not_an_exception(caplog):
    app = FastAPI(title="test-app")
    add_metrics_route(app, new_registry(Broken()))
    async with serve(app) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 500
    assert answer.text == "metrics unavailable: RuntimeError\n"
    assert any("GET /metrics" in r.getMessage() for r in caplog.records if r.name == "test-app")


async def test_a_registry_not_made_yet_gets_a_503():
    made: dict[str, CollectorRegistry] = {}
    app = FastAPI(title="test-app")
    add_metrics_route(app, lambda: made.get("registry"))
    async with serve(app) as client:
        early = await client.get("/metrics")
        made["registry"] = new_registry()
        later = await client.get("/metrics")
    assert early.status_code == 503
    assert later.status_code == 200 and later.text == ""
