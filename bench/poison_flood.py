"""Poison flood: what a flood of poison costs the joiner, against the same number of good events.

    .venv/bin/python bench/poison_flood.py [--requests 20000]

The joiner runs as it is deployed (``python -m joiner``: uvicorn, the example's Joiner with the end-to-end
settings: a 2 s window, rows to billable-proc and to redis-stream/billables) in a process of its own,
without a sidecar: with no state store it needs none to start, and the readings sent here pair with no
tenant, so it never calls one. Requests go straight to its /poweruse route as daprd makes them (single
CloudEvents, application/cloudevents+json, one keep-alive connection, one at a time).

In one run: a warm-up of 200 good readings, then N poison requests of five kinds taking turns (a CloudEvent
whose ``time`` is a number, data with a lone surrogate, a number 1e400, data nested 5,000 deep, a body that
is not JSON), then N good readings, the baseline. Printed: the joiner's RSS (VmRSS from /proc) and its log's
size before and after each half of each phase, microseconds per request and requests per second, log bytes
per request, per kind of poison too, the ratios poison/good, and what /stats counted (every poison request
dropped, every good reading accepted).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

from devstack.processes import Process, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
READING = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": 1.05, "kwh_use": 1034}
WARM_UP = 200
ID = b"@ID@"  # where each request's CloudEvent id goes


def cloudevent(data_text: str, **attributes) -> bytes:
    """A CloudEvent as daprd delivers it, ``data_text`` written into it as it is (raw JSON text)."""
    envelope = {
        "specversion": "1.0",
        "id": ID.decode(),
        "source": "bench",
        "type": "com.dapr.event.sent",
        "datacontenttype": "application/json",
        "topic": "poweruse",
        "pubsubname": "rabbit-stream",
        "time": "2026-01-01T00:00:00Z",
        **attributes,
        "data": None,
    }
    text = json.dumps(envelope)
    assert text.endswith('"data": null}')
    return (text[: -len("null}")] + data_text + "}").encode()


def reading_with(field: str, value_text: str) -> str:
    text = json.dumps({**READING, field: None})
    return text.replace(f'"{field}": null', f'"{field}": {value_text}')


GOOD = cloudevent(json.dumps(READING))
POISON = {
    "time is a number": cloudevent(json.dumps(READING), time=12),
    "lone surrogate": cloudevent(reading_with("note", '"\\ud800"')),
    "1e400": cloudevent(reading_with("kwh_use", "1e400")),
    "nested 5,000 deep": cloudevent(reading_with("kwh_use", "[" * 5000 + "]" * 5000)),
    "not JSON": b"not json: @ID@ " + b"x" * 100,
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Joiner:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith(("JOINER_", "DAPR_"))}
        env.update(
            {
                "JOINER_CONFIG": str(ROOT / "services" / "joiner" / "joiner.yaml"),
                "JOINER_WINDOW_SIZE": "2s",
                "JOINER_STREAM_TO_COMPONENT": "billable-proc/billables",
                "JOINER_STREAM_TO_STREAM": "redis-stream/billables",
                "APP_ID": "join-tenants-poweruse",
                "APP_PORT": str(self.port),
                "DAPR_HTTP_PORT": str(free_port()),  # nothing listens there: no call is made
                "DAPR_GRPC_PORT": str(free_port()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.log = work / "joiner.log"
        self.process = Process(
            "joiner", [sys.executable, "-m", "joiner"], self.log, env=env, cwd=ROOT / "services" / "joiner"
        ).start()
        wait_until(self._answers, 30, "the joiner", alive=self.process.death)
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def post(self, body: bytes) -> bytes:
        self.connection.request(
            "POST", "/poweruse", body=body, headers={"content-type": "application/cloudevents+json"}
        )
        answer = self.connection.getresponse()
        content = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"/poweruse answered {answer.status}: {content[:200]!r}")
        return content

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def rss(self) -> int:
        return rss_kib(self.process.pid)

    def log_bytes(self) -> int:
        return self.log.stat().st_size

    def log_text(self, start: int, end: int) -> str:
        with self.log.open("rb") as log:
            log.seek(start)
            return log.read(end - start).decode(errors="replace").strip()

    def stop(self) -> None:
        self.connection.close()
        self.process.stop()


class Phase:
    """N requests; RSS and log size at the start, halfway and the end; time and log bytes per kind."""

    def __init__(self, name: str, joiner: Joiner) -> None:
        self.name = name
        self.joiner = joiner
        self.marks: list[tuple[int, int, int]] = []  # (requests so far, RSS KiB, log bytes)
        self.seconds = 0.0
        self.count = 0
        self.answers: defaultdict[bytes, int] = defaultdict(int)
        self.kind_seconds: defaultdict[str, float] = defaultdict(float)
        self.kind_log: defaultdict[str, int] = defaultdict(int)
        self.kind_count: defaultdict[str, int] = defaultdict(int)
        self.kind_line: dict[str, str] = {}  # what the joiner logged for the first request of each kind

    def mark(self) -> None:
        self.marks.append((self.count, self.joiner.rss(), self.joiner.log_bytes()))

    def run(self, bodies: list[tuple[str, bytes]], count: int) -> None:
        self.mark()
        log_at = self.joiner.log_bytes()
        for n in range(count):
            kind, template = bodies[n % len(bodies)]
            body = template.replace(ID, f"{self.name}-{n}".encode())
            started = time.perf_counter()
            answer = self.joiner.post(body)
            elapsed = time.perf_counter() - started
            self.seconds += elapsed
            self.count += 1
            self.answers[answer] += 1
            log_now = self.joiner.log_bytes()
            if kind not in self.kind_line:
                self.kind_line[kind] = self.joiner.log_text(log_at, log_now)
            self.kind_seconds[kind] += elapsed
            self.kind_log[kind] += log_now - log_at
            self.kind_count[kind] += 1
            log_at = log_now
            if self.count == count // 2:
                self.mark()
        self.mark()

    @property
    def us_per_request(self) -> float:
        return self.seconds / self.count * 1e6

    @property
    def log_per_request(self) -> float:
        return (self.marks[-1][2] - self.marks[0][2]) / self.count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poison-flood-") as work:
        joiner = Joiner(Path(work))
        try:
            return run(joiner, args.requests)
        finally:
            joiner.stop()


def run(joiner: Joiner, requests: int) -> int:
    started_rss, started_log = joiner.rss(), joiner.log_bytes()
    warm = Phase("warm", joiner)
    warm.run([("good", GOOD)], WARM_UP)
    poison = Phase("poison", joiner)
    poison.run(list(POISON.items()), requests)
    good = Phase("good", joiner)
    good.run([("good", GOOD)], requests)
    stats = joiner.stats()

    print(
        f"Python {sys.version.split()[0]}; joiner pid {joiner.process.pid} (python -m joiner, no sidecar), "
        f"POST /poweruse one at a time on one connection\n"
    )
    print(
        f"joiner at start: RSS {started_rss / 1024:.1f} MiB, log {started_log:,} bytes; "
        f"after {WARM_UP} good readings (warm-up): RSS {warm.marks[-1][1] / 1024:.1f} MiB, log {warm.marks[-1][2]:,} bytes\n"
    )
    print(
        f"{'phase':>16} | {'requests':>8} | {'RSS before → half → after (MiB)':>31} | {'log bytes before → after':>26} | "
        f"{'µs/req':>7} | {'req/s':>6} | {'log B/req':>9}"
    )
    for phase, label in ((poison, "poison (5 kinds)"), (good, "good (baseline)")):
        (_, rss0, log0), (_, rss1, _), (_, rss2, log2) = phase.marks
        print(
            f"{label:>16} | {phase.count:>8,} | {rss0 / 1024:>8.1f} → {rss1 / 1024:>6.1f} → {rss2 / 1024:>7.1f} | "
            f"{log0:>11,} → {log2:>11,} | {phase.us_per_request:>7.0f} | {1e6 / phase.us_per_request:>6.0f} | "
            f"{phase.log_per_request:>9.1f}"
        )
    print("\nper kind of poison:")
    for kind in POISON:
        count = poison.kind_count[kind]
        print(
            f"{kind:>20}: {count:>6,} requests, {poison.kind_seconds[kind] / count * 1e6:>6.0f} µs/req, "
            f"{poison.kind_log[kind] / count:>6.1f} log bytes/req, body {len(POISON[kind]):,} bytes"
        )
        line = poison.kind_line[kind].partition("reason=")[2] or poison.kind_line[kind] or "(nothing logged)"
        print(f"{'':>22}reason logged: {line[:110]}{'…' if len(line) > 110 else ''}")
    log_ratio = poison.log_per_request / good.log_per_request if good.log_per_request else float("inf")
    print(
        f"\nratio poison/good: time per request {poison.us_per_request / good.us_per_request:.2f}, "
        f"log bytes per request {log_ratio:.0f}"
        f" ({poison.log_per_request:.1f} vs {good.log_per_request:.2f}: good readings log only the window lines)"
    )

    dropped = stats["dropped"].get("poweruse", 0)
    accepted = stats["accepted"].get("poweruse", 0)
    answers_ok = dict(poison.answers) == {b'{"status":"DROP"}': requests} and dict(good.answers) == {
        b'{"status":"SUCCESS"}': requests
    }
    print(
        f"\n/stats: dropped {stats['dropped']} (expected {requests:,}: {'yes' if dropped == requests else 'NO'}), "
        f"accepted {stats['accepted']} (expected {WARM_UP + requests:,} good readings: "
        f"{'yes' if accepted == WARM_UP + requests else 'NO'}), unexpected_errors {stats['unexpected_errors']}"
    )
    print(
        f"answers: poison { {k.decode(): v for k, v in poison.answers.items()} }, "
        f"good { {k.decode(): v for k, v in good.answers.items()} }"
    )
    ok = dropped == requests and accepted == WARM_UP + requests and stats["unexpected_errors"] == 0 and answers_ok
    print("result:", "OK" if ok else "UNEXPECTED COUNTS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
