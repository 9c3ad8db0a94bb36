"""Delivery of closed windows to the joiner's targets, and what happens to a window that does not get there.

Windows leave the outbox in order. Each goes to every target in calls (chunks) of at most
``max_call_bytes`` of JSON (the receiver's request limit: billable-proc's ``MAX_BODY_BYTES``) and
``rows_per_call`` rows, planned once per window so that a re-send makes the same calls; each call is retried
with backoff, except one the receiver refused as such (a 413, a 400: :class:`Refused`), which would be
refused again. A window that a target still refuses after its attempts is *parked* (the
dead-letter place of windows): counted, logged with its id, kept with its rows, re-sent every
``PARKED_RETRY_SECONDS`` and on demand (``POST /deadletters/resend``), and handed over to the next run
with the open windows when ``state.store`` is set. Re-sending is safe: the calls carry the same
``window-id``, ``window-chunk`` and body, so billable-proc takes a call it got already for a retry.
Parked rows are bounded in bytes; past the bound the oldest parked window is given up, counted as lost and
logged. Nothing that goes wrong with one window (not even an error of our own) stops the sender.

:meth:`WindowSender.problems` says why the joiner is not ready (``/readyz``): deliveries failing, windows
parked, or an outbox longer than ``OUTBOX_READY_LIMIT``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joiner.config import InvokeTarget, JoinerConfig, PublishTarget
from joiner.engine.windows import Window
from joiner.metrics import delivery_latency
from joiner.replica import SOURCE_HEADER
from joiner.tracing import NO_TRACING, Tracing
from streaming_runtime.logs import ErrorReport
from streaming_runtime.settings import DEFAULT_MAX_BODY_BYTES
from streaming_runtime.sidecar import Refused, SidecarError, SidecarPort, UnsendableBody, dumps

log = logging.getLogger("joiner")

DELIVERY_ATTEMPTS = 5
ROWS_PER_CALL = 10_000  # daprd refuses bodies over 4 MB by default; large windows go in several calls
WINDOW_EVENT_TYPE = "io.dapr.streaming.window"
PARKED_RETRY_SECONDS = 30.0
MAX_PARKED_BYTES = 64 * 1024 * 1024
OUTBOX_READY_LIMIT = 20  # closed windows waiting: more means the sender falls behind
ENVELOPE_BYTES = 1024  # room in a call for output.envelope's fields (or a CloudEvent's, when published)


def plan_chunks(rows: list[Any], max_bytes: int, max_rows: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each call's rows: at most ``max_rows`` rows and ``max_bytes`` of JSON a call (a
    row larger than that alone in its call); the same rows and bounds always give the same plan."""
    if not rows:
        return []
    budget = max(1, max_bytes - ENVELOPE_BYTES)
    if len(rows) <= max_rows and len(dumps(rows)) <= budget:
        return [(0, len(rows))]
    chunks, start, size = [], 0, 2  # the brackets of the array
    for index, row in enumerate(rows):
        row_bytes = len(dumps(row)) + 1  # and its comma
        if index > start and (size + row_bytes > budget or index - start >= max_rows):
            chunks.append((start, index))
            start, size = index, 2
        size += row_bytes
    chunks.append((start, len(rows)))
    return chunks


@dataclass
class Parked:
    """A window that one target did not take after its attempts."""

    window: Window
    target: InvokeTarget | PublishTarget
    rows: list[Any]
    reason: str
    parked_at: float
    size: int  # bytes of its rows as JSON
    attempts: int
    chunks: list[tuple[int, int]]  # the calls it was planned in: a re-send makes the same ones
    done: set[int]  # the chunks the target took already: not sent again
    closed_at: float | None = None  # when the core closed the window (this run's windows only)

    def summary(self) -> dict[str, Any]:
        return {
            "window_id": self.window.id,
            "window_start": self.window.start,
            "window_end": self.window.end,
            "target": str(self.target),
            "rows": len(self.rows),
            "bytes": self.size,
            "reason": self.reason,
            "parked_at": self.parked_at,
            "attempts": self.attempts,
            "chunks": len(self.chunks),
            "chunks_delivered": len(self.done),
        }


