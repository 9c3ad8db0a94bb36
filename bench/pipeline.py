"""Pipeline benchmark: readings through real daprd sidecars, RabbitMQ and Redis into the joiner.

    python bench/pipeline.py [--readings 20000] [--window 2s]

Runs the suite of dapr.yaml twice on this machine (private brokers, free ports): once with the
poweruse Subscription's bulkSubscribe off, once on. poweruse-gen publishes N readings as fast as it
can, in bulk publishes of 100 (so the producer is not the limit); tenants-gen publishes the five
tenants every 200 ms. Reported per run:

* events/s accepted by the joiner (readings accepted or filtered, from first to last, from its /stats);
* latency from a window's end to billable-proc receiving its rows (p50, p99, from billable-proc's /stats);
* CPU seconds used by each process during the run (from /proc), to show which one is the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def resources_with_bulk(target: Path, bulk: bool) -> Path:
    shutil.copytree(ROOT / "components", target)
    path = target / "subscriptions.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:
        if document["spec"]["topic"] == "poweruse":
            document["spec"]["bulkSubscribe"] = {"enabled": bulk, "maxMessagesCount": 100, "maxAwaitDurationMs": 40}
    path.write_text(yaml.safe_dump_all(documents))
    return target


def cpu_seconds(pid: int | None) -> float:
    """User+system CPU of a process and its waited-for children (rabbitmq-server's beam runs as a child)."""
    if pid is None:
        return 0.0
    total = 0.0
    for proc in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICKS
        except (OSError, IndexError, ValueError):
            pass
    return total


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
                    found += children(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def processes(stack: Stack) -> dict[str, int | None]:
    named = {
        "redis": stack.redis.process.pid if stack.redis.process else None,
        "rabbitmq": stack.rabbitmq.process.pid if stack.rabbitmq.process else None,
    }
    for app_id, running in stack.apps.items():
        named[app_id] = running.app.pid
        named[f"daprd {app_id}"] = running.sidecar.pid
    return named


def run_once(bulk: bool, readings: int, window: str, work: Path) -> dict:
    overrides = {
        "join-tenants-poweruse": {"JOINER_WINDOW_SIZE": window},
        "tenants-gen": {"MESSAGE_DELAY": "200ms"},
        "poweruse-gen": {"MESSAGE_DELAY": "0s", "MESSAGE_BATCH": "100", "MESSAGE_COUNT": str(readings)},
    }
    resources = resources_with_bulk(work / f"resources-{'bulk' if bulk else 'single'}", bulk)
    run_dir = work / f"run-{'bulk' if bulk else 'single'}"
    with Stack(ROOT / "dapr.yaml", run_dir, overrides, quiet=True, resources=resources) as stack:
        joiner, proc = stack.apps["join-tenants-poweruse"], stack.apps["billable-proc"]
        pids = processes(stack)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        first_seen = done_at = None
        count = 0
        deadline = time.monotonic() + max(120.0, readings / 100)
        while time.monotonic() < deadline:
            stats = joiner.get("/stats").json()
            count = stats["accepted"].get("poweruse", 0) + stats["filtered"].get("poweruse", 0)
            if count and first_seen is None:
                first_seen = time.monotonic()
            if count >= readings:
                done_at = time.monotonic()
                break
            time.sleep(0.05)
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        # wait (bounded) until the window holding the last readings has reached billable-proc
        last_window_end = time.time() // float(window.rstrip("s")) * float(window.rstrip("s")) + float(
            window.rstrip("s")
        )
        end = time.monotonic() + 3 * float(window.rstrip("s")) + 10
        while time.monotonic() < end:
            received = proc.get("/stats").json()["windows"]
            if received and float(received[-1]["end"]) >= last_window_end:
                break
            time.sleep(0.1)
        windows = proc.get("/stats").json()["windows"]
    latencies = sorted(w["received"] - float(w["end"]) for w in windows)
    elapsed = (done_at or time.monotonic()) - (first_seen or time.monotonic())
    return {
        "mode": "bulk" if bulk else "single",
        "readings": count,
        "complete": done_at is not None,
        "events_per_s": count / elapsed if elapsed > 0 else float("nan"),
        "elapsed": elapsed,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
        "windows": len(latencies),
        "cpu": cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--window", default="2s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        results = [run_once(bulk, args.readings, args.window, Path(tmp)) for bulk in (False, True)]
    single = results[0]["events_per_s"]
    print(f"{args.readings:,} readings, window {args.window}; latency = billable-proc receipt minus window end\n")
    print(f"{'delivery':>8} | {'events/s':>9} | {'vs single':>9} | {'p50 ms':>7} | {'p99 ms':>7} | windows | complete")
    for r in results:
        print(
            f"{r['mode']:>8} | {r['events_per_s']:>9,.0f} | {r['events_per_s'] / single:>8.2f}x | "
            f"{r['p50'] * 1000:>7.0f} | {r['p99'] * 1000:>7.0f} | {r['windows']:>7} | {r['complete']}"
        )
    for r in results:
        busiest = sorted(r["cpu"].items(), key=lambda item: -item[1])
        share = ", ".join(f"{name} {seconds / r['elapsed']:.0%}" for name, seconds in busiest[:5] if r["elapsed"] > 0)
        print(f"\nCPU during the {r['mode']} run (share of one core over {r['elapsed']:.1f}s): {share}")
    return 0 if all(r["complete"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
