"""The handover kept in the Dapr state store: saved at a stop, taken over (and removed) at the next start.

The snapshot's JSON goes in parts (``open-windows.<n>``, each under daprd's request limit) and then the
manifest (``open-windows``: how many parts), so that a handover without its manifest is ignored. A
handover this joiner cannot continue is set aside under a key of its own, counted and logged."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from joiner.journal import PART_BYTES, save_parts
from streaming_runtime.sidecar import SidecarError, SidecarPort, dumps

if TYPE_CHECKING:
    from joiner.core import JoinCore
    from joiner.sender import WindowSender

log = logging.getLogger("joiner")

# in the state store (Dapr prefixes keys with the app id; a replica's go under its name: joiner.replica)
KEY = "open-windows"  # parts: open-windows.<n>


class Handover:
    def __init__(
        self, sink: SidecarPort, store: str, core: JoinCore, sender: WindowSender, on_error: Callable[..., None]
    ) -> None:
        self.sink = sink
        self.store = store
        self.core = core
        self.sender = sender
        self.on_error = on_error  # an error of our own: reported (streaming_runtime.logs.ErrorReport)
        self.part_bytes = PART_BYTES  # each part under daprd's default request limit (4 MiB, --max-body-size)
        # saving open windows at shutdown would overwrite a previous run's that were not taken over yet
        self.may_hand_over = False
        self.took_over = False  # the previous run's handover was continued
        self.set_aside = 0

    async def take_over(self) -> None:
        """Continue the open windows the previous run saved, then remove them from the store."""
        store = self.store
        try:
            await self.sink.wait_ready()
            manifest = await self.sink.get_state(store, KEY)
            if manifest is None:
                log.info("state store %s: no open windows handed over", store)
                self.may_hand_over = True
                return
            parts = _parts_of(manifest)
            chunks = [await self.sink.get_state_bytes(store, f"{KEY}.{n}") for n in range(parts)]
        except SidecarError as error:
            log.error("open windows of the previous run not read from state store %s: %s", store, error)
            return
        except ValueError as error:
            log.error("state store %s: %s left there, not taken over: %s", store, KEY, error)
            return
        try:
            present = [chunk for chunk in chunks if chunk is not None]
            if len(present) < len(chunks):
                raise ValueError("a part of it is missing")
            snapshot = json.loads(b"".join(present))
            count = self.core.restore(snapshot)
            undelivered = self.sender.take_over(snapshot.get("undelivered") or [])
        except ValueError as error:
            await self._set_aside(parts, chunks, error)
            return
        self.may_hand_over = True
        self.took_over = True
        log.info(
            "state store %s: took over %d open window(s), %d events, %d undelivered window(s)",
            store,
            len(snapshot["windows"]),
            count,
            undelivered,
        )
        try:
            await self.sink.delete_state(store, KEY)  # first: what is left without it is ignored
            for n in range(parts):
                await self.sink.delete_state(store, f"{KEY}.{n}")
        except SidecarError as error:
            log.warning(
                "state store %s: taken-over windows not removed (a later start would take them again): %s", store, error
            )

    async def _set_aside(self, parts: int, chunks: list[bytes | None], why: Exception) -> None:
        """A handover this joiner cannot continue (another joiner's streams, or damaged): moved to a key of its
        own, kept for whoever can use it, counted and logged, so that this joiner's own stop hands over again
        (left in place, it would make every later stop close its windows early)."""
        store = self.store
        aside = f"{KEY}.set-aside.{int(self.core.clock() * 1000)}"
        self.set_aside += 1
        try:
            for n, chunk in enumerate(chunks):
                if chunk is not None:
                    await self.sink.save_state_bytes(store, f"{aside}.{n}", chunk)
            await self.sink.save_state(store, aside, {"parts": parts, "why": str(why)})
            await self.sink.delete_state(store, KEY)
        except SidecarError as error:
            log.error(
                "state store %s: open windows this joiner cannot continue (%s) left at %s, not set aside (%s): "
                "its stops close their windows early until they are removed",
                store,
                why,
                KEY,
                error,
            )
            return
        self.may_hand_over = True
        log.error(
            "state store %s: open windows this joiner cannot continue (%s), not taken over: set aside at %s "
            "(%d part(s)) for whoever can; this joiner hands over its own",
            store,
            why,
            aside,
            parts,
        )

    async def hand_over(self) -> bool:
        """At stop: save the open windows instead of closing them early, with the windows not delivered yet
        (parked, or still in the outbox). False when they must be closed now: the previous run's not taken
        over, a failed save."""
        store = self.store
        if not self.may_hand_over:
            log.warning("state store %s: the previous run's windows were not taken over; closing these now", store)
            return False
        # even with no window open: the watermark, the dedup memory and the table travel too
        undelivered = self.sender.undelivered()
        try:
            snapshot = self.core.snapshot()
            snapshot["undelivered"] = undelivered
            text = dumps(snapshot)
        except Exception as error:  # noqa: BLE001 - then the windows close now, as without a store
            self.on_error("saving the open windows", error)
            self.sender.take_over(undelivered)  # back to the park: counted as lost at exit
            return False
        try:
            parts = await save_parts(self.sink, store, KEY, text, self.part_bytes)
        except SidecarError as error:
            log.error("state store %s: open windows not handed over, closing them now: %s", store, error)
            self.sender.take_over(undelivered)
            return False
        self.sender.parked.clear()
        events = sum(len(events) for window in snapshot["windows"] for events in window["events"].values())
        log.info(
            "state store %s: handed over %d open window(s), %d events, %d undelivered window(s) "
            "(%d bytes in %d part(s))",
            store,
            len(snapshot["windows"]),
            events,
            len(undelivered),
            len(text),
            parts,
        )
        return True


def _parts_of(manifest: Any) -> int:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), int) or manifest["parts"] < 1:
        raise ValueError(f"not a handover manifest: {str(manifest)[:80]}")
    return manifest["parts"]
