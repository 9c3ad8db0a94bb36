"""Crash-safe windows (``state: {store: ..., journal: true}``): a write-ahead journal of deliveries and a
checkpoint of the processor, both in the Dapr state store.

Without it the joiner acknowledges each event on receipt and keeps it in memory only, so a crash (SIGKILL,
OOM kill, node loss) loses its open windows. With it:

* Every delivery is taken in by the processor first (synchronously, at one clock reading), then its body is
  written to the journal (``journal.<run>.<seq>``: a header line ``{"s": stream, "a": arrival}`` and the body
  as delivered), and only then answered. If the write fails, the answer is RETRY: daprd delivers it again
  and dedup (required) recognises the events already taken, while the redelivery is journaled.
* After each window is delivered, a checkpoint (``checkpoint``, in parts like the handover) saves what the
  processor holds (its handover snapshot) with the windows not delivered yet, and the journal sequence it
  covers; the journal segments it covers are then deleted. The journal holds about a window of deliveries.
* A start after a crash restores the checkpoint and replays the journal after it, in order, each delivery
  at its recorded arrival time, through the same code as live deliveries: the same windows, the same rows,
  the same window ids. Windows already delivered before the crash are delivered again, and billable-proc
  (whose record of billed calls is durable) takes them for retries.

A graceful stop still hands its windows over (``open-windows``); the journal and the checkpoint are then
removed, and a start that finds a handover ignores them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from joiner.claims import Turns
from streaming_runtime.sidecar import SidecarError, SidecarPort

log = logging.getLogger("joiner")
RUNS_KEY = "journal.runs"
CHECKPOINT_KEY = "checkpoint"
PART_BYTES = 3 * 1024 * 1024  # under daprd's default request limit (4 MiB)
PROBE = 64  # segments read at a time when replaying; a gap (a failed write) shorter than this is passed over


def segment_key(run: str, seq: int, part: int = 0) -> str:
    return f"journal.{run}.{seq}" + (f".{part}" if part else "")


class Journal:
    def __init__(self, sink: SidecarPort, store: str) -> None:
        self.sink = sink
        self.store = store
        self.run = str(time.time_ns())
        self.next_seq = 0
        self.turns = Turns()  # which deliveries are taken in: a checkpoint covers those before turns.next
        self.written: dict[int, int] = {}  # seq -> parts, of this run's segments in the store
        self.runs: list[str] = []  # the runs whose segments are in the store, oldest first
        self.failures = 0
        self.replayed = 0

    def reserve(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    async def write(self, seq: int, stream: int, arrival: float, body: bytes) -> None:
        """Raises SidecarError when the store does not take it (the delivery is then answered RETRY)."""
        data = json.dumps({"s": stream, "a": arrival}).encode() + b"\n" + body
        chunks = [data[start : start + PART_BYTES] for start in range(0, len(data), PART_BYTES)] or [b""]
        try:
            for part in range(len(chunks) - 1, -1, -1):  # part 0 last: a segment exists once it is whole
                payload = chunks[part] if part else json.dumps({"parts": len(chunks)}).encode() + b"\n" + chunks[0]
                await self.sink.save_state_bytes(self.store, segment_key(self.run, seq, part), payload)
        except SidecarError:
            self.failures += 1
            raise
        self.written[seq] = len(chunks)

    async def start(self, runs: list[str]) -> None:
        """Record this run beside the earlier runs whose segments are still in the store."""
        self.runs = [*runs, self.run]
        await self.sink.save_state(self.store, RUNS_KEY, self.runs)

    async def _heads(self, run: str, first: int) -> AsyncIterator[tuple[int, bytes]]:
        """``(seq, part 0)`` of a run's segments from ``first`` on: probed ``PROBE`` at a time, so that a gap
        (a write that failed) shorter than that is passed over."""
        seq = first
        while True:
            found = []
            for current in range(seq, seq + PROBE):
                head = await self.sink.get_state_bytes(self.store, segment_key(run, current))
                if head is not None:
                    found.append((current, head))
            if not found:
                return
            for item in found:
                yield item
            seq += PROBE

    async def segments(self, run: str, first: int) -> list[tuple[int, float, bytes]]:
        """``(stream, arrival, body)`` of a run's segments from ``first`` on, in order."""
        out: list[tuple[int, float, bytes]] = []
        async for current, head in self._heads(run, first):
            header, _, rest = head.partition(b"\n")
            parts = json.loads(header)["parts"]
            chunks = [rest] + [
                await self.sink.get_state_bytes(self.store, segment_key(run, current, part)) or b""
                for part in range(1, parts)
            ]
            meta, _, body = b"".join(chunks).partition(b"\n")
            fields = json.loads(meta)
            out.append((int(fields["s"]), float(fields["a"]), body))
        return out

    async def forget(self, run: str, below: int | None = None) -> None:
        """Delete a run's segments (those under ``below`` for this run); best effort."""
        try:
            if run == self.run:
                for seq in [seq for seq in self.written if below is None or seq < below]:
                    for part in range(self.written.pop(seq)):
                        await self.sink.delete_state(self.store, segment_key(run, seq, part))
                return
            heads = [(current, head) async for current, head in self._heads(run, 0)]  # an earlier run's
            for current, head in heads:
                for part in range(json.loads(head.partition(b"\n")[0])["parts"]):
                    await self.sink.delete_state(self.store, segment_key(run, current, part))
            self.runs = [other for other in self.runs if other != run]
            await self.sink.save_state(self.store, RUNS_KEY, self.runs)
        except SidecarError as error:
            log.warning("state store %s: journal segments of run %s not removed yet: %s", self.store, run, error)


async def save_parts(sink: SidecarPort, store: str, key: str, text: bytes, part_bytes: int = PART_BYTES) -> int:
    """JSON ``text`` in parts under ``key.<n>``, the manifest ``key`` last (a document exists once all its
    parts do); how many parts. The handover and the checkpoint are saved so."""
    chunks = [text[start : start + part_bytes] for start in range(0, len(text), part_bytes)] or [b""]
    for n, chunk in enumerate(chunks):
        await sink.save_state_bytes(store, f"{key}.{n}", chunk)
    await sink.save_state(store, key, {"parts": len(chunks), "bytes": len(text)})
    return len(chunks)


async def read_parts(sink: SidecarPort, store: str, key: str) -> Any | None:
    """What :func:`save_parts` saved, or None; ValueError when a part is missing or it is not JSON."""
    manifest = await sink.get_state(store, key)
    if manifest is None:
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), int):
        raise ValueError(f"{key} is not a manifest of parts")
    chunks = [await sink.get_state_bytes(store, f"{key}.{n}") for n in range(manifest["parts"])]
    present = [chunk for chunk in chunks if chunk is not None]
    if len(present) < len(chunks):
        raise ValueError(f"a part of {key} is missing")
    return json.loads(b"".join(present))
