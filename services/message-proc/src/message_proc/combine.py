"""The combine step: several joiner replicas each deliver a *part* of a window's aggregate (an envelope with
``partial``: :mod:`streaming_runtime.partials`); billable-proc holds the parts of a window and, once no part
has come for ``PROC_COMBINE_WAIT`` after the first, bills the combined rows once, as one joiner would have
made them (docs/scaling.md).

* A part is kept before its call is answered ok: in memory, and with ``PROC_STATE_STORE`` in the state store
  too (``part:<window>.<source>.<chunk>``, and the window's manifest ``combine.<window>``, listed in
  ``combine.windows``), so a restart combines what it held. If the store does not take it the call is
  answered 503 and the joiner sends it again.
* A combined window is marked (``combined.<window>``, with the record's TTL) before its rows are billed.
* A part that comes after its window was combined (its replica was down longer than the wait) is billed on
  its own as a late part, counted (``late_parts``) and logged: for sum and count the bills add up to the
  whole; for min, max and avg that window has a second row for the group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streaming_runtime.partials import PartialSpec, combine
from streaming_runtime.sidecar import SidecarError

log = logging.getLogger("message-proc")
WINDOWS_KEY = "combine.windows"
REMEMBERED = 10_000  # combined windows remembered in memory (the store remembers them for the TTL)

Bill = Callable[[dict[str, Any], dict[str, str]], None]  # (envelope of the combined rows, the call's headers)


@dataclass
class Pending:
    spec: PartialSpec
    first: float  # when its first part came (epoch seconds)
    headers: dict[str, str]
    envelope: dict[str, Any]  # the first part's window fields (window_start, window_end, window_id)
    parts: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (source, chunk) -> rows


class Combiner:
    def __init__(
        self,
        bill: Bill,
        wait_seconds: float,
        store: Any | None = None,
        store_name: str | None = None,
        ttl_seconds: int = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        counts: dict[str, int] | None = None,
    ) -> None:
        self.bill = bill
        self.wait = wait_seconds
        self.store: Any = store  # get_state_bytes / save_state_bytes / delete_state, as the sidecar has them
        self.store_name = store_name
        self.metadata = {"ttlInSeconds": str(ttl_seconds)}
        self.clock = clock
        self.pending: dict[str, Pending] = {}
        self.combined: OrderedDict[str, None] = OrderedDict()
        self.lock = asyncio.Lock()
        self.counts = counts if counts is not None else {}  # billable-proc's /stats counts: metrics read them
        self.counts.update(parts=0, windows_combined=0, late_parts=0)

    # -- the parts ------------------------------------------------------------------------------

    async def take(
        self, window: str, source: str, chunk: str, envelope: dict[str, Any], headers: dict[str, str]
    ) -> str:
        """Hold one part (``"held"``), or bill it at once as a late part (``"late"``). Raises ValueError for an
        envelope whose ``partial`` does not read, SidecarError when the store does not take it."""
        spec = PartialSpec(envelope.get("partial"))
        rows = envelope.get("rows")
        if not isinstance(rows, list):
            raise ValueError("a part's envelope must have its rows in a list")
        async with self.lock:
            if await self._was_combined(window):
                self.counts["late_parts"] += 1
                log.warning(
                    "part of window %s from %s came after the window was combined: billed on its own", window, source
                )
                self._bill(window, spec, {(source, chunk): rows}, _fields(envelope), headers, late=True)
                return "late"
            pending = self.pending.get(window)
            if pending is None:
                pending = Pending(spec, self.clock(), dict(headers), _fields(envelope))
            pending.parts[(source, chunk)] = rows
            await self._save(window, pending, (source, chunk), envelope)
            self.pending[window] = pending
            self.counts["parts"] += 1
        return "held"

    async def _was_combined(self, window: str) -> bool:
        if window in self.combined:
            return True
        if self.store is None:
            return False
        return await self.store.get_state_bytes(self.store_name, f"combined.{window}") is not None

    async def _save(self, window: str, pending: Pending, part: tuple[str, str], envelope: dict[str, Any]) -> None:
        if self.store is None:
            return
        source, chunk = part
        body = json.dumps(envelope, separators=(",", ":")).encode()
        await self.store.save_state_bytes(self.store_name, f"part:{window}.{source}.{chunk}", body, self.metadata)
        manifest = {"parts": sorted(pending.parts), "first": pending.first, "headers": pending.headers}
        await self.store.save_state_bytes(self.store_name, f"combine.{window}", _dumps(manifest), self.metadata)
        if window not in self.pending:
            await self._save_index([*self.pending, window])

    async def _save_index(self, windows: list[str]) -> None:
        await self.store.save_state_bytes(self.store_name, WINDOWS_KEY, _dumps(sorted(set(windows))))

    # -- combining --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Combine each window once no part has come for the wait after its first (the timer of the service)."""
        while True:
            due = [window for window, pending in self.pending.items() if self.clock() >= pending.first + self.wait]
            for window in due:
                try:
                    await self.combine(window)
                except SidecarError as error:  # tried again at the next turn; nothing billed meanwhile
                    log.error("window %s not combined yet, the state store is unavailable: %s", window, error)
            nearest = min((pending.first + self.wait for pending in self.pending.values()), default=None)
            # looked at again by a quarter second at most: a window is combined that late after its wait at most
            await asyncio.sleep(0.25 if nearest is None else min(0.25, max(0.02, nearest - self.clock())))

    async def combine(self, window: str) -> None:
        """Bill a window's combined rows; marked combined first (see the module doc)."""
        async with self.lock:
            pending = self.pending.get(window)
            if pending is None:
                return
            if self.store is not None:
                await self.store.save_state_bytes(self.store_name, f"combined.{window}", b"1", self.metadata)
            self._remember(window)
            del self.pending[window]
            self.counts["windows_combined"] += 1
            self._bill(window, pending.spec, pending.parts, pending.envelope, pending.headers, late=False)
            if self.store is not None:
                await self._forget(window, pending)

    def _bill(
        self,
        window: str,
        spec: PartialSpec,
        parts: dict[tuple[str, str], list[Any]],
        fields: dict[str, Any],
        headers: dict[str, str],
        late: bool,
    ) -> None:
        order = sorted(parts)  # by source, then chunk: the combined rows do not depend on arrival order
        rows = combine(spec, (parts[part] for part in order))
        envelope = {
            **fields,
            "window_id": fields.get("window_id", window),
            "combined_from": sorted({s for s, _ in order}),
        }
        if late:
            envelope["late_part"] = True
        self.bill({**envelope, "rows": rows}, headers)

    def _remember(self, window: str) -> None:
        self.combined[window] = None
        self.combined.move_to_end(window)
        if len(self.combined) > REMEMBERED:
            self.combined.popitem(last=False)

    async def _forget(self, window: str, pending: Pending) -> None:
        """Best effort: what a combined window kept in the store (its TTL removes what this misses)."""
        try:
            for source, chunk in pending.parts:
                await self.store.delete_state(self.store_name, f"part:{window}.{source}.{chunk}")
            await self.store.delete_state(self.store_name, f"combine.{window}")
            await self._save_index(list(self.pending))
        except SidecarError as error:
            log.warning("window %s combined; its parts not removed from the state store yet: %s", window, error)

    # -- a restart ----------------------------------------------------------------------------------

    async def restore(self) -> int:
        """At start, with a store: take back the windows a previous run held and had not combined; how many."""
        if self.store is None:
            return 0
        raw = await self.store.get_state_bytes(self.store_name, WINDOWS_KEY)
        for window in json.loads(raw) if raw else []:
            manifest_raw = await self.store.get_state_bytes(self.store_name, f"combine.{window}")
            if manifest_raw is None or await self._was_combined(window):
                continue
            manifest = json.loads(manifest_raw)
            pending: Pending | None = None
            for source, chunk in manifest["parts"]:
                body = await self.store.get_state_bytes(self.store_name, f"part:{window}.{source}.{chunk}")
                if body is None:
                    log.error(
                        "window %s: the part of %s chunk %s is missing from the state store", window, source, chunk
                    )
                    continue
                envelope = json.loads(body)
                if pending is None:
                    pending = Pending(
                        PartialSpec(envelope["partial"]), manifest["first"], manifest["headers"], _fields(envelope)
                    )
                pending.parts[(source, chunk)] = envelope["rows"]
            if pending is not None:
                self.pending[window] = pending
        if self.pending:
            log.warning("took back %d window(s) of parts a previous run held, to combine", len(self.pending))
        return len(self.pending)


def _fields(envelope: dict[str, Any]) -> dict[str, Any]:
    return {key: envelope[key] for key in ("window_start", "window_end", "window_id") if key in envelope}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
