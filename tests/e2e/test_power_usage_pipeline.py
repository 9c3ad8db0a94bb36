"""The power-usage example through real daprd sidecars, Redis Streams and RabbitMQ."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.daprd import pinned_version
from devstack.stack import Stack, data_received
from tests.e2e.support import poll, redis_command, redis_stream

pytestmark = pytest.mark.e2e

EXPECTED_ROWS = {
    (924, "dc:eqix:us:chi1:12", 1034),
    (924, "dc:eqix:us:chi1:12", 1134),
    (243, "dc:kddi:cn:hnk2:11", 1119),
    (243, "dc:kddi:cn:hnk2:11", 1201),
}


def received_rows(stack: Stack) -> list[tuple]:
    batches = data_received(stack.apps["billable-proc"].log_text())
    return [(row["customer_id"], row["tenant_id"], row["tenant_kwh_usage"]) for batch in batches for row in batch]


def test_sidecars_run_the_pinned_daprd(stack: Stack):
    for running in stack.apps.values():
        metadata = running.call_sidecar("GET", "/v1.0/metadata").json()
        assert metadata["runtimeVersion"] == pinned_version(), running.spec.app_id


def test_billable_proc_receives_exactly_the_billable_rows(stack: Stack):
    poll(
        lambda: set(received_rows(stack)) >= EXPECTED_ROWS,
        120,
        "billable-proc did not receive every billable row",
        stack,
    )
    rows = received_rows(stack)
    assert set(rows) == EXPECTED_ROWS
    # every window's body is one JSON array of rows
    assert all(isinstance(batch, list) and batch for batch in data_received(stack.apps["billable-proc"].log_text()))
    # /metrics: the kWh billed per customer are the sums of the rows received (polled: windows keep coming)
    poll(lambda: all((s := kwh_sums(stack))[0].values()) and s[0] == s[1], 30, "kWh in /metrics != the rows", stack)
    for generator in ("tenants-gen", "poweruse-gen"):
        assert sum(metric(stack, generator, "message_gen_published_total").values()) > 0, generator


def metric(stack: Stack, app_id: str, name: str) -> dict[frozenset, float]:
    """The samples of ``name`` in the app's /metrics, by their labels."""
    text = stack.apps[app_id].get("/metrics").text
    families = text_string_to_metric_families(text)
    return {frozenset(s.labels.items()): s.value for f in families for s in f.samples if s.name == name}


def kwh_sums(stack: Stack) -> tuple[dict[str, float], dict[str, float]]:
    """billable_proc_kwh_total of customers 924 and 243, and the sums of the rows billable-proc logged."""
    exported = metric(stack, "billable-proc", "billable_proc_kwh_total")
    billed = {c: exported.get(frozenset({("customer_id", c)}), 0.0) for c in ("924", "243")}
    logged = {c: float(sum(kwh for customer, _, kwh in received_rows(stack) if str(customer) == c)) for c in billed}
    return billed, logged


def test_joiner_took_its_input_from_both_brokers(stack: Stack):
    stats = stack.apps["join-tenants-poweruse"].get("/stats").json()
    assert stats["accepted"]["tenants"] > 0 and stats["accepted"]["poweruse"] > 0
    # the poweruse Subscription has bulkSubscribe: readings come in bulk deliveries, tenants one by one
    assert stats["bulk_deliveries"].get("poweruse", 0) > 0
    assert "tenants" not in stats["bulk_deliveries"]
    assert stats["windows_closed"] > 0 and stats["rows_emitted"] > 0


def test_rows_published_to_a_topic_carry_the_window_as_cloudevent_extensions(stack: Stack):
    events = poll(lambda: redis_stream(stack, "billables"), 60, "no window published to redis-stream/billables", stack)
    event = json.loads(events[0])
    assert event["type"] == "io.dapr.streaming.window"
    assert float(event["windowend"]) - float(event["windowstart"]) == 2
    assert event["windowid"] == str(int(float(event["windowstart"]) * 1000))
    rows = {(r["customer_id"], r["tenant_id"], r["tenant_kwh_usage"]) for e in events for r in json.loads(e)["data"]}
    assert rows and rows <= EXPECTED_ROWS


