"""One replica of several (``JOINER_REPLICA``, docs/scaling.md): its state-store keys and what names its output.

Dapr prefixes state keys with the app id, which every replica of the joiner shares, so without more the
replicas would take over each other's handover, journal and run record. :class:`ReplicaState` puts every key
the joiner writes under ``<replica>.`` (``join-tenants-poweruse-1.open-windows``): a restarted replica finds
its own windows and journal and never another's. Without a replica the keys are those of one joiner, unchanged.
"""

from __future__ import annotations

from typing import Any

from joiner.engine.eventtime import parse_time
from streaming_runtime.sidecar import SidecarPort

SOURCE_HEADER = "window-source"  # which replica delivered a window's call (window-id is the window's, on every one)


def state_key(replica: str | None, key: str) -> str:
    return f"{replica}.{key}" if replica else key


class ReplicaState:
    """The sidecar, with the state-store keys of one replica: every other call passes through unchanged."""

    def __init__(self, sink: SidecarPort, replica: str) -> None:
        self.sink = sink
        self.replica = replica

    def key(self, key: str) -> str:
        return state_key(self.replica, key)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await self.sink.wait_ready(timeout)

    async def invoke(self, app_id: str, method: str, data: Any, headers: dict[str, str] | None = None) -> None:
        await self.sink.invoke(app_id, method, data, headers)

    async def publish(
        self, pubsub: str, topic: str, data: Any, event_id: str | None = None, key: str | None = None
    ) -> None:
        await self.sink.publish(pubsub, topic, data, event_id, key)

    async def publish_many(
        self,
        pubsub: str,
        topic: str,
        items: list[Any],
        event_ids: list[str] | None = None,
        keys: list[str] | None = None,
    ) -> None:
        await self.sink.publish_many(pubsub, topic, items, event_ids, keys)

    async def publish_event(
        self, pubsub: str, topic: str, data: Any, event_type: str, extensions: dict[str, str]
    ) -> None:
        await self.sink.publish_event(pubsub, topic, data, event_type, extensions)

    async def get_state(self, store: str, key: str) -> Any | None:
        return await self.sink.get_state(store, self.key(key))

    async def get_state_bytes(self, store: str, key: str) -> bytes | None:
        return await self.sink.get_state_bytes(store, self.key(key))

    async def save_state(self, store: str, key: str, value: Any) -> None:
        await self.sink.save_state(store, self.key(key), value)

    async def save_state_bytes(self, store: str, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        await self.sink.save_state_bytes(store, self.key(key), data, metadata)

    async def create_states(
        self, store: str, items: dict[str, bytes], metadata: dict[str, str] | None = None
    ) -> dict[str, bytes]:
        held = await self.sink.create_states(store, {self.key(key): data for key, data in items.items()}, metadata)
        return {key: held[self.key(key)] for key in items if self.key(key) in held}

    async def delete_state(self, store: str, key: str) -> None:
        await self.sink.delete_state(store, self.key(key))


def state_sink(sink: SidecarPort, replica: str | None) -> SidecarPort:
    """What the handover, the journal and the run record keep their keys through."""
    return ReplicaState(sink, replica) if replica else sink


class HistoryGuard:
    """A new replica's Redis consumer group starts at the stream's first entry (``XGROUP CREATE ... 0``:
    docs/scaling.md), so a replica added to a running pipeline is first given the whole tenants history.
    In a processing-time window join that history would all land in the current window, and each reading
    would pair with every old copy of its tenant: billed many times over. So, for that join only, a
    first-stream event published (its CloudEvent ``time``, set by the publisher's daprd) more than one window
    before this replica started is skipped: answered SUCCESS, counted (``history_skipped``), not joined.
    A ``join: table`` wants the history (the latest record per key), and event time places old events by
    their own time (late ones are late), so neither is guarded."""

    def __init__(self, started: float, window_seconds: float) -> None:
        self.before = started - window_seconds
        self.skipped = 0

    def skips(self, cloudevent_time: str | None) -> bool:
        published = parse_time(cloudevent_time, "rfc3339") if cloudevent_time else None
        if published is None or published >= self.before:
            return False
        self.skipped += 1
        return True


def history_guard(
    replica: str | None, join_mode: str, event_time: bool, window_seconds: float, started: float
) -> HistoryGuard | None:
    """The guard for one replica of several in a processing-time window join; None otherwise."""
    if replica and join_mode == "window" and not event_time:
        return HistoryGuard(started, window_seconds)
    return None
