"""Tumbling windows in processing time, aligned to the epoch.

A window of size ``s`` covers ``[k*s, (k+1)*s)``; an event belongs to the window that holds the
time it arrived. A window is due once the clock reaches its end. What a window holds is opaque
here (``new_state`` makes it), and the clock is a parameter, so tests drive it by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from joiner.engine.state import MemoryStore, StateStore

S = TypeVar("S")


@dataclass(frozen=True, order=True)
class Window:
    start: float
    end: float
    part: int = 0  # >0 when a full window was closed early and continued (see JoinEngine)

    @property
    def id(self) -> str:
        """Stable identifier: the start in epoch milliseconds (and the part, for a split window)."""
        base = str(int(round(self.start * 1000)))
        return f"{base}-{self.part}" if self.part else base


NAMESPACE = "windows"


class TumblingWindows(Generic[S]):
    """The open windows and their states, kept in a StateStore (namespace ``windows``, key = start).

    A window's state is the engine's working object, changed in place as events arrive; a durable
    store will have to snapshot it (at least at close), which is why it goes through the store at all.
    """

    def __init__(self, size_seconds: float, new_state: Callable[[], S], store: StateStore | None = None) -> None:
        if not size_seconds > 0:
            raise ValueError("window size must be positive")
        self.size = float(size_seconds)
        self._new_state = new_state
        self._store = store if store is not None else MemoryStore()
        self.closed_through = -math.inf  # every window ending at or before this has been closed
        # the end of the oldest open window (inf: none), kept as windows open and close: close_due runs
        # after every event-time batch and most often has nothing to close
        self._first_end = math.inf

    def window_at(self, when: float) -> Window:
        start = math.floor(when / self.size) * self.size
        return Window(start, start + self.size)

    def state_at(self, now: float) -> tuple[Window, S]:
        """The window holding ``now`` and its state, opened if needed."""
        start = math.floor(now / self.size) * self.size
        entry = self._store.get(NAMESPACE, start)
        if entry is None:
            entry = (Window(start, start + self.size), self._new_state())
            self._store.put(NAMESPACE, start, entry)
            self._first_end = min(self._first_end, start + self.size)
        return entry

    def is_late(self, when: float) -> bool:
        """Whether the window holding ``when`` has already been closed."""
        return self.window_at(when).end <= self.closed_through

    def close_due(self, now: float) -> list[tuple[Window, S]]:
        """Remove and return, oldest first, every window whose end is at or before ``now``.

        ``now`` is the clock in processing time, the watermark in event time."""
        if now > self.closed_through:
            self.closed_through = now
        if now < self._first_end:
            return []
        due = sorted(cast(float, start) for start, (window, _) in self._store.items(NAMESPACE) if window.end <= now)
        closed = [self._store.pop(NAMESPACE, start) for start in due]
        self._recount()
        return closed

    def _recount(self) -> None:
        self._first_end = min((window.end for _, (window, _) in self._store.items(NAMESPACE)), default=math.inf)

    def split(self, window: Window) -> tuple[Window, S]:
        """Close ``window`` early and continue its time range in a fresh state (next part)."""
        closed = self._store.pop(NAMESPACE, window.start)
        continued = Window(window.start, window.end, window.part + 1)
        self._store.put(NAMESPACE, window.start, (continued, self._new_state()))
        return closed

    def close_all(self) -> list[tuple[Window, S]]:
        """Every open window, oldest first (when input goes idle, and when the service stops)."""
        closed = [
            self._store.pop(NAMESPACE, start)
            for start in sorted(cast(float, start) for start, _ in self._store.items(NAMESPACE))
        ]
        if closed and closed[-1][0].end > self.closed_through:
            self.closed_through = closed[-1][0].end
        self._first_end = math.inf
        return closed

    def open_windows(self) -> list[tuple[Window, S]]:
        """The open windows and their states, oldest first (they stay open)."""
        return [entry for _, entry in sorted(self._store.items(NAMESPACE), key=lambda item: cast(float, item[0]))]

    def reopen(self, window: Window) -> S:
        """The state of ``window`` (a handed-over one): the open window with its start if there is
        one (deliveries may have opened it already), else a fresh one, open from now on."""
        entry = self._store.get(NAMESPACE, window.start)
        if entry is None:
            entry = (window, self._new_state())
            self._store.put(NAMESPACE, window.start, entry)
            self._first_end = min(self._first_end, window.end)
        return entry[1]

    def earliest_end(self) -> float | None:
        """The end of the oldest open window (None when none is open)."""
        return self._first_end if math.isfinite(self._first_end) else None

    @property
    def open_count(self) -> int:
        return self._store.size(NAMESPACE)

    def states(self) -> list[S]:
        return [state for _, (_, state) in self._store.items(NAMESPACE)]