def test_malformed_events_go_to_the_dead_letter_topic_and_the_rows_keep_coming(stack: Stack):
    tenants_gen = stack.apps["tenants-gen"]
    probe = f"dead-letter-probe-{uuid.uuid4()}"
    path = "/v1.0/publish/redis-stream/tenants"
    # a tenant without customer_id (used by select), and a body that is not JSON
    assert tenants_gen.call_sidecar("POST", path, json={"tenant_id": probe}).status_code == 204
    assert (
        tenants_gen.call_sidecar(
            "POST", path, content=f"not json {probe}", headers={"content-type": "text/plain"}
        ).status_code
        == 204
    )

    def dead_letters() -> list[str]:
        return [line for line in redis_stream(stack, "tenants-deadletter") if probe in line]

    letters = poll(
        lambda: len(dead_letters()) >= 2 and dead_letters(),
        60,
        "malformed events did not reach tenants-deadletter",
        stack,
    )
    assert any(json.loads(letter).get("data") == {"tenant_id": probe} for letter in letters if letter.startswith("{"))
    joiner_log = stack.apps["join-tenants-poweruse"].log_text()
    assert "dropped malformed event stream=tenants" in joiner_log and "customer_id" in joiner_log
    # good events after the bad ones still make rows
    before = len(received_rows(stack))
    poll(lambda: len(received_rows(stack)) > before, 30, "no rows after the malformed events", stack)
    assert set(received_rows(stack)) <= EXPECTED_ROWS


def test_each_generated_message_carries_the_cloudevent_id_its_generator_gave_it(stack: Stack):
    """message-gen sets cloudevent.id per message, so that a publish retry is recognised by the joiner's dedup."""
    import re

    def cloud_events() -> list[dict]:
        documents = [json.loads(line) for line in redis_stream(stack, "tenants")]
        return [document for document in documents if "specversion" in document][:5]  # not the metadata field

    ids = [event["id"] for event in poll(cloud_events, 60, "no tenant in the tenants stream", stack)]
    assert all(re.fullmatch(r"(tenants-gen|tenants)-\d{13}-\d+", event_id) for event_id in ids), ids
    assert len(set(ids)) == len(ids)


def test_the_private_redis_keeps_an_append_only_file(stack: Stack):
    """What Redis acknowledged (stream entries, the joiner's handover) survives its kill -9, as in deploy/."""
    assert redis_command(stack, "CONFIG", "GET", "appendonly").split() == ["appendonly", "yes"]


def _listeners() -> list[tuple[str, set[int]]]:
    """(local address, owning pids) of every listening TCP socket on the host, from the socket table."""
    table = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in table.splitlines():
        fields = line.split()
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        found.append((fields[3], pids))
    return found


def _process_groups(leaders: set[int]) -> set[int]:
    """Every live process in the groups of ``leaders`` (the stack starts each child as a group: beam under
    rabbitmq-server's script, uvicorn under python)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) in leaders:
                    found.add(int(entry.name))
            except ProcessLookupError:
                pass
    return found


def test_nothing_of_the_stack_listens_beyond_loopback(stack: Stack):
    """Apps, sidecars, brokers (RabbitMQ's epmd and distribution ports too) and sentry, read from the socket
    table. The one exception is sentry's health port: sentry 1.18 ignores --healthz-listen-address (it
    answers "ok" and nothing else)."""
    assert stack.sentry is not None and stack.redis is not None and stack.rabbitmq is not None
    processes = [p for running in stack.apps.values() for p in (running.app, running.sidecar)]
    processes += [stack.sentry.process, stack.redis.process, stack.rabbitmq.process]
    ours = _process_groups({p.pid for p in processes if p is not None and p.pid is not None})
    listening = [(address, pids & ours) for address, pids in _listeners() if pids & ours]
    # each app listens on its port, each sidecar on its HTTP, gRPC, internal gRPC and metrics ports
    assert len(listening) >= 5 * len(stack.apps) + 4, listening
    outside = [
        (address, pids)
        for address, pids in listening
        if not address.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))
    ]
    assert [address.rpartition(":")[2] for address, _ in outside] == [str(stack.sentry.healthz_port)], outside
