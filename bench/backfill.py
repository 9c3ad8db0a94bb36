"""Backfill benchmark: ``python -m joiner replay`` against DuckDB, the same windowed join over the same files.

    python bench/backfill.py            # 10,000 tenants x 10 windows + 2,000,000 readings (about 230 MB)
    python bench/backfill.py --small    # 1,000 tenants x 10 windows + 100,000 readings (a quick run)

Data (fixed seed), written as JSON lines into a temporary folder: the example's fields (tenants
``tenant_id``, ``customer_id``; readings ``panel_id``, ``tenant_id``, ``power_use`` uniform in [0.5, 1.5],
``kwh_use``) and an event time ``ts`` (epoch seconds, milliseconds in the fraction). Every tenant is
re-sent in each of the 10 windows of 20 s, in the window's first 2 s; the readings fall uniformly over
the windows, each with a random tenant. Each file is in event-time order, so no event is late.

The join is the example's (``where`` and ``select`` of services/joiner/joiner.yaml), per event-time
window of 20 s (5 s of grace), each contender in a process of its own, timed from its start to its end,
the files read once just before it (so that both find them in the page cache):

  replay  ``python -m joiner replay`` (one core): one JSON line per window on stdout, into a file.
  duckdb  ``read_json_auto`` of both files, the same join per window (``floor(ts / 20)``), ``where`` and
          ``select`` in SQL, the rows written as JSON lines by ``COPY ... (FORMAT JSON)``; DuckDB uses
          every core (two here).

  reading  the replay with the core's ``offer_runs`` answering ACCEPTED without joining: reading, decoding
          (msgspec), the checks, the merge and the batches alone; what any replay that decodes each line
          into Python objects pays before it joins anything (its floor).
  start-up  the replay of two empty files: its imports, the configuration and the engine's generated code.

It prints events/s (input lines / seconds) of each, the ratio replay/duckdb, the peak memory of each
process (ru_maxrss, from os.wait4) and whether the rows agree: per window, the same rows as many times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WINDOW, GRACE, WINDOWS = 20, 5, 10
START = 1_700_000_000  # a multiple of the window: window k is [START + 20k, START + 20(k+1))
TENANT_SPREAD = 2.0  # seconds at the start of each window over which the tenants are re-sent

# what the DuckDB process runs; argv: the tenants file, the readings file, the output file, window seconds
DUCKDB_CHILD = """
import sys, duckdb
tenants, poweruse, out, window = sys.argv[1:5]
duckdb.sql(f'''
    COPY (
        SELECT floor(p.ts / {window}) * {window} AS window_start,
               t.customer_id, t.tenant_id, p.kwh_use AS tenant_kwh_usage
        FROM read_json_auto('{tenants}') t
        JOIN read_json_auto('{poweruse}') p
          ON floor(t.ts / {window}) = floor(p.ts / {window}) AND t.tenant_id = p.tenant_id
        WHERE p.power_use >= 1.0
    ) TO '{out}' (FORMAT JSON)
''')
"""

# the replay without its join (argv: the replay's arguments): the floor of reading the files into the core
READING_CHILD = """
import sys
from joiner.core import ACCEPTED, JoinCore
JoinCore.offer_runs = lambda self, runs: [[ACCEPTED] * len(entries) for _, entries in runs]
from joiner.__main__ import main
sys.argv = ["joiner", "replay", *sys.argv[1:]]
main()
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_bytes: int


def config_text() -> str:
    """The example's join (its where and select) in event time, as a replay needs it."""
    spec = yaml.safe_load((ROOT / "services" / "joiner" / "joiner.yaml").read_text())["spec"]
    return yaml.safe_dump(
        {
            "window": f"{WINDOW}s",
            "eventTime": {"field": "ts", "grace": f"{GRACE}s"},
            "stream": {
                "from": ["tenants", "poweruse"],
                "to": [{"component": "billable-proc/billables"}],
                "select": spec["stream"]["select"],
                "where": spec["stream"]["where"],
            },
        },
        sort_keys=False,
    )


def write_data(folder: Path, tenants: int, readings: int, seed: int = 7) -> tuple[Path, Path]:
    """tenants.jsonl and poweruse.jsonl, each in event-time order (the lines as json.dumps writes them)."""
    rng = random.Random(seed)
    ids = [f"dc:site{i % 97}:rack:{i}" for i in range(tenants)]
    customers = [rng.randrange(1, 5000) for _ in range(tenants)]
    tenant_path, reading_path = folder / "tenants.jsonl", folder / "poweruse.jsonl"
    with tenant_path.open("w") as out:
        for window in range(WINDOWS):
            base = (START + window * WINDOW) * 1000  # milliseconds
            times = sorted(base + rng.randrange(int(TENANT_SPREAD * 1000)) for _ in range(tenants))
            order = rng.sample(range(tenants), tenants)
            out.writelines(
                f'{{"ts": {ms / 1000!r}, "tenant_id": "{ids[i]}", "customer_id": {customers[i]}}}\n'
                for ms, i in zip(times, order)
            )
    per_window = readings // WINDOWS
    with reading_path.open("w") as out:
        for window in range(WINDOWS):
            base = (START + window * WINDOW) * 1000
            count = per_window + (readings % WINDOWS if window == WINDOWS - 1 else 0)
            times = sorted(base + rng.randrange(WINDOW * 1000) for _ in range(count))
            out.writelines(
                f'{{"ts": {ms / 1000!r}, "panel_id": {rng.randrange(1, 64)}, '
                f'"tenant_id": "{ids[rng.randrange(tenants)]}", "power_use": {round(rng.uniform(0.5, 1.5), 3)!r}, '
                f'"kwh_use": {rng.randrange(100, 2000)}}}\n'
                for ms in times
            )
    return tenant_path, reading_path


