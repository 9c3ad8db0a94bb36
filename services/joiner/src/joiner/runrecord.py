"""Telling a crash from a clean start: the joiner's record of its run in the state store (``state.store``).

The joiner acknowledges each event on receipt and keeps it in memory, so a joiner killed (SIGKILL, an OOM
kill, a lost node) loses its open windows and undelivered rows unless ``state.journal`` is on. What it can do is
say so. At start it writes ``{"clean": false, ...}`` under ``run``, then every ``BEAT_SECONDS`` what it
holds (events buffered, open windows, undelivered windows and rows); a clean stop (after its handover, or
after closing and sending everything) writes ``{"clean": true}``. A start that finds ``clean: false``
reports that the previous run ended without stopping, with what it held at its last beat, as one ERROR
line and the counters ``crashes_detected`` and ``events_lost_in_crash`` (an estimate: events that came
after the last beat are not in it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from streaming_runtime.sidecar import SidecarError, SidecarPort

log = logging.getLogger("joiner")
RUN_KEY = "run"
BEAT_SECONDS = 2.0


class RunRecord:
    def __init__(self, sink: SidecarPort, store: str, holding: Callable[[], dict[str, Any]]) -> None:
        self.sink = sink
        self.store = store
        self.holding = holding  # what the joiner holds now: {"events", "windows", "undelivered", "rows"}
        self.started = time.time()
        self.crashes_detected = 0
        self.events_lost_in_crash = 0
        self._last: dict[str, Any] | None = None

    async def check_previous(self, recovered: bool = False) -> None:
        """Read how the previous run ended (report a crash; ``recovered``: the journal replayed it), then
        mark this one as running."""
        try:
            previous = await self.sink.get_state(self.store, RUN_KEY)
        except (SidecarError, ValueError) as error:
            log.warning("state store %s: how the previous run ended is not known: %s", self.store, error)
            previous = None
        if isinstance(previous, dict) and previous.get("clean") is False and recovered:
            self.crashes_detected += 1
            log.warning(
                "the previous run (started %s) ended without stopping: what it held was recovered from the journal",
                _when(previous.get("started")),
            )
        elif isinstance(previous, dict) and previous.get("clean") is False:
            held = previous.get("holding") or {}
            self.crashes_detected += 1
            self.events_lost_in_crash += int(held.get("events", 0) or 0)
            log.error(
                "the previous run (started %s) ended without stopping (killed, out of memory, node lost): what it "
                "held at its last beat (%s) is LOST: %d buffered events in %d open window(s), %d undelivered "
                "window(s) of %d rows",
                _when(previous.get("started")),
                _when(previous.get("beat")),
                int(held.get("events", 0) or 0),
                int(held.get("windows", 0) or 0),
                int(held.get("undelivered", 0) or 0),
                int(held.get("rows", 0) or 0),
            )
        await self._write(False)

    async def run(self) -> None:
        """Beat: write what the joiner holds when it changed since the last beat."""
        while True:
            await asyncio.sleep(BEAT_SECONDS)
            await self._write(False)

    async def stopped_cleanly(self) -> None:
        await self._write(True, force=True)

    async def _write(self, clean: bool, force: bool = False) -> None:
        holding = self.holding()
        if not force and self._last == holding:
            return
        record = {"clean": clean, "started": self.started, "beat": time.time(), "holding": holding}
        try:
            await self.sink.save_state(self.store, RUN_KEY, record)
            self._last = holding
        except SidecarError as error:
            log.warning(
                "state store %s: the run record not written (a crash would go unreported): %s", self.store, error
            )


def _when(seconds: Any) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(seconds)))
    except (TypeError, ValueError, OverflowError):
        return "unknown"
