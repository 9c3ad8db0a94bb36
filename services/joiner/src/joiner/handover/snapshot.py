"""The core's state as JSON, and back: what the next run continues from (see :mod:`joiner.handover`).

Filtered events are not held, and rows are not kept: replaying the events remakes them."""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from joiner.engine.windows import Window
from streaming_runtime.errors import MalformedEvent

if TYPE_CHECKING:
    from joiner.core import JoinCore

log = logging.getLogger("joiner")

VERSION = 1


def take(core: JoinCore) -> dict[str, Any]:
    """The open windows and the events they hold; with event time also the watermark and how far windows
    were closed, with dedup what it remembers, with a table join the table."""
    return {
        "version": VERSION,
        "join": core.config.join_mode,
        "watermark": _finite(core.watermark.highest) if core.event_time_mode else None,
        "closed_through": _finite(core.windows.closed_through),
        "dedup": [[key, recorded] for key, recorded in core.dedup.entries()] if core.dedup is not None else [],
        "streams": list(core.streams),
        "window_seconds": core.config.window_seconds,
        "windows": [
            {"start": window.start, "end": window.end, "part": window.part, "events": core.mode.held(state)}
            for window, state in core.windows.open_windows()
        ],
        "table": core.mode.table(),
    }


def restore(core: JoinCore, snapshot: Any) -> int:
    """Reopen the windows of a snapshot and replay their events into them (into the same windows if
    deliveries opened them already); the number of events. A window whose end has passed closes at the
    next tick. ValueError when the snapshot is not one of this joiner's."""
    if not isinstance(snapshot, dict) or snapshot.get("version") != VERSION:
        raise ValueError(f"not a handover snapshot of version {VERSION}")
    if snapshot.get("streams") != list(core.streams):
        raise ValueError(f"it joins {snapshot.get('streams')}, this joiner {list(core.streams)}")
    if snapshot.get("window_seconds") != core.config.window_seconds or snapshot.get("join") != core.config.join_mode:
        return _carry_over(core, snapshot)
    count = core.mode.merge_table(snapshot.get("table") or []) if core.mode.name == "table" else 0
    for entry in snapshot.get("windows") or []:
        window = Window(float(entry["start"]), float(entry["end"]), int(entry.get("part", 0)))
        state = core.windows.reopen(window)
        state.bytes += len(json.dumps(entry.get("events"), separators=(",", ":")))
        count += core.mode.hold(state, entry.get("events") or {})
    if snapshot.get("closed_through") is not None:
        core.windows.closed_through = max(core.windows.closed_through, float(snapshot["closed_through"]))
    _resume(core, snapshot)
    core.stats.restored += count
    return count


def _carry_over(core: JoinCore, snapshot: dict[str, Any]) -> int:
    """A snapshot of the same streams under another window size or join mode: the configuration changed
    across the restart. Its windows were open, so none of their events has made a row yet: each is offered
    again, now, to this configuration (in event time it falls in the window of its own time), the table's
    latest versions too; then the dedup memory comes over. Nothing of it was billed, so nothing is billed
    twice, and nothing is dropped but what this configuration's own rules drop."""
    count = 0

    def offer(index: int, data: Any, event_id: Any) -> None:
        nonlocal count
        try:
            core.offer(index, data, event_id if isinstance(event_id, str) else None)
            count += 1
        except MalformedEvent as error:
            core.stats.dropped[core.streams[index]] += 1
            log.warning("handed-over event dropped stream=%s id=%s reason=%s", core.streams[index], event_id, error)

    table = snapshot.get("table") or []
    if core.mode.name == "table":
        count += core.mode.merge_table(table)
    else:
        for _, versions in table:
            if versions:
                offer(0, max(versions, key=lambda version: float(version[0]))[1], None)  # its latest version
    for entry in snapshot.get("windows") or []:
        for index, name in enumerate(core.streams):
            for held in entry.get("events", {}).get(name, []):
                offer(index, held[0], held[1])
    _resume(core, snapshot)  # after the offers, or dedup would take the carried events for redeliveries
    log.info(
        "carried over %d event(s) of %d open window(s) saved under another configuration (%gs windows, "
        "join: %s) into this one (%gs, join: %s)",
        count,
        len(snapshot.get("windows") or []),
        snapshot.get("window_seconds"),
        snapshot.get("join"),
        core.config.window_seconds,
        core.config.join_mode,
    )
    core.stats.restored += count
    return count


def _resume(core: JoinCore, snapshot: dict[str, Any]) -> None:
    """The dedup memory and the watermark of the snapshot: what the watermark had passed closes now."""
    if core.dedup is not None:
        core.dedup.merge([(_as_key(key), float(recorded)) for key, recorded in snapshot.get("dedup") or []])
    if core.event_time_mode and snapshot.get("watermark") is not None:
        core.watermark.observe(float(snapshot["watermark"]))
        core.close_through(core.watermark.value)


def _finite(value: float) -> float | None:
    """JSON has no infinity: None stands for 'nothing yet'."""
    return value if math.isfinite(value) else None


def _as_key(value: Any) -> Any:
    """A dedup key back from JSON, where its tuples became lists."""
    return tuple(_as_key(part) for part in value) if isinstance(value, list) else value
