"""billable-proc's record of the calls it has billed: ``(source, window id, chunk) -> digest of the body``.

``source`` is the call's ``window-source`` header: the joiner replica that sent it (docs/scaling.md), ""
when the call has none (one joiner). Several replicas deliver parts of the same window (the same
``window-id``), each its own: a part of another source is billed, a retry of the same source's part is a
duplicate, and a conflict is one source's same call with other rows.

The newest ``SEEN_CALLS`` are kept in memory. With a Dapr state store (``PROC_STATE_STORE``) each is also
saved there, under ``billed.<window id>.<chunk>`` (a call without a source: the key one joiner's calls
always had) or ``billed:<source>.<window id>.<chunk>`` with a TTL (Dapr prefixes the key with the app id),
so a restarted billable-proc still recognises a retry of a call it billed before. A call is recorded
before it is billed: if the store cannot be read or written the call is answered 503 and not billed, and
the joiner sends it again (it parks and re-sends what does not go), so nothing is lost and nothing billed
twice.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Literal

SEEN_CALLS = 10_000
Seen = Literal["new", "duplicate", "conflict"]
Call = tuple[str, str, str]  # (source, window id, chunk)
SOURCE_HEADER = "window-source"  # the joiner's (joiner.replica.SOURCE_HEADER)
# a source ends at the key's first "." (the joiner's replica names have none: joiner.config.readers.replica)
SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


class BilledCalls:
    def __init__(
        self, store: Any | None = None, store_name: str | None = None, ttl_seconds: int = 7 * 24 * 3600
    ) -> None:
        self.store = store  # get_state_bytes / save_state_bytes, as streaming_runtime.sidecar.Sidecar has them
        self.store_name = store_name
        self.ttl_seconds = ttl_seconds
        self.memory: OrderedDict[Call, bytes] = OrderedDict()

    def key(self, call: Call) -> str:
        source, window, chunk = call
        return f"billed:{source}.{window}.{chunk}" if source else f"billed.{window}.{chunk}"

    async def seen(self, call: Call, digest: bytes) -> Seen:
        """Whether ``call`` was billed before with this body (a retry), with another (a conflict), or not.
        Raises SidecarError when the state store cannot tell."""
        known = self.memory.get(call)
        if known is None and self.store is not None:
            known = await self.store.get_state_bytes(self.store_name, self.key(call))
        if known is None:
            return "new"
        return "duplicate" if known == digest else "conflict"

    async def record(self, call: Call, digest: bytes) -> None:
        """Remember ``call`` (before it is billed); raises SidecarError when the store does not take it."""
        if self.store is not None:
            await self.store.save_state_bytes(
                self.store_name, self.key(call), digest, metadata={"ttlInSeconds": str(self.ttl_seconds)}
            )
        self.memory[call] = digest
        self.memory.move_to_end(call)
        if len(self.memory) > SEEN_CALLS:
            self.memory.popitem(last=False)
