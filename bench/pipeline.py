"""Pipeline benchmark: readings through real daprd sidecars, RabbitMQ and Redis into the joiner.

    python bench/pipeline.py [--readings 20000] [--window 2s] [--grace 1s] [--runs bulk,event-time]
                             [--batch 100] [--await-ms 40] [--no-baseline] [--replicas 1,2,3]

Runs the suite of dapr.yaml on this machine (private brokers, free ports) once per run named in ``--runs``:

* ``single``: the poweruse Subscription's bulkSubscribe off, windows by processing time;
* ``bulk``: bulkSubscribe on (100), windows by processing time;
* ``event-time``: bulkSubscribe on, windows by event time: ``JOINER_TIME_FIELD=ts`` (epoch ms), grace
  ``--grace``. Both generators put ``"ts": $timestamp`` in their messages, in every run (so every run
  publishes the same JSON): the reading's own time, which replay finds in the data too, rather than the
  CloudEvent time, which the publisher's sidecar sets when it wraps the message (a publish retried after
  an outage would land in a later window).

poweruse-gen publishes N readings as fast as it can, in bulk publishes of ``--batch``; tenants-gen publishes
the five tenants every 200 ms. Then, in the same run, the physical reference: a private RabbitMQ server like the
one the suite uses, the same N readings published and consumed by aio-pika without Dapr
(bench/rabbit_baseline.py), confirms awaited per message (as Dapr's component does) and per batch of 100.
Dapr carries each reading in a CloudEvent (its JSON inside an envelope); the baseline sends the JSON alone.

Reported per run:

* events/s accepted by the joiner (readings accepted or filtered, from first to last, from its /stats), and
  its ratio to the baseline's msgs/s;
* latency p50/p99, from billable-proc's /stats: its receipt of a window's rows minus the moment the window
  could close at the earliest: its end in processing time, its end + grace in event time (the watermark, the
  highest event time seen minus grace, must pass the end); the event-time line also gives it from the end.
  Only windows that could close while readings came in count: before and after, an event-time window waits
  for the next tenant (every 200 ms) to move the watermark. Split in two: *to arrival* (close, join, the
  invocation through both sidecars, until billable-proc's route starts) and *billing* (billable-proc's own
  part: reading the rows, its record of billed calls in the state store);
* CPU used by each process during the run (from /proc), as a share of one core, and their sum.

``--replicas 1,2,3``: instead, for each run of ``--runs`` (``bulk`` unless given) one run per count, the
joiner as that many replicas (``Stack(joiner_replicas=N)``, docs/scaling.md), the baseline as above. Reported
per count: readings/s accepted (the sum over the replicas' /stats), latency from window end to billable-proc
(a window id now has a part per replica that sent one: its latency is when its **last** part was received),
parts per window, whether the rows are complete (billable-proc billed as many rows as the replicas made, with
no duplicate or conflict, and every reading was accepted or filtered), the load average, the CPU the rest of
the machine used meanwhile, and CPU-seconds per 1,000 readings per process kind (replicas summed, and per
replica), with each process's share of one core.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rabbit_baseline import run_baseline

from devstack.brokers import start_rabbitmq
from devstack.runfile import read_run_file
from devstack.stack import JOINER_APP_ID, Stack
from streaming_runtime.durations import parse_duration as duration
from streaming_runtime.expressions import compile_expression
from streaming_runtime.sidecar import dumps

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def resources_with_bulk(target: Path, bulk: bool, await_ms: int) -> Path:
    shutil.copytree(ROOT / "components", target)
    path = target / "subscriptions.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:
        if document["spec"]["topic"] == "poweruse":
            document["spec"]["bulkSubscribe"] = {
                "enabled": bulk,
                "maxMessagesCount": 100,
                "maxAwaitDurationMs": await_ms,
            }
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


def machine_busy() -> float:
    """CPU-seconds every core of the machine has spent busy since boot (everything but idle and iowait)."""
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


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


# name -> (bulkSubscribe on, windows by event time)
RUNS = {"single": (False, False), "bulk": (True, False), "event-time": (True, True)}


def expressions() -> tuple[list[dict], str, str]:
    """dapr.yaml's readings, and both generators' MESSAGE_EXPR with ``"ts": $timestamp`` in each message."""
    apps = {spec.app_id: spec for spec in read_run_file(ROOT / "dapr.yaml").apps}

    def stamped(app_id: str) -> tuple[list[dict], str]:
        elements = compile_expression(apps[app_id].env["MESSAGE_EXPR"], setting="MESSAGE_EXPR").evaluate(None, {})
        return elements, "[" + ", ".join("{" + json.dumps(e)[1:-1] + ', "ts": $timestamp}' for e in elements) + "]"

    readings, readings_expr = stamped("poweruse-gen")
    return readings, stamped("tenants-gen")[1], readings_expr


def run_once(name: str, args: argparse.Namespace, work: Path, replicas: int | None = None) -> dict:
    """One run; ``replicas``: the joiner as that many replicas (None: one joiner, as without --replicas)."""
    readings, window, grace = args.readings, args.window, args.grace
    bulk, event_time = RUNS[name]
    _, tenants_expr, readings_expr = expressions()
    joiner_env = {"JOINER_WINDOW_SIZE": f"{window:g}s"}
    if event_time:
        joiner_env |= {"JOINER_TIME_FIELD": "ts", "JOINER_TIME_FORMAT": "epoch_ms", "JOINER_GRACE": f"{grace:g}s"}
    overrides = {
        "join-tenants-poweruse": joiner_env,
        "tenants-gen": {"MESSAGE_DELAY": "200ms", "MESSAGE_EXPR": tenants_expr},
        "poweruse-gen": {
            "MESSAGE_DELAY": "0s",
            "MESSAGE_BATCH": str(args.batch),
            "MESSAGE_COUNT": str(readings),
            "MESSAGE_EXPR": readings_expr,
        },
    }
    if replicas is not None:
        return run_replicas(name, args, work, replicas, overrides)
    resources = resources_with_bulk(work / f"resources-{name}", bulk, args.await_ms)
    with Stack(ROOT / "dapr.yaml", work / f"run-{name}", overrides, quiet=True, resources=resources) as stack:
        joiner, proc = stack.apps["join-tenants-poweruse"], stack.apps["billable-proc"]
        pids = processes(stack)
        cpu_before = {process: cpu_seconds(pid) for process, pid in pids.items()}
        progress = follow_readings([joiner], readings)
        count, stats = progress.count, progress.stats[0]
        first_seen, first_wall, done_at, done_wall = (
            progress.first_seen,
            progress.first_wall,
            progress.done_at,
            progress.done_wall,
        )
        cpu = {process: cpu_seconds(pid) - cpu_before[process] for process, pid in pids.items()}
        # wait (bounded) until the window holding the last readings has reached billable-proc
        last_window_end = (time.time() // window + 1) * window
        end = time.monotonic() + 3 * window + grace + 10
        while time.monotonic() < end:
            received = proc.get("/stats").json()["windows"]
            if received and float(received[-1]["end"]) >= last_window_end:
                break
            time.sleep(0.1)
        windows = proc.get("/stats").json()["windows"]
    closes_after = grace if event_time else 0.0  # the earliest a window can close, after its end
    # windows that could close while readings came in: before and after, an event-time window waits for
    # the next tenant (every 200 ms) to move the watermark
    loaded = [w for w in windows if first_wall <= float(w["end"]) and float(w["end"]) + closes_after <= done_wall]
    from_end = sorted(w["received"] - float(w["end"]) for w in loaded)
    elapsed = (done_at or time.monotonic()) - (first_seen or time.monotonic())
    return {
        "mode": name,
        "readings": count,
        "complete": done_at is not None,
        "events_per_s": count / elapsed if elapsed > 0 else float("nan"),
        "elapsed": elapsed,
        "closes_after": closes_after,
        "latency": [t - closes_after for t in from_end],
        "from_end": from_end,
        "billing": sorted(w["received"] - w["arrived"] for w in loaded),
        "delivery": sorted(w["arrived"] - float(w["end"]) - closes_after for w in loaded),
        "all_windows": len(windows),
        "late": sum(stats.get("late", {}).values()),
        "cpu": cpu,
    }


@dataclass
class Progress:
    """How the joiners took the readings: their /stats at the end, when the first and the last came."""

    count: int = 0
    stats: list[dict] = field(default_factory=list)
    first_seen: float | None = None
    first_wall: float = math.inf
    done_at: float | None = None
    done_wall: float = math.inf


def follow_readings(joiners: list, readings: int) -> Progress:
    """Poll the joiners' /stats until they have taken ``readings`` readings (accepted or filtered, summed),
    or a deadline passes (then ``done_at`` is None)."""
    progress = Progress()
    deadline = time.monotonic() + max(120.0, readings / 100)
    while time.monotonic() < deadline:
        progress.stats = [joiner.get("/stats").json() for joiner in joiners]
        progress.count = sum(
            s["accepted"].get("poweruse", 0) + s["filtered"].get("poweruse", 0) for s in progress.stats
        )
        if progress.count and progress.first_seen is None:
            progress.first_seen, progress.first_wall = time.monotonic(), time.time()
        if progress.count >= readings:
            progress.done_at, progress.done_wall = time.monotonic(), time.time()
            break
        time.sleep(0.05)
    return progress


def run_replicas(name: str, args: argparse.Namespace, work: Path, replicas: int, overrides: dict) -> dict:
    """One run with the joiner as ``replicas`` replicas: readings shared, tenants to every replica."""
    readings, window, grace = args.readings, args.window, args.grace
    bulk, event_time = RUNS[name]
    resources = resources_with_bulk(work / f"resources-{name}-{replicas}", bulk, args.await_ms)
    run_dir = work / f"run-{name}-{replicas}"
    load_before = os.getloadavg()
    with Stack(
        ROOT / "dapr.yaml", run_dir, overrides, quiet=True, resources=resources, joiner_replicas=replicas
    ) as stack:
        joiners = [stack.apps[instance] for instance in stack.instances_of(JOINER_APP_ID)]
        proc = stack.apps["billable-proc"]
        pids = processes(stack)
        cpu_before = {process: cpu_seconds(pid) for process, pid in pids.items()}
        busy_before = machine_busy()
        progress = follow_readings(joiners, readings)
        count, stats = progress.count, progress.stats
        first_seen, first_wall, done_at, done_wall = (
            progress.first_seen,
            progress.first_wall,
            progress.done_at,
            progress.done_wall,
        )
        cpu = {process: cpu_seconds(pid) - cpu_before[process] for process, pid in pids.items()}
        busy = machine_busy() - busy_before
        load_during = os.getloadavg()
        # the window holding the last readings closes on every replica at its end (+ grace): after that the
        # replicas make no more rows, and the rows are complete once billable-proc has billed all they made
        last_window_end = (time.time() // window + 1) * window + (grace if event_time else 0.0)
        end = time.monotonic() + 3 * window + grace + 15
        made, billed = -1, {}
        while time.monotonic() < end:
            stats = [joiner.get("/stats").json() for joiner in joiners]
            made = sum(s["rows_made"] for s in stats)
            billed = proc.get("/stats").json()
            if time.time() > last_window_end + 0.5 and billed["rows"] == made:
                break
            time.sleep(0.1)
        billed = proc.get("/stats").json()
    closes_after = grace if event_time else 0.0
    # a window id has one part per replica that sent one: the window is there when its last part is
    last: dict[str, dict] = {}
    parts: dict[str, int] = {}
    for part in billed["windows"]:
        parts[part["id"]] = parts.get(part["id"], 0) + 1
        if part["id"] not in last or part["received"] > last[part["id"]]["received"]:
            last[part["id"]] = part
    loaded = [w for w in last.values() if first_wall <= float(w["end"]) and float(w["end"]) + closes_after <= done_wall]
    elapsed = (done_at or time.monotonic()) - (first_seen or time.monotonic())
    rows_complete = billed["rows"] == made and not billed["duplicates"] and not billed["conflicts"]
    return {
        "mode": name,
        "replicas": replicas,
        "readings": count,
        "complete": done_at is not None and rows_complete,
        "rows": (made, billed["rows"]),
        "events_per_s": count / elapsed if elapsed > 0 else float("nan"),
        "elapsed": elapsed,
        "closes_after": closes_after,
        "from_end": sorted(w["received"] - float(w["end"]) for w in loaded),
        "parts": sum(parts[w["id"]] for w in loaded) / len(loaded) if loaded else float("nan"),
        "windows": len(loaded),
        "all_windows": len(last),
        "late": sum(sum(s.get("late", {}).values()) for s in stats),
        "cpu": cpu,
        "load": (load_before[0], load_during[0]),
        "others": busy - sum(cpu.values()),  # CPU-seconds the machine spent outside the suite
    }


def kind(process: str) -> str:
    """A process's kind: a joiner replica's name (and its daprd's) without the replica's number."""
    for name in (JOINER_APP_ID, f"daprd {JOINER_APP_ID}"):
        if process.startswith(f"{name}-"):
            return name
    return process


def print_replicas(results: list[dict], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    print(
        f"{args.readings:,} readings in bulk publishes of {args.batch}, bulk deliveries of up to 100 or "
        f"{args.await_ms} ms; window {args.window:g}s; the joiner as N replicas (readings shared, tenants to "
        "each);\nlatency: from the window's end (+ grace in event time) to billable-proc's receipt of its LAST "
        f"part (one part per replica); windows: those that closed while readings came in / all; {cores} cores\n"
    )
    print(
        f"{'run':>10} | {'replicas':>8} | {'readings/s':>10} | {'p50 ms':>6} | {'p99 ms':>6} | parts/window | "
        "windows | rows made/billed | late | load 1m before/during | complete"
    )
    for r in results:
        made, billed = r["rows"]
        print(
            f"{r['mode']:>10} | {r['replicas']:>8} | {r['events_per_s']:>10,.0f} | "
            f"{quantile(r['from_end'], 0.5) * 1000:>6.0f} | {quantile(r['from_end'], 0.99) * 1000:>6.0f} | "
            f"{r['parts']:>12.2f} | {r['windows']:>3}/{r['all_windows']:<3} | {made:>7,}/{billed:<8,} | "
            f"{r['late']:>4} | {r['load'][0]:>10.2f} / {r['load'][1]:<10.2f} | {r['complete']}"
        )
    for r in results:
        per_1000 = 1000 / r["readings"] if r["readings"] else float("nan")
        kinds: dict[str, list[float]] = {}
        for process, seconds in r["cpu"].items():
            kinds.setdefault(kind(process), []).append(seconds)
        total = sum(r["cpu"].values())
        print(
            f"\nCPU-seconds per 1,000 readings, {r['mode']} run with {r['replicas']} replica(s) "
            f"({r['readings']:,} readings in {r['elapsed']:.1f}s; all processes {total * per_1000:.3f} s, "
            f"{total / r['elapsed']:.0%} of {cores} cores' {cores:.0%}; other processes of the machine "
            f"{r['others'] / r['elapsed']:.0%}); share of one core in brackets:"
        )
        for name, seconds in sorted(kinds.items(), key=lambda item: -sum(item[1])):
            each = (
                " (per replica " + ", ".join(f"{s * per_1000:.3f}" for s in seconds) + ")" if len(seconds) > 1 else ""
            )
            shares = "/".join(f"{s / r['elapsed']:.0%}" for s in seconds)
            print(f"  {name:<34} {sum(seconds) * per_1000:.3f} s{each} [{shares}]")


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of sorted ``values`` (nearest rank); NaN for none."""
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def baselines(readings: int, work: Path) -> list[dict]:
    """The same readings through a private RabbitMQ server with a native client, no Dapr."""
    elements, _, _ = expressions()
    now = int(time.time() * 1000)
    # the JSON poweruse-gen publishes: message n is element (n-1) mod len, with its epoch ms
    bodies = [dumps({**elements[n % len(elements)], "ts": now}) for n in range(readings)]
    broker = start_rabbitmq(work / "baseline")
    try:
        results = []
        for confirm in ("each", "batch"):
            assert broker.process is not None
            before = cpu_seconds(broker.process.pid)
            result = run_baseline(broker.url, bodies, confirm)
            result["rabbitmq_cpu"] = (cpu_seconds(broker.process.pid) - before) / result["elapsed"]
            results.append(result)
        return results
    finally:
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--window", type=duration, default=2.0, help="window length (Go duration, default 2s)")
    parser.add_argument("--grace", type=duration, default=1.0, help="event time's grace (default 1s)")
    parser.add_argument(
        "--runs", help=f"comma-separated, of {', '.join(RUNS)} (default bulk,event-time; with --replicas bulk)"
    )
    parser.add_argument("--batch", type=int, default=100, help="poweruse-gen's MESSAGE_BATCH (default 100)")
    parser.add_argument(
        "--await-ms", type=int, default=40, help="bulkSubscribe's maxAwaitDurationMs (default 40, as in components/)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the RabbitMQ baseline")
    parser.add_argument("--replicas", help="comma-separated joiner replica counts, a run each (e.g. 1,2,3)")
    args = parser.parse_args()
    runs = args.runs or ("bulk" if args.replicas else "bulk,event-time")
    names = [name.strip() for name in runs.split(",") if name.strip()]
    if unknown := [name for name in names if name not in RUNS]:
        parser.error(f"unknown run(s) {', '.join(unknown)}: expected {', '.join(RUNS)}")
    if args.replicas:
        counts = [count.strip() for count in args.replicas.split(",") if count.strip()]
        if not counts or not all(count.isdigit() and int(count) >= 1 for count in counts):
            parser.error(f"--replicas {args.replicas}: expected counts of 1 or more, comma-separated")
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            results = [run_once(name, args, Path(tmp), int(count)) for name in names for count in counts]
            references = [] if args.no_baseline else baselines(args.readings, Path(tmp))
        print_replicas(results, args)
        for b in references:
            print(
                f"\nRabbitMQ without Dapr (aio-pika, confirm {b['confirm']}): {b['msgs_per_s']:,.0f} msgs/s "
                f"(published {b['publish_per_s']:,.0f}/s; RabbitMQ {b['rabbitmq_cpu']:.0%} of a core)"
            )
        return 0 if all(r["complete"] for r in results) else 1
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        results = [run_once(name, args, Path(tmp)) for name in names]
        references = [] if args.no_baseline else baselines(args.readings, Path(tmp))
    print(
        f"{args.readings:,} readings in bulk publishes of {args.batch}, bulk deliveries of up to 100 or "
        f"{args.await_ms} ms; window {args.window:g}s, grace {args.grace:g}s (event time); latency = "
        "billable-proc receipt minus the earliest close: window end (processing time), end + grace (event time);\n"
        "to arrival / billing (p50 / p99 ms): the parts before billable-proc's route is called and in it (the record\n"
        "of billed calls); windows: those that could close"
        " while readings came in / all\n"
    )
    print(
        f"{'run':>10} | {'events/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'from':>8} | "
        f"{'p50/p99 from end':>16} | {'to arrival':>10} | {'billing':>8} | windows | late | complete"
    )
    for r in results:
        since = f"end+{r['closes_after']:g}s" if r["closes_after"] else "end"
        ends, delivery, billing = (
            f"{quantile(r[k], 0.5) * 1000:.0f} / {quantile(r[k], 0.99) * 1000:.0f}"
            for k in ("from_end", "delivery", "billing")
        )
        print(
            f"{r['mode']:>10} | {r['events_per_s']:>9,.0f} | {quantile(r['latency'], 0.5) * 1000:>7.0f} | "
            f"{quantile(r['latency'], 0.99) * 1000:>7.0f} | {since:>8} | {ends:>16} | {delivery:>10} | {billing:>8} | "
            f"{len(r['latency']):>3}/{r['all_windows']:<3} | {r['late']:>4} | {r['complete']}"
        )
    for b in references:
        ratios = ", ".join(f"{r['mode']} {r['events_per_s'] / b['msgs_per_s']:.2f}" for r in results)
        print(
            f"\nRabbitMQ without Dapr (aio-pika, confirm {b['confirm']}): {b['msgs_per_s']:,.0f} msgs/s "
            f"(published {b['publish_per_s']:,.0f}/s; RabbitMQ {b['rabbitmq_cpu']:.0%} of a core); "
            f"pipeline/baseline: {ratios}"
        )
    cores = os.cpu_count() or 1
    for r in results:
        busiest = sorted(r["cpu"].items(), key=lambda item: -item[1])
        share = ", ".join(f"{name} {seconds / r['elapsed']:.0%}" for name, seconds in busiest if r["elapsed"] > 0)
        total = sum(r["cpu"].values()) / r["elapsed"] if r["elapsed"] > 0 else float("nan")
        print(
            f"\nCPU during the {r['mode']} run (share of one core over {r['elapsed']:.1f}s; "
            f"sum {total:.0%} of {cores} cores' {cores:.0%}): {share}"
        )
    return 0 if all(r["complete"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
