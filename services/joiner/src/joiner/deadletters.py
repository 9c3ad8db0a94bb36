"""The joiner's own dead letters: the events it drops, published with the reason, for streams configured so.

daprd publishes a dropped event to its Subscription's ``deadLetterTopic``. For a bulk Subscription that is
not safe with daprd 1.18: when daprd leaves out of a bulk delivery an entry it cannot read itself (a
number such as ``1e400``), it looks up the app's ``DROP`` answers by their place in the whole batch, and an
answer past the end makes the sidecar panic (the defect is shown by tests/e2e/test_poison.py). Such a
Subscription goes without ``deadLetterTopic`` and the joiner keeps the copy: ``deadLetter: {poweruse:
rabbit-stream/poweruse-deadletter}`` publishes ``{stream, id, reason, dropped_at, event}`` there, ``event``
being the event's JSON text as delivered (cut at ``max_event_chars``). Publishing is queued and bounded
(``QUEUE_LIMIT`` copies, ``QUEUE_BYTES`` of text): a copy that cannot be queued or published is counted in
``lost`` and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from joiner.config import PublishTarget
from streaming_runtime.logs import LogBudget, printable
from streaming_runtime.sidecar import SidecarError, SidecarPort

log = logging.getLogger("joiner")
QUEUE_LIMIT = 10_000
QUEUE_BYTES = 8 * 1024 * 1024  # of event text waiting: a flood of large poison while daprd is down stays small


def event_text(event: Any, limit: int) -> tuple[str, bool]:
    """An event as delivered, as JSON text that can always be published (ASCII, escapes for what is not);
    whether it was cut at ``limit`` characters."""
    if isinstance(event, bytes):
        text = event.decode("utf-8", "backslashreplace")
    elif isinstance(event, str):
        text = event
    else:
        try:
            text = json.dumps(event, ensure_ascii=True, separators=(",", ":"))  # writes inf as Infinity: a copy
        except (ValueError, TypeError, RecursionError) as error:
            text = f"(not representable as JSON: {type(error).__name__})"
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return (text, False) if len(text) <= limit else (text[:limit], True)


class DeadLetters:
    def __init__(self, targets: dict[str, PublishTarget], sink: SidecarPort, max_event_chars: int) -> None:
        self.targets = targets
        self.sink = sink
        self.max_event_chars = max_event_chars
        self.queue: asyncio.Queue[tuple[PublishTarget, dict[str, Any]]] = asyncio.Queue(QUEUE_LIMIT)
        self.published = 0
        self.lost = 0
        self.queued_bytes = 0
        self.failures = LogBudget(log)
        self.replica: str | None = None  # JOINER_REPLICA: which replica dropped the event

    def figures(self) -> dict[str, Any]:
        return {"dead_lettered": self.published, "dead_letters_lost": self.lost}

    def offer(self, stream: str, event_id: str | None, reason: str, event: Any) -> None:
        """Queue the copy of a dropped event of ``stream`` (nothing when the stream has no dead letters)."""
        target = self.targets.get(stream)
        if target is None:
            return
        text, cut = event_text(event, self.max_event_chars)
        record = {
            "stream": stream,
            "id": printable(event_id, 200) if event_id is not None else None,
            "reason": printable(reason, 1000),
            "dropped_at": time.time(),
            "event": text,
            "cut": cut,
        }
        if self.replica:
            record["replica"] = self.replica
        if self.queued_bytes + len(text) > QUEUE_BYTES or self.queue.full():
            self.lost += 1
            self.failures.warning(
                "dead letters full",
                "dead letter of %s id=%s LOST: %d copies (%d bytes) wait to be published already",
                stream,
                record["id"],
                self.queue.qsize(),
                self.queued_bytes,
            )
            return
        self.queued_bytes += len(text)
        self.queue.put_nowait((target, record))

    async def run(self) -> None:
        while True:
            target, record = await self.queue.get()
            try:
                await self._publish(target, record)
            finally:
                self.queued_bytes -= len(record["event"])
                self.queue.task_done()

    async def _publish(self, target: PublishTarget, record: dict[str, Any], attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            try:
                await self.sink.publish(target.pubsub, target.topic, record)
                self.published += 1
                return
            except SidecarError as error:
                if attempt == attempts:
                    self.lost += 1
                    self.failures.warning(
                        f"dead letters to {target}",
                        "dead letter of %s id=%s not published to %s, LOST: %s",
                        record["stream"],
                        record["id"],
                        target,
                        error,
                    )
                else:
                    await asyncio.sleep(0.25 * 2**attempt)