class WindowSender:
    def __init__(
        self,
        config: JoinerConfig,
        sink: SidecarPort,
        errors: ErrorReport,
        clock: Callable[[], float] = time.time,
        retry_base_delay: float = 0.25,
        rows_per_call: int = ROWS_PER_CALL,
        max_parked_bytes: int = MAX_PARKED_BYTES,
        max_call_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.config = config
        self.sink = sink
        self.errors = errors
        self.clock = clock
        self.retry_base_delay = retry_base_delay
        self.rows_per_call = rows_per_call
        self.max_call_bytes = max_call_bytes
        self.max_parked_bytes = max_parked_bytes
        self.outbox: asyncio.Queue[tuple[Window, list[Any]]] = asyncio.Queue()
        self.parked: OrderedDict[tuple[str, str], Parked] = OrderedDict()  # (window id, target) -> Parked
        self.rows_emitted = 0
        self.deliveries_failed = 0  # window x target given up after its attempts (then parked)
        self.windows_resent = 0
        self.windows_lost = 0  # parked windows given up (over max_parked_bytes), or undelivered at exit
        self.failing: str | None = None  # the last failure, until a call succeeds again
        self.sending: tuple[Window, list[Any]] | None = None  # the window being delivered now
        self.on_sent: Callable[[], None] = lambda: None  # after each window (the journal's checkpoint)
        self.retry_interval = PARKED_RETRY_SECONDS
        # window id -> when the core closed it, until it is taken out of the outbox (the delivery latency)
        self.closed_at: dict[str, float] = {}
        self.delivery_latency = delivery_latency()
        self.tracing: Tracing = NO_TRACING  # the service's (joiner.tracing): a span per window delivered
        for target in config.targets:  # each target's series from the start, at 0
            self.delivery_latency.labels(str(target))

    def enqueue(self, window: Window, rows: list[Any]) -> None:
        """A closed window's rows, to deliver after the windows closed before it (the core's ``on_window``)."""
        self.closed_at[window.id] = self.clock()
        self.tracing.closed(window)
        self.outbox.put_nowait((window, rows))

    # -- the loops ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver closed windows in order, for as long as the service runs."""
        while True:
            window, rows = await self.outbox.get()
            self.sending = (window, rows)
            try:
                await self.tracing.deliver(window, len(rows), self.send_window(window, rows))
            except Exception as error:  # noqa: BLE001 - the sender must outlive any one window
                self.windows_lost += 1
                self.errors(f"parking window {window.id}", error, f"{len(rows)} rows LOST")
            finally:
                self.sending = None
                self.outbox.task_done()
            self.on_sent()

    async def run_parked_retries(self, interval: float = PARKED_RETRY_SECONDS) -> None:
        self.retry_interval = interval
        while True:
            await asyncio.sleep(interval)
            if self.parked and self.outbox.empty():  # new windows first: they have no backoff yet
                await self.resend()

    async def send_window(self, window: Window, rows: list[Any]) -> None:
        """Deliver one window to every target; park it for a target that does not take it."""
        closed_at = self.closed_at.pop(window.id, None)
        try:
            chunks = plan_chunks(rows, self.max_call_bytes, self.rows_per_call)
        except Exception as error:  # noqa: BLE001 - rows JSON cannot hold (UnsendableBody): one call, refused
            chunks = [(0, len(rows))]
            self.errors(f"planning the calls of window {window.id}", error)
        for target in self.config.targets:
            done: set[int] = set()
            try:
                reason = await self._deliver(window, rows, target, chunks, done)
            except Exception as error:  # noqa: BLE001 - the sender must outlive any one window
                self.errors(f"delivering window {window.id}", error, f"{len(rows)} rows parked")
                reason = f"{type(error).__name__}: {error}"
            if reason is None:
                self._observe_latency(target, closed_at)
            else:
                self.deliveries_failed += 1
                self.tracing.failed(f"{target}: {reason}")
                self._park(
                    window, target, rows, reason, DELIVERY_ATTEMPTS, chunks=chunks, done=done, closed_at=closed_at
                )

    async def resend(self) -> dict[str, int]:
        """Try every parked window once more (each call with its retries); those delivered leave the park."""
        sent = failed = 0
        for key, parked in list(self.parked.items()):
            if self.parked.get(key) is not parked:
                continue  # given up meanwhile
            try:
                reason = await self.tracing.deliver(
                    parked.window,
                    len(parked.rows),
                    self._deliver(parked.window, parked.rows, parked.target, parked.chunks, parked.done),
                    resent=True,
                )
            except Exception as error:  # noqa: BLE001 - as in send_window
                self.errors(f"re-sending window {parked.window.id}", error)
                reason = f"{type(error).__name__}: {error}"
            if reason is None:
                self.parked.pop(key, None)
                self.windows_resent += 1
                self._observe_latency(parked.target, parked.closed_at)
                sent += 1
                log.info("window %s: %d parked rows delivered to %s", parked.window.id, len(parked.rows), parked.target)
            else:
                parked.reason, parked.attempts = reason, parked.attempts + DELIVERY_ATTEMPTS
                failed += 1
        return {"resent": sent, "still_parked": failed}

    # -- one window, one target -------------------------------------------------------------------

    def body(self, window: Window, rows: list[Any]) -> Any:
        if not self.config.envelope:
            return rows
        envelope = {"window_start": window.start, "window_end": window.end, "window_id": window.id}
        if self.config.replica:  # one replica's part of the window (docs/scaling.md)
            envelope["window_source"] = self.config.replica
            if self.config.aggregate is not None:  # a part to combine with the other replicas' parts
                spec = self.config.aggregate
                fields = {field.name: field.function for field in spec.fields}
                envelope["partial"] = {"group_by": list(spec.group_by), "fields": fields}
        return {**envelope, "rows": rows}

    async def _deliver(
        self,
        window: Window,
        rows: list[Any],
        target: InvokeTarget | PublishTarget,
        chunks: list[tuple[int, int]],
        done: set[int],
    ) -> str | None:
        """Send the chunks of a window's rows not in ``done`` to one target (adding each it takes to
        ``done``); None, or why one did not go.

        ``window-id`` and ``window-chunk`` (``n/total``) name each call, so that a receiver recognises a
        call it got already (a retry after a lost answer, a re-sent parked window)."""
        for number, (start, end) in enumerate(chunks, 1):
            if number in done:
                continue
            reason = await self._call(window, rows[start:end], f"{number}/{len(chunks)}", target)
            if reason is not None:
                return reason
            done.add(number)
            self.rows_emitted += end - start
        return None

    async def _call(
        self, window: Window, rows: list[Any], chunk: str, target: InvokeTarget | PublishTarget
    ) -> str | None:
        headers = {
            "window-start": str(window.start),
            "window-end": str(window.end),
            "window-id": window.id,
            "window-chunk": chunk,
        }
        if self.config.replica:  # the window is the same on every replica; this replica's part of it is its own
            headers[SOURCE_HEADER] = self.config.replica
        self.tracing.inject(headers)  # the window's trace: the target's side is its child
        body = self.body(window, rows)
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                if isinstance(target, InvokeTarget):
                    await self.sink.invoke(target.app_id, target.method, body, headers)
                else:  # window metadata as CloudEvent extension attributes, the body unchanged
                    extensions = {
                        "windowstart": headers["window-start"],
                        "windowend": headers["window-end"],
                        "windowid": window.id,
                    }
                    if self.config.replica:
                        extensions["windowsource"] = self.config.replica
                    await self.sink.publish_event(target.pubsub, target.topic, body, WINDOW_EVENT_TYPE, extensions)
                self.failing = None
                return None
            except UnsendableBody as error:  # the same body would fail again: no retry
                self.failing = f"window {window.id} cannot be sent to {target}: {error}"
                return f"cannot be sent: {error}"
            except Refused as error:  # nor would the receiver take it another time as it is
                self.failing = f"{target} refused window {window.id} chunk {chunk}: {error}"
                return f"refused by the receiver: {error}"
            except SidecarError as error:
                self.failing = f"delivery to {target} failed: {error}"
                if attempt == DELIVERY_ATTEMPTS:
                    return f"not delivered after {attempt} attempts: {error}"
                log.warning("window %s: delivery to %s failed (attempt %d): %s", window.id, target, attempt, error)
                await asyncio.sleep(min(self.retry_base_delay * 2**attempt, 5.0))
        return None  # not reached: the last attempt returns

    def _observe_latency(self, target: InvokeTarget | PublishTarget, closed_at: float | None) -> None:
        """A window all of whose rows ``target`` took: how long after its close (targets are configured,
        so the label is bounded). A window of a previous run has no close time here: not observed."""
        if closed_at is not None:
            self.delivery_latency.labels(str(target)).observe(max(0.0, self.clock() - closed_at))

    # -- the park ---------------------------------------------------------------------------------

    def _park(
        self,
        window: Window,
        target: InvokeTarget | PublishTarget,
        rows: list[Any],
        reason: str,
        attempts: int,
        parked_at: float | None = None,
        chunks: list[tuple[int, int]] | None = None,
        done: set[int] | None = None,
        closed_at: float | None = None,
    ) -> None:
        try:
            size = len(dumps(rows))
        except Exception:  # noqa: BLE001 - rows that cannot be written (UnsendableBody): kept, sized by count
            size = 100 * len(rows)
        key = (window.id, str(target))
        self.parked.pop(key, None)
        if chunks is None:
            try:
                chunks = plan_chunks(rows, self.max_call_bytes, self.rows_per_call)
            except Exception:  # noqa: BLE001 - rows that cannot be written: one call, refused again
                chunks = [(0, len(rows))]
        self.parked[key] = Parked(
            window, target, rows, reason, parked_at or self.clock(), size, attempts, chunks, set(done or ()), closed_at
        )
        log.error(
            "window %s: %d rows for %s parked (GET /deadletters; re-sent every %gs and on "
            "POST /deadletters/resend): %s",
            window.id,
            len(rows),
            target,
            self.retry_interval,
            reason,
        )
        while self.parked_bytes > self.max_parked_bytes and len(self.parked) > 1:
            _, oldest = self.parked.popitem(last=False)
            self.windows_lost += 1
            log.error(
                "window %s: %d parked rows for %s LOST: parked windows are over %d bytes",
                oldest.window.id,
                len(oldest.rows),
                oldest.target,
                self.max_parked_bytes,
            )

    @property
    def parked_bytes(self) -> int:
        return sum(parked.size for parked in self.parked.values())

    def figures(self) -> dict[str, Any]:
        return {
            "rows_emitted": self.rows_emitted,
            "deliveries_failed": self.deliveries_failed,
            "windows_parked": len(self.parked),
            "parked_bytes": self.parked_bytes,
            "windows_resent": self.windows_resent,
            "windows_lost": self.windows_lost,
            "outbox": self.outbox.qsize(),
        }

    def problems(self) -> list[str]:
        """Why deliveries are not healthy (empty when they are): for ``/readyz``."""
        found = []
        if self.failing is not None:
            found.append(self.failing)
        if self.parked:
            found.append(
                f"{len(self.parked)} window(s) parked undelivered ({sum(len(p.rows) for p in self.parked.values())} rows)"
            )
        if self.outbox.qsize() > OUTBOX_READY_LIMIT:
            found.append(f"{self.outbox.qsize()} closed windows wait to be delivered (more than {OUTBOX_READY_LIMIT})")
        return found

    # -- across runs (state.store) ------------------------------------------------------------------

    def undelivered(self) -> list[dict[str, Any]]:
        """What has not been delivered (parked windows, then the outbox), as JSON, for a handover."""
        records = [self._record(parked) for parked in self.parked.values()]
        while not self.outbox.empty():  # the service stops: nothing takes them any more
            window, rows = self.outbox.get_nowait()
            self.outbox.task_done()
            self.closed_at.pop(window.id, None)
            records += [
                {
                    "start": window.start,
                    "end": window.end,
                    "part": window.part,
                    "target": index,
                    "rows": rows,
                    "reason": "not sent before the joiner stopped",
                    "parked_at": self.clock(),
                    "attempts": 0,
                }
                for index in range(len(self.config.targets))
            ]
        return records

    def pending(self) -> list[dict[str, Any]]:
        """What is not delivered yet, as :meth:`undelivered` gives it, but leaving everything in place (for
        a checkpoint): parked windows, the one being sent, and the outbox (read, not taken)."""
        records = [self._record(parked) for parked in self.parked.values()]
        queued = self.outbox._queue  # type: ignore[attr-defined]  # asyncio.Queue keeps a deque, not in its stubs
        waiting = ([self.sending] if self.sending else []) + list(queued)
        records += [
            {
                "start": window.start,
                "end": window.end,
                "part": window.part,
                "target": index,
                "rows": rows,
                "reason": "not delivered at the checkpoint",
                "parked_at": self.clock(),
                "attempts": 0,
            }
            for window, rows in waiting
            for index in range(len(self.config.targets))
        ]
        return records

    def take_over(self, records: list[Any]) -> int:
        """Park a previous run's undelivered windows (re-sent by the retry loop); how many."""
        taken = 0
        for record in records:
            window = Window(float(record["start"]), float(record["end"]), int(record.get("part", 0)))
            if not 0 <= int(record["target"]) < len(self.config.targets):
                self.windows_lost += 1
                log.error(
                    "window %s: %d undelivered rows of the previous run LOST: their target is no longer configured",
                    window.id,
                    len(record["rows"]),
                )
                continue
            chunks = [(int(start), int(end)) for start, end in record["chunks"]] if record.get("chunks") else None
            self._park(
                window,
                self.config.targets[int(record["target"])],
                list(record["rows"]),
                str(record.get("reason", "")),
                int(record.get("attempts", 0)),
                float(record.get("parked_at") or self.clock()),
                chunks,
                set(record.get("done") or ()),
            )
            taken += 1
        return taken

    def _record(self, p: Parked) -> dict[str, Any]:
        return {
            "start": p.window.start,
            "end": p.window.end,
            "part": p.window.part,
            "target": self._target_index(p.target),
            "rows": p.rows,
            "reason": p.reason,
            "parked_at": p.parked_at,
            "attempts": p.attempts,
            "chunks": [list(chunk) for chunk in p.chunks],
            "done": sorted(p.done),
        }

    def _target_index(self, target: InvokeTarget | PublishTarget) -> int:
        return self.config.targets.index(target)

    def give_up(self) -> None:
        """At exit without a handover: what is still undelivered is lost; count it and say so."""
        records = self.undelivered()
        self.parked.clear()
        if records:
            self.windows_lost += len(records)
            log.error(
                "stopping with %d undelivered window(s) (%d rows) and no state.store to hand them over: LOST: %s",
                len(records),
                sum(len(r["rows"]) for r in records),
                ", ".join(Window(r["start"], r["end"], r["part"]).id for r in records[:20]),
            )
