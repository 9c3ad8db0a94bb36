"""Engine benchmark: one window of seed-shaped data joined three ways, measured in the same run.

    python bench/engine.py            # T=1,000/P=10,000 and T=10,000/P=100,000
    python bench/engine.py --large    # also T=10,000/P=1,000,000

Data (fixed seed): T tenants over T distinct tenant ids; P readings with a random tenant,
power_use uniform in [0.5, 1.5], the example's `where` and `select`. For each case:

  (a) naive   every pair through jsonata-python, as the original joiner did. A full run would take
              hours, so it is timed on a sample of pairs and extrapolated to T*P pairs (marked "~").
  (b) engine  this project's JoinEngine: events fed in arrival batches of 100, rows out. The engine
              is built once (start-up), each timed run is one window on a fresh state. Tenants
              arrive first, as in the example; the last case has the two streams interleaved (a
              tenant batch among every ten reading batches), where readings must be indexed too.
  (b') python the same engine with its arrival loop in generated Python instead of C (join_kernel):
              what the C loop adds.
  (c) duckdb  the same join, filter and projection in DuckDB from the same Python dicts, conversion
              to Arrow in and back to Python dicts out included (the connection is opened once).

It prints input events per second ((T+P) / seconds) and the ratios engine/naive and engine/duckdb,
and checks that (b) and (c) produce the same rows. A second table does the same for a `where` and
`select` outside the compiled subset (a function the compiler does not know).

A third table goes through the joiner's core (JoinCore.offer_many, batches of 100, as bulk deliveries
come) in processing time and in event time (grace 5 s, event times up to 4 s out of order, all in one
20 s window), from the same events: what placing each event in time costs on top of the join (the
target is event time within 15% of processing time, a ratio of at least 0.85), and the same rows.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from joiner.config import JoinerConfig, config_from_yaml  # noqa: E402
from joiner.core import JoinCore  # noqa: E402
from joiner.engine.join import JoinEngine, naive_join  # noqa: E402
from streaming_runtime.expressions import compile_expression  # noqa: E402

WHERE = "tenants.tenant_id == poweruse.tenant_id && poweruse.power_use >= 1.0"
SELECT = '{"customer_id": tenants.customer_id, "tenant_id": tenants.tenant_id, "tenant_kwh_usage": poweruse.kwh_use}'
# outside the compiled subset: $substringBefore / $contains are left to jsonata-python
WHERE_OUTSIDE = (
    'tenants.tenant_id = poweruse.tenant_id and poweruse.power_use >= 1.0 and $contains(poweruse.tenant_id, ":")'
)
SELECT_OUTSIDE = (
    '{"customer_id": tenants.customer_id, "site": $substringBefore(tenants.tenant_id, ":"), '
    '"tenant_kwh_usage": poweruse.kwh_use}'
)
DUCKDB_SQL = """
    SELECT t.customer_id, t.tenant_id, p.kwh_use AS tenant_kwh_usage
    FROM tenants t JOIN poweruse p ON t.tenant_id = p.tenant_id
    WHERE p.power_use >= 1.0
"""
STREAMS = ("tenants", "poweruse")
PYTHON_B, B_OVER_PYTHON = "python (b')", "b/b'"


def make_data(tenants: int, readings: int, seed: int = 7) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    tenant_rows = [
        {"tenant_id": f"dc:site{i % 97}:rack:{i}", "customer_id": rng.randrange(1, 5000)} for i in range(tenants)
    ]
    reading_rows = [
        {
            "panel_id": rng.randrange(1, 64),
            "tenant_id": tenant_rows[rng.randrange(tenants)]["tenant_id"],
            "power_use": round(rng.uniform(0.5, 1.5), 3),
            "kwh_use": rng.randrange(100, 2000),
        }
        for _ in range(readings)
    ]
    return tenant_rows, reading_rows


def timed(runs: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, Any]]:
    """Median seconds and last result of each run, over ``repeat`` rounds.

    The runs take turns within each round, so that whatever the machine does meanwhile (it is
    shared) weighs on all of them alike and their ratios hold. The collector is off while timing,
    as a service would tune it."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, Any] = {}
    for _ in range(repeat):
        for name, run in runs.items():
            results[name] = None  # free the previous run's output before the clock starts, not inside it
            gc.collect()
            gc.disable()
            started = time.perf_counter()
            results[name] = run()
            elapsed = time.perf_counter() - started
            gc.enable()
            times[name].append(elapsed)
    return {name: (statistics.median(times[name]), results[name]) for name in runs}


