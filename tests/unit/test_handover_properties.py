"""The handover of open windows changes nothing: stopping at any point, handing over through JSON and
going on in a new processor gives the same windows, rows and late events as one processor that never
stopped. Drawn by hypothesis over arrival sequences, for the window join (processing and event time,
with and without dedup) and the table join."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from joiner.config import config_from_yaml
from joiner.core import JoinCore, build_engine

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((ROOT / "services" / "joiner" / "joiner.yaml").read_text())["spec"]
MODES = {
    "processing time": {},
    "processing time, dedup": {"dedup": {"ttl": "30s"}},
    "event time": {"eventTime": {"field": "ts", "grace": "5s", "idle": "1h"}},
    "event time, dedup": {"eventTime": {"field": "ts", "grace": "5s", "idle": "1h"}, "dedup": {"ttl": "30s"}},
    "table": {"join": "table"},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make(mode: str, clock: Clock, windows: list, late: list) -> JoinCore:
    config = config_from_yaml(yaml.safe_dump({**BASE, **MODES[mode]}))
    return JoinCore(
        config,
        build_engine(config),
        on_window=lambda w, rows: windows.append((w, rows)),
        on_late=late.append,
        clock=clock,
    )


@st.composite
def arrivals(draw) -> list[tuple[int, dict, str, float]]:
    """(stream, data, id, seconds before it arrives): a few tenants and readings over about a minute."""
    out = []
    for n in range(draw(st.integers(1, 24))):
        stream = draw(st.integers(0, 1))
        tenant = f"t{draw(st.integers(0, 2))}"
        ts = 1_700_000_000 + draw(st.integers(0, 70))
        if stream == 0:
            data = {"tenant_id": tenant, "customer_id": draw(st.integers(1, 3)), "ts": ts}
        else:
            data = {
                "tenant_id": tenant,
                "power_use": draw(st.sampled_from([0.5, 1.0, 1.5])),
                "kwh_use": draw(st.integers(1, 9)),
                "ts": ts,
            }
        event_id = f"e{draw(st.integers(0, n))}"  # some ids repeat: redeliveries for dedup
        out.append((stream, data, event_id, draw(st.sampled_from([0.0, 0.5, 3.0, 11.0]))))
    return out


def run(mode: str, events, stop_at: int | None):
    """Windows (id -> row multiset) and late event ids, with a handover before event ``stop_at``."""
    clock, windows, late = Clock(), [], []
    processor = make(mode, clock, windows, late)
    for position, (stream, data, event_id, wait) in enumerate(events):
        if position == stop_at:
            snapshot = json.loads(json.dumps(processor.snapshot()))
            processor = make(mode, clock, windows, late)
            processor.restore(snapshot)
        clock.now += wait
        processor.tick()
        processor.offer(stream, data, event_id)
    clock.now += 200
    processor.tick()
    processor.flush()
    closed = Counter()
    for window, rows in windows:
        closed[window.id] += 0
        closed.update(f"{window.id}:{json.dumps(row, sort_keys=True)}" for row in rows)
    return +closed, sorted(entry.id for entry in late)


@settings(max_examples=150, deadline=None)
@given(mode=st.sampled_from(sorted(MODES)), events=arrivals(), data=st.data())
def test_a_handover_at_any_point_changes_nothing(mode, events, data):
    stop_at = data.draw(st.integers(0, len(events)), label="handover before event")
    assert run(mode, events, stop_at) == run(mode, events, None)
