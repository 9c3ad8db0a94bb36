"""``join: table``: the first stream is a table, the second a stream joined against it.

The table keeps, per key (the equality key of ``where``), the versions of its record by event time.
A record for which ``deletedWhen`` holds, or that the table stream's filters reject, removes the
key from its time on. Each event of the second stream is held in its window and, when the window
closes, joins the version valid at its event time (the latest at or before it), so a reading is
billed once however often tenants are re-sent, and a version that arrives after a reading but is
older than it (within grace, as the window is still open) is the one it joins. A reading that finds
no version when its window closes is counted (``table_misses``) and logged. Table state outlives
window closes; versions older than what any on-time event can still ask for are pruned.
"""

from __future__ import annotations

import bisect
from typing import Any

from joiner.engine.join import FILTERED_OUT, JoinEngine, WindowState, is_true
from joiner.engine.state import StateStore
from streaming_runtime.errors import EvaluationError, MalformedEvent
from streaming_runtime.expressions import Expression
from streaming_runtime.jsonata_compiler import FastExpression

_DELETED = None  # a version that removes the key
NAMESPACE = "table"


class VersionedTable:
    def __init__(self, engine: JoinEngine, store: StateStore, deleted_when: Expression | None = None) -> None:
        if not engine.plan.keys:  # joiner.config.TableJoinConfig says so to the user first
            raise ValueError(
                "join: table needs an equality between the two streams in where "
                f"(such as {engine.streams[0]}.id = {engine.streams[1]}.id) to key the table"
            )
        self.engine = engine
        self.store = store
        self.deleted_when = FastExpression(deleted_when, (engine.streams[0],)) if deleted_when else None
        self.updates = 0
        self.deletes = 0

    # -- the table stream ---------------------------------------------------------------------

    def update(self, data: Any, event_time: float) -> str:
        """Apply one table record: "updated", "deleted" (deletedWhen), "rejected" (the filters: the key
        is deleted too), or MalformedEvent."""
        engine = self.engine
        if not isinstance(data, dict):
            engine.check(0, data)  # raises with the usual message
        if self.deleted_when is not None:
            try:
                if is_true(self.deleted_when(data)):
                    return self._put(self._key_or_raise(data), event_time, _DELETED)
            except EvaluationError as error:
                raise MalformedEvent(f"{engine.streams[0]} record: table.deletedWhen failed: {error}") from None
        engine.check(0, data)
        key = self._key_or_raise(data)
        if not engine.passes_filters(0, data):
            self._put(key, event_time, _DELETED)  # a record the filters reject is not in the table
            return "rejected"
        return self._put(key, event_time, data)

    def _key_or_raise(self, data: dict) -> Any:
        key = self.engine.plain_key(0, data)
        if key is None:
            raise MalformedEvent(
                f"{self.engine.streams[0]} record has no plain key "
                f"({', '.join('.'.join(k.left) for k in self.engine.plan.keys)}) to index the table by"
            )
        return key

    def _put(self, key: Any, event_time: float, record: dict | None) -> str:
        versions: list[tuple[float, dict | None]] = self.store.get(NAMESPACE, key) or []
        times = [when for when, _ in versions]
        position = bisect.bisect_right(times, event_time)
        versions.insert(position, (event_time, record))
        self.store.put(NAMESPACE, key, versions)
        if record is None:
            self.deletes += 1
            return "deleted"
        self.updates += 1
        return "updated"

    def row_at(self, key: Any, event_time: float) -> dict | None:
        versions = self.store.get(NAMESPACE, key)
        if not versions:
            return None
        position = bisect.bisect_right([when for when, _ in versions], event_time)
        return versions[position - 1][1] if position else None

    def prune(self, before: float) -> None:
        """Forget versions no on-time event can ask for: keep, per key, the newest at or before ``before``."""
        for key, versions in list(self.store.items(NAMESPACE)):
            position = bisect.bisect_right([when for when, _ in versions], before)
            if position > 1:
                kept = versions[position - 1 :]
                if kept == [(kept[0][0], None)]:
                    self.store.delete(NAMESPACE, key)
                else:
                    self.store.put(NAMESPACE, key, kept)

    def versions(self) -> list[tuple[Any, list[tuple[float, dict | None]]]]:
        """Every key and its versions (for a handover)."""
        return list(self.store.items(NAMESPACE))

    def merge(self, key: Any, versions: list[tuple[float, dict | None]]) -> None:
        """Add a previous run's versions of ``key`` to this run's, in time order (this run's last among
        equal times: they arrived later)."""
        mine = self.store.get(NAMESPACE, key) or []
        self.store.put(NAMESPACE, key, sorted([*versions, *mine], key=lambda version: version[0]))

    @property
    def size(self) -> int:
        return self.store.size(NAMESPACE)

    # -- the joined stream ----------------------------------------------------------------------

    def accept(self, state: WindowState, data: Any, event_id: str | None, event_time: float) -> bool:
        """Hold one event of the second stream in ``state`` until its window closes (see :meth:`join`)."""
        engine = self.engine
        engine.check(1, data)
        if not engine.passes_filters(1, data):
            return FILTERED_OUT
        state.count += 1
        state.timed.append((data, event_id, event_time))
        return True

    def join(self, state: WindowState) -> list[tuple[str | None, Any]]:
        """Join the window's held events with the table rows valid at their times (rows go to ``state``);
        ``(id, key)`` of each event that found none."""
        engine = self.engine
        misses: list[tuple[str | None, Any]] = []
        for data, event_id, event_time in state.timed:
            key = engine.plain_key(1, data)
            row = self.row_at(key, event_time) if key is not None else None
            if row is None:
                misses.append((event_id, key))
                continue
            state.pairs += 1
            engine.pair(state, (row, None), (data, event_id), engine.plan.residual)
        state.timed.clear()
        return misses