def make_engine(where: str, select: str, native: bool = True) -> JoinEngine:
    """Start-up (parse, plan, generate code) happens once per service, not per window: not timed."""
    return JoinEngine(
        STREAMS, compile_expression(where, setting="where"), compile_expression(select, setting="select"), native=native
    )


def arrival_batches(tenants: list[dict], readings: list[dict], interleaved: bool, size: int = 100) -> list[tuple]:
    """(stream index, start, stop) of each arrival batch, in batches as bulk delivery makes them.

    Tenants first (the example: tenants stream in, then readings), or interleaved in proportion."""
    first = [(0, start, start + size) for start in range(0, len(tenants), size)]
    second = [(1, start, start + size) for start in range(0, len(readings), size)]
    if not interleaved:
        return first + second
    every = max(1, len(second) // max(1, len(first)))
    order = []
    for n, batch in enumerate(second):
        if n % every == 0 and first:
            order.append(first.pop(0))
        order.append(batch)
    return order + first


def run_engine(engine: JoinEngine, tenants: list[dict], readings: list[dict], interleaved: bool = False) -> list[Any]:
    """One window: a fresh state, every event in, the rows out."""
    state = engine.new_state()
    streams = (tenants, readings)
    for index, start, stop in arrival_batches(tenants, readings, interleaved):
        engine.accept_many(state, index, [(d, None) for d in streams[index][start:stop]])
    return engine.result(state).rows


def run_duckdb(connection: Any, tenants: list[dict], readings: list[dict]) -> list[dict]:
    """One window in DuckDB (the connection is opened once, like the engine is built once)."""
    import pyarrow as pa

    connection.register("tenants", pa.Table.from_pylist(tenants))
    connection.register("poweruse", pa.Table.from_pylist(readings))
    rows = connection.sql(DUCKDB_SQL).to_arrow_table().to_pylist()
    connection.unregister("tenants")
    connection.unregister("poweruse")
    return rows


def naive_seconds(where: str, select: str, tenants: list[dict], readings: list[dict], sample_pairs: int) -> float:
    """Seconds the naive plan would take for every pair, from a timed sample of pairs."""
    w, s = compile_expression(where, setting="where"), compile_expression(select, setting="select")
    rng = random.Random(3)
    left = rng.sample(tenants, min(len(tenants), max(1, sample_pairs // 100)))
    right = rng.sample(readings, min(len(readings), max(1, sample_pairs // len(left))))
    # make the sample's match rate that of the full data: add the partners of the sampled readings
    started = time.perf_counter()
    result = naive_join(STREAMS, w, s, left, right)
    elapsed = time.perf_counter() - started
    per_pair = elapsed / result.pairs
    return per_pair * len(tenants) * len(readings)


WINDOW_START = 1_700_000_000.0  # a window of 20 s starts here (a multiple of 20)
CORE_YAML = f"""
window: 20s
stream:
  from: [tenants, poweruse]
  to: [{{component: billable-proc/billables}}]
  where: '{WHERE}'
  select: '{SELECT}'
"""
EVENT_TIME_YAML = CORE_YAML + "eventTime: {field: ts, grace: 5s}\n"


def with_times(events: list[dict], seed: int) -> list[dict]:
    """The events with a ``ts`` in one 20 s window, rising with their order, up to 4 s out of order."""
    rng = random.Random(seed)
    span = 15.0 / max(1, len(events))
    return [{**event, "ts": WINDOW_START + 4.5 + n * span - rng.uniform(0, 4)} for n, event in enumerate(events)]


def run_core(config: JoinerConfig, engine: JoinEngine, tenants: list[dict], readings: list[dict]) -> list[Any]:
    """The same window through JoinCore: batches of 100 (tenants first), then the window closes."""
    rows: list[Any] = []
    core = JoinCore(config, engine, on_window=lambda window, made: rows.extend(made), clock=lambda: WINDOW_START + 19)
    streams = (tenants, readings)
    for index, start, stop in arrival_batches(tenants, readings, interleaved=False):
        core.offer_many(index, [(data, None, None) for data in streams[index][start:stop]])
    core.flush()
    return rows


def core_table(repeat: int) -> bool:
    """Processing time against event time through the core; whether both made the rows the engine makes."""
    print("\nthrough the core (JoinCore.offer_many, batches of 100): processing time and event time")
    print(f"{'case':>30} | {'processing':>12} | {'event time':>12} | {'et/pt':>5} | rows  same")
    tenants, readings = make_data(10_000, 100_000)
    tenants, readings = with_times(tenants, 11), with_times(readings, 13)
    processing, event_time = config_from_yaml(CORE_YAML), config_from_yaml(EVENT_TIME_YAML)
    measured = timed(
        {
            "processing": functools.partial(run_core, processing, make_engine(WHERE, SELECT), tenants, readings),
            "event time": functools.partial(run_core, event_time, make_engine(WHERE, SELECT), tenants, readings),
        },
        repeat,
    )
    (pt_s, pt_rows), (et_s, et_rows) = measured.values()
    expected = canonical(run_engine(make_engine(WHERE, SELECT), tenants, readings))
    same = canonical(pt_rows) == canonical(et_rows) == expected
    print(
        f"{'T=10,000 P=100,000':>30} | {110_000 / pt_s:>10,.0f}/s | {110_000 / et_s:>10,.0f}/s | "
        f"{pt_s / et_s:>5.2f} | {len(et_rows):,} {'yes' if same else 'NO'}"
    )
    return same


def canonical(rows: list[dict]) -> Counter:
    return Counter(json.dumps(row, sort_keys=True) for row in rows)


def main() -> int:
    import duckdb

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="add T=10,000/P=1,000,000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sample-pairs", type=int, default=20_000)
    args = parser.parse_args()

    cases = [(1_000, 10_000, False), (10_000, 100_000, False)] + ([(10_000, 1_000_000, False)] if args.large else [])
    cases.append((10_000, 100_000, True))
    print(f"Python {sys.version.split()[0]}; median of {args.repeat} runs; events/s = (T+P)/seconds\n")
    header = (
        f"{'case':>30} | {'naive (a)':>13} | {'engine (b)':>12} | {PYTHON_B:>12} | {'duckdb (c)':>12} | "
        f"{'b/a':>9} | {B_OVER_PYTHON:>5} | {'b/c':>5} | rows  same"
    )
    print(f"example where/select (compiled); arrival loop: {make_engine(WHERE, SELECT).describe().split('loop: ')[1]}")
    print(header)
    failures = 0
    for tenants_count, readings_count, interleaved in cases:
        tenants, readings = make_data(tenants_count, readings_count)
        events = tenants_count + readings_count
        naive = naive_seconds(WHERE, SELECT, tenants, readings, args.sample_pairs)
        engine = make_engine(WHERE, SELECT)
        python = make_engine(WHERE, SELECT, native=False)
        connection = duckdb.connect()
        measured = timed(
            {
                "engine": functools.partial(run_engine, engine, tenants, readings, interleaved),
                "python": functools.partial(run_engine, python, tenants, readings, interleaved),
                "duckdb": functools.partial(run_duckdb, connection, tenants, readings),
            },
            args.repeat,
        )
        connection.close()
        (engine_s, engine_rows), (python_s, python_rows), (duck_s, duck_rows) = measured.values()
        same = canonical(engine_rows) == canonical(duck_rows) == canonical(python_rows)
        failures += not same
        print(
            f"{f'T={tenants_count:,} P={readings_count:,}' + (' interleaved' if interleaved else ''):>30} | "
            f"~{events / naive:>10,.0f}/s | "
            f"{events / engine_s:>10,.0f}/s | {events / python_s:>10,.0f}/s | {events / duck_s:>10,.0f}/s | "
            f"{naive / engine_s:>8,.0f}x | {python_s / engine_s:>5.2f} | {duck_s / engine_s:>5.2f} | "
            f"{len(engine_rows):,} {'yes' if same else 'NO'}"
        )
    print("\nwhere/select outside the compiled subset ($contains, $substringBefore)")
    print(f"{'case':>30} | {'naive (a)':>13} | {'engine (b)':>12} | {'b/a':>9} | rows")
    tenants, readings = make_data(10_000, 100_000)
    naive = naive_seconds(WHERE_OUTSIDE, SELECT_OUTSIDE, tenants, readings, args.sample_pairs // 4)
    # a fresh engine per run: the memo of the parts jsonata-python evaluates must start empty
    engine_s, rows = timed(
        {"outside": lambda: run_engine(make_engine(WHERE_OUTSIDE, SELECT_OUTSIDE), tenants, readings)},
        max(1, args.repeat // 2),
    )["outside"]
    print(
        f"{'T=10,000 P=100,000':>30} | ~{110_000 / naive:>10,.0f}/s | {110_000 / engine_s:>10,.0f}/s | "
        f"{naive / engine_s:>8,.0f}x | {len(rows):,}"
    )
    failures += not core_table(args.repeat)
    print("\n~ extrapolated from a timed sample of pairs (a full naive run would take hours)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
