"""``state.journal``: what the joiner does with its journal (:mod:`joiner.journal`) around a crash.

At start, the last checkpoint is restored and the deliveries journaled after it are taken in again, in
order and each at its time, so the windows and rows are those the crashed run had. After each delivered
window a checkpoint is saved (coalesced) and the journal it covers is forgotten; after a clean stop that
left nothing undelivered, the journal and the checkpoint go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from joiner.journal import CHECKPOINT_KEY, RUNS_KEY, Journal, read_parts, save_parts
from streaming_runtime.sidecar import SidecarError, SidecarPort, dumps

if TYPE_CHECKING:
    from joiner.core import JoinCore
    from joiner.sender import WindowSender

log = logging.getLogger("joiner")

Pending = list[tuple[int, float, bytes]]  # (stream index, arrival, body) of journaled deliveries


class Recovery:
    def __init__(
        self,
        journal: Journal,
        sink: SidecarPort,
        store: str,
        core: JoinCore,
        sender: WindowSender,
        on_error: Callable[..., None],
        replay: Callable[[Pending], Awaitable[None]],
    ) -> None:
        self.journal = journal
        self.sink = sink
        self.store = store
        self.core = core
        self.sender = sender
        self.on_error = on_error  # an error of our own: reported (streaming_runtime.logs.ErrorReport)
        self.replay = replay  # takes journaled deliveries in again (the service's ingest, marked as a replay)
        self._task: asyncio.Task | None = None
        self._again = False

    async def recover(self, took_handover: bool) -> None:
        """Restore the checkpoint and replay the journal after it; after a handover (a graceful stop covered
        everything) only forget what was journaled."""
        journal, store = self.journal, self.store
        try:
            runs = await self.sink.get_state(store, RUNS_KEY) or []
            if took_handover:
                for run in runs:
                    await journal.forget(run)
                await self.sink.delete_state(store, CHECKPOINT_KEY)
                await journal.start([])
                return
            checkpoint = await read_parts(self.sink, store, CHECKPOINT_KEY)
            covered = (checkpoint or {}).get("journal") or {}
            pending: Pending = []
            older = True
            for run in runs:
                if run == covered.get("run"):
                    older = False
                    pending += await journal.segments(run, int(covered.get("seq", 0)))
                elif not (older and covered):
                    pending += await journal.segments(run, 0)
            await journal.start(list(runs))
        except (SidecarError, ValueError) as error:
            log.error("state store %s: the journal could not be read, nothing replayed: %s", store, error)
            await self._start_anyway()
            return
        if checkpoint is not None:
            try:
                self.core.restore(checkpoint)
                self.sender.take_over(checkpoint.get("undelivered") or [])
            except ValueError as error:
                log.error(
                    "state store %s: the checkpoint is another joiner's or damaged, not restored: %s", store, error
                )
        await self.replay(pending)
        journal.replayed += len(pending)
        if checkpoint is not None or pending:
            log.warning(
                "state store %s: recovered from the journal: the checkpoint (%s) and %d deliveries after it replayed",
                store,
                "restored" if checkpoint is not None else "none",
                len(pending),
            )
            self.schedule()

    async def _start_anyway(self) -> None:
        try:
            await self.journal.start([])
        except SidecarError as error:
            log.error(
                "state store %s: the journal is not recorded: a crash of this run would lose its windows: %s",
                self.store,
                error,
            )

    def schedule(self) -> None:
        """After a window is delivered: save a checkpoint, then forget the journal it covers (coalesced)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._checkpoints())

    async def _checkpoints(self) -> None:
        journal = self.journal
        while True:
            self._again = False
            covered = journal.turns.next  # every delivery before it is taken in (or given up), in order
            try:
                snapshot = self.core.snapshot()
                snapshot["undelivered"] = self.sender.pending()
                snapshot["journal"] = {"run": journal.run, "seq": covered}
                await save_parts(self.sink, self.store, CHECKPOINT_KEY, dumps(snapshot))
            except Exception as error:  # noqa: BLE001 - the journal stays until the next checkpoint
                self.on_error("saving a checkpoint", error)
            else:
                await journal.forget(journal.run, below=covered)
                for run in [run for run in journal.runs if run != journal.run]:
                    await journal.forget(run)
            if not self._again:
                return

    async def forget(self) -> None:
        """After a clean stop that left nothing undelivered: the journal and the checkpoint are not needed."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            for run in list(self.journal.runs):
                await self.journal.forget(run)
            await self.sink.delete_state(self.store, CHECKPOINT_KEY)
        except SidecarError as error:
            log.warning(
                "state store %s: the journal not removed (the next start ignores it after a handover): %s",
                self.store,
                error,
            )
