"""billable-proc's record of the calls it has billed: ``(window id, chunk) -> digest of the body``.

The newest ``SEEN_CALLS`` are kept in memory. With a Dapr state store (``PROC_STATE_STORE``) each is also
saved there, under ``billed.<window id>.<chunk>`` with a TTL (Dapr prefixes the key with the app id), so a
restarted billable-proc still recognises a retry of a call it billed before. A call is recorded before it
is billed: if the store cannot be read or written the call is answered 503 and not billed, and the
joiner sends it again (it parks and re-sends what does not go), so nothing is lost and nothing billed
twice.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

SEEN_CALLS = 10_000
Seen = Literal["new", "duplicate", "conflict"]


class BilledCalls:
    def __init__(
        self, store: Any | None = None, store_name: str | None = None, ttl_seconds: int = 7 * 24 * 3600
    ) -> None:
        self.store = store  # get_state_bytes / save_state_bytes, as streaming_runtime.sidecar.Sidecar has them
        self.store_name = store_name
        self.ttl_seconds = ttl_seconds
        self.memory: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def key(self, call: tuple[str, str]) -> str:
        return f"billed.{call[0]}.{call[1]}"

    async def seen(self, call: tuple[str, str], digest: bytes) -> Seen:
        """Whether ``call`` was billed before with this body (a retry), with another (a conflict), or not.
        Raises SidecarError when the state store cannot tell."""
        known = self.memory.get(call)
        if known is None and self.store is not None:
            known = await self.store.get_state_bytes(self.store_name, self.key(call))
        if known is None:
            return "new"
        return "duplicate" if known == digest else "conflict"

    async def record(self, call: tuple[str, str], digest: bytes) -> None:
        """Remember ``call`` (before it is billed); raises SidecarError when the store does not take it."""
        if self.store is not None:
            await self.store.save_state_bytes(
                self.store_name, self.key(call), digest, metadata={"ttlInSeconds": str(self.ttl_seconds)}
            )
        self.memory[call] = digest
        self.memory.move_to_end(call)
        if len(self.memory) > SEEN_CALLS:
            self.memory.popitem(last=False)
