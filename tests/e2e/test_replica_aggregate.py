"""An aggregate with three joiner replicas on the real runtime (daprd, redis-server, rabbitmq-server): each
replica delivers its part of each window's aggregate, billable-proc combines the parts and bills, once per
window, exactly the rows one joiner makes of the same inputs (docs/scaling.md, "Aggregation across replicas").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack.stack import Stack
from joiner.config import load_config
from joiner.core import JoinCore, build_engine
from tests.e2e.support import poll, publish_bulk, publisher_stack
from tests.e2e.test_replicas import JOINER, JOINER_ENV, ROOT, envelopes, numbered, stamped, windows_for

pytestmark = pytest.mark.e2e

AGGREGATE = {
    "group_by": ["customer_id"],
    "fields": {
        "kwh": "sum(tenant_kwh_usage)",
        "readings": "count()",
        "peak": "max(tenant_kwh_usage)",
        "low": "min(tenant_kwh_usage)",
        "mean": "avg(tenant_kwh_usage)",
    },
}
TENANTS = 10


def aggregate_config(directory: Path) -> Path:
    """The example's Joiner with an aggregate per customer."""
    document = yaml.safe_load((ROOT / "services/joiner/joiner.yaml").read_text())
    document["spec"]["aggregate"] = AGGREGATE
    path = directory / "joiner-aggregate.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("replica-aggregate")
    joiner_env = {**JOINER_ENV, "JOINER_CONFIG": str(aggregate_config(run_dir))}
    # the replicas close a window within the idle timeout (5 s) of each other: the parts wait 8 s
    overrides = {JOINER: joiner_env, "billable-proc": {"PROC_COMBINE_WAIT": "8"}}
    with publisher_stack(run_dir, ("billable-proc", JOINER), overrides, joiner_replicas=3) as running:
        yield running


def one_joiner(config_path: Path, tenants: list[dict], readings: list[dict]) -> dict[str, dict]:
    """One joiner's aggregate rows of these inputs (the same settings, in-process), per window id and customer."""
    config = load_config({**JOINER_ENV, "JOINER_CONFIG": str(config_path)})
    out: dict[str, dict] = {}
    core = JoinCore(config, build_engine(config), on_window=lambda w, rows: out.update({w.id: by_customer(rows)}))
    for n, tenant in enumerate(tenants):
        core.offer(0, tenant, f"t{n}")
    for n, reading in enumerate(readings):
        core.offer(1, reading, f"r{n}")
    core.flush()
    return {window: rows for window, rows in out.items() if rows}


def by_customer(rows: list[dict]) -> dict:
    return {json.dumps(row["customer_id"]): row for row in rows}


def test_three_replicas_parts_combine_into_one_joiners_aggregate(stack: Stack, tmp_path):
    windows = 3
    start = windows_for(windows)
    tenants, readings = [], []
    for k in range(windows):
        at = start + k * 2.0
        tenants += stamped([{"tenant_id": f"replica-t{n}", "customer_id": 7000 + n} for n in range(TENANTS)], at, 10)
        readings += stamped([numbered(n) for n in range(3000 + k * 90, 3000 + (k + 1) * 90)], at, 50)
    for k in range(windows):
        publish_bulk(stack, "redis-stream", "tenants", tenants[k * TENANTS : (k + 1) * TENANTS])
        publish_bulk(stack, "rabbit-stream", "poweruse", readings[k * 90 : (k + 1) * 90])
    want = one_joiner(aggregate_config(tmp_path), tenants, readings)
    assert len(want) == windows

    def combined() -> dict[str, dict]:
        return {
            envelope["window_id"]: by_customer(envelope["rows"])
            for envelope in envelopes(stack)
            if "combined_from" in envelope and envelope["window_id"] in want
        }

    poll(lambda: len(combined()) == windows, 90, "every window's parts combined and billed", stack)
    assert combined() == want
    billed = [envelope for envelope in envelopes(stack) if envelope["window_id"] in want]
    assert len(billed) == windows  # once per window: no part was billed on its own
    assert all(len(envelope["combined_from"]) >= 2 for envelope in billed)  # the readings were shared
    proc = stack.apps["billable-proc"].get("/stats").json()
    assert proc["late_parts"] == 0 and proc["windows_combined"] >= windows
