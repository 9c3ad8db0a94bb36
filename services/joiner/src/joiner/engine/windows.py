"""Tumbling windows in processing time, aligned to the epoch.

A window of size ``s`` covers ``[k*s, (k+1)*s)``; an event belongs to the window that holds the
time it arrived. A window is due once the clock reaches its end. The clock is a parameter,
so tests drive it by hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Window:
    start: float
    end: float

    @property
    def id(self) -> str:
        """Stable identifier: the start in epoch milliseconds."""
        return str(int(round(self.start * 1000)))


@dataclass(frozen=True)
class Event:
    """One accepted event: its CloudEvent id (for logs) and its data."""

    id: str | None
    data: dict[str, Any]


@dataclass
class ClosedWindow:
    window: Window
    events: dict[str, list[Event]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(items) for items in self.events.values())


class TumblingWindows:
    """Buffers events per window and per stream until the window is due."""

    def __init__(self, size_seconds: float, streams: Iterable[str]) -> None:
        if not size_seconds > 0:
            raise ValueError("window size must be positive")
        self.size = float(size_seconds)
        self.streams = tuple(streams)
        self._open: dict[float, ClosedWindow] = {}

    def window_at(self, when: float) -> Window:
        start = math.floor(when / self.size) * self.size
        return Window(start, start + self.size)

    def add(self, stream: str, event: Event, now: float) -> Window:
        window = self.window_at(now)
        buffer = self._open.get(window.start)
        if buffer is None:
            buffer = ClosedWindow(window, {name: [] for name in self.streams})
            self._open[window.start] = buffer
        buffer.events[stream].append(event)
        return window

    def close_due(self, now: float) -> list[ClosedWindow]:
        """Remove and return, oldest first, every window whose end is at or before ``now``."""
        due = sorted(start for start, buffer in self._open.items() if buffer.window.end <= now)
        return [self._open.pop(start) for start in due]

    def close_all(self) -> list[ClosedWindow]:
        """Every open window, oldest first (used when the service stops)."""
        return [self._open.pop(start) for start in sorted(self._open)]

    @property
    def buffered(self) -> int:
        return sum(buffer.size for buffer in self._open.values())
