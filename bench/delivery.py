"""Delivery benchmark: what one Dapr delivery costs inside the joiner, without network or sidecar.

    python bench/delivery.py [--deliveries 20000]

The joiner's ASGI app (lifespan run, the example's Joiner, a sink that records nothing) is called
directly with the requests daprd makes: a single CloudEvent reading, and a bulk delivery of 100.
Baseline, in the same app and the same run: the same handler behind a FastAPI route with the token
guard as a plain-function dependency, as the joiner had it before (FastAPI runs such a dependency in
a worker thread). Prints microseconds per delivery and the ratio baseline/joiner; the runs take turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _example_without_dedup() -> str:
    """The example's Joiner without dedup: every delivery here repeats the same ids, which dedup would drop
    unjoined (what dedup costs a delivery is a dictionary lookup per event)."""
    import tempfile

    import yaml

    document = yaml.safe_load((ROOT / "services" / "joiner" / "joiner.yaml").read_text())
    document["spec"].pop("dedup", None)
    path = Path(tempfile.mkdtemp(prefix="bench-delivery-")) / "joiner.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


os.environ.setdefault("JOINER_CONFIG", _example_without_dedup())

from fastapi import Depends, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from joiner.app import JoinerSettings, create_app  # noqa: E402
from streaming_runtime.service import read_limited  # noqa: E402
from streaming_runtime.settings import load_settings  # noqa: E402

READING = {"panel_id": 1, "tenant_id": "dc:eqix:us:chi1:12", "power_use": 1.05, "kwh_use": 1034}


class NoSink:
    async def invoke(self, *_: Any) -> None: ...
    async def publish(self, *_: Any) -> None: ...
    async def publish_event(self, *_: Any) -> None: ...


def cloudevent(n: int) -> dict:
    return {
        "specversion": "1.0",
        "id": f"r{n}",
        "source": "poweruse-gen",
        "type": "com.dapr.event.sent",
        "datacontenttype": "application/json",
        "topic": "poweruse",
        "pubsubname": "rabbit-stream",
        "data": READING,
    }


def bodies() -> dict[str, bytes]:
    bulk = {
        "id": "b",
        "topic": "poweruse",
        "pubsubname": "rabbit-stream",
        "type": "com.dapr.event.sent.bulk",
        "entries": [
            {"entryId": str(n), "event": cloudevent(n), "contentType": "application/cloudevents+json"}
            for n in range(100)
        ],
    }
    return {"single": json.dumps(cloudevent(0)).encode(), "bulk of 100": json.dumps(bulk).encode()}


def add_baseline_route(app: Any) -> None:
    """The handler as it was: an APIRoute with the guard as a plain-function dependency."""

    def guard(request: Request) -> None:  # what a sync dependency costs: FastAPI runs it in a thread
        request.headers.get("dapr-api-token")

    async def receive(request: Request) -> JSONResponse:
        joiner = app.state.joiner
        source = joiner.config.sources[1]
        return JSONResponse(joiner.ingest(source, await read_limited(request, joiner.max_body_bytes)))

    app.add_api_route("/baseline", receive, methods=["POST"], dependencies=[Depends(guard)])


async def call(app: Any, path: str, body: bytes, sent: list) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/cloudevents+json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    await app(scope, receive, send)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    app = create_app(load_settings(JoinerSettings), sink=NoSink())
    add_baseline_route(app)
    lifespan_in: asyncio.Queue = asyncio.Queue()
    lifespan_out: asyncio.Queue = asyncio.Queue()
    await lifespan_in.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_in.get, lifespan_out.put)
    )
    await lifespan_out.get()

    print(f"Python {sys.version.split()[0]}; µs per delivery, median of {args.rounds} rounds taking turns\n")
    print(f"{'delivery':>12} | {'joiner':>9} | {'baseline':>9} | baseline/joiner | answers")
    for name, body in bodies().items():
        count = args.deliveries if name == "single" else max(1, args.deliveries // 100)
        times: dict[str, list[float]] = {"/poweruse": [], "/baseline": []}
        answers: dict[str, set] = {path: set() for path in times}
        for _ in range(args.rounds):
            for path in times:
                sent: list = []
                started = time.perf_counter()
                for _ in range(count):
                    await call(app, path, body, sent)
                times[path].append((time.perf_counter() - started) / count * 1e6)
                answers[path] |= {bytes(b) for b in sent}
        joiner, baseline = statistics.median(times["/poweruse"]), statistics.median(times["/baseline"])
        same = answers["/poweruse"] == answers["/baseline"] and len(answers["/poweruse"]) == 1
        print(
            f"{name:>12} | {joiner:>9.1f} | {baseline:>9.1f} | {baseline / joiner:>15.2f} | {'same' if same else 'DIFFER'}"
        )
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan
    return 0


if __name__ == "__main__":
    import logging

    logging.disable(logging.INFO)  # a log line per window would be measured too
    sys.exit(asyncio.run(main()))