def warm(*paths: Path) -> None:
    """Read the files once: each contender finds them in the page cache (this machine reclaims cold pages)."""
    for path in paths:
        with path.open("rb") as data:
            while data.read(1 << 24):
                pass


def run_child(command: list[str], stdout: Path) -> Run:
    """Wall time and peak resident memory of one child process; it must succeed."""
    with stdout.open("wb") as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{command[:4]} exited {child.returncode}:\n{err.read().decode()[-2000:]}")
    return Run(seconds, usage.ru_maxrss * 1024)  # kilobytes on Linux


def replay_rows(path: Path) -> dict[float, Counter]:
    windows: dict[float, Counter] = {}
    with path.open("rb") as lines:
        for line in lines:
            window = json.loads(line)
            start = datetime.fromisoformat(window["window_start"].replace("Z", "+00:00")).timestamp()
            rows = windows.setdefault(start, Counter())
            rows.update((r["customer_id"], r["tenant_id"], r["tenant_kwh_usage"]) for r in window["rows"])
    return windows


def duckdb_rows(path: Path) -> dict[float, Counter]:
    windows: dict[float, Counter] = {}
    with path.open("rb") as lines:
        for line in lines:
            r = json.loads(line)
            windows.setdefault(float(r["window_start"]), Counter())[
                (r["customer_id"], r["tenant_id"], r["tenant_kwh_usage"])
            ] += 1
    return windows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="1,000 tenants and 100,000 readings")
    parser.add_argument("--tenants", type=int, help="tenants per window (default 10,000; 1,000 with --small)")
    parser.add_argument("--readings", type=int, help="readings in all (default 2,000,000; 100,000 with --small)")
    args = parser.parse_args()
    tenants = args.tenants or (1_000 if args.small else 10_000)
    readings = args.readings or (100_000 if args.small else 2_000_000)

    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as temp:
        folder = Path(temp)
        tenant_path, reading_path = write_data(folder, tenants, readings)
        events = tenants * WINDOWS + readings
        size = tenant_path.stat().st_size + reading_path.stat().st_size
        config = folder / "joiner.yaml"
        config.write_text(config_text())
        print(
            f"Python {sys.version.split()[0]}; {tenants:,} tenants x {WINDOWS} windows + {readings:,} readings "
            f"= {events:,} events, {size / 1e6:,.0f} MB of JSON lines; window {WINDOW}s by ts, grace {GRACE}s\n"
        )
        replay_out, duck_out = folder / "replay.jsonl", folder / "duckdb.jsonl"
        warm(tenant_path, reading_path)
        arguments = [
            "--config",
            str(config),
            "--input",
            f"tenants={tenant_path}",
            "--input",
            f"poweruse={reading_path}",
        ]
        replay = run_child([sys.executable, "-m", "joiner", "replay", *arguments], replay_out)
        warm(tenant_path, reading_path)
        reading = run_child([sys.executable, "-c", READING_CHILD, *arguments], folder / "reading.jsonl")
        empty = [folder / "no-tenants.jsonl", folder / "no-poweruse.jsonl"]
        for path in empty:
            path.touch()
        start = run_child(
            [sys.executable, "-m", "joiner", "replay", "--config", str(config)]
            + ["--input", f"tenants={empty[0]}", "--input", f"poweruse={empty[1]}"],
            folder / "start.jsonl",
        )
        warm(tenant_path, reading_path)
        duck = run_child(
            [sys.executable, "-c", DUCKDB_CHILD, str(tenant_path), str(reading_path), str(duck_out), str(WINDOW)],
            folder / "duckdb.stdout",
        )
        ours, theirs = replay_rows(replay_out), duckdb_rows(duck_out)
    same = ours == theirs
    rows = sum(sum(counter.values()) for counter in ours.values())
    print(f"{'':>8} | {'seconds':>8} | {'events/s':>10} | {'peak memory':>11}")
    for name, run in (("replay", replay), ("reading", reading), ("start-up", start), ("duckdb", duck)):
        rate = f"{events / run.seconds:>10,.0f}" if run is not start else f"{'':>10}"
        print(f"{name:>8} | {run.seconds:>8.2f} | {rate} | {run.peak_bytes / 2**20:>7,.0f} MiB")
    print(
        f"\nreplay/duckdb: {duck.seconds / replay.seconds:.2f}x the events/s, "
        f"{replay.peak_bytes / duck.peak_bytes:.2f}x the peak memory"
    )
    print(
        f"reading alone (the replay without its join): {reading.seconds / replay.seconds:.2f} of the replay's "
        f"time, {duck.seconds / reading.seconds:.2f}x DuckDB's events/s; after start-up "
        f"({start.seconds:.2f} s), reading takes {(reading.seconds - start.seconds) / duck.seconds:.2f}x "
        f"DuckDB's whole time"
    )
    print(f"rows: {rows:,} in {len(ours)} windows; same rows per window as DuckDB: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
