"""What billable-proc tells the rest of itself about each call it billed: one :class:`BilledCall`, given
to every observer (the metrics, :mod:`message_proc.metrics`; a dashboard) once the rows are billed.

An observer cannot fail the call: an error in one is reported (once per kind) and the others still run,
since the rows are billed and logged whatever an observer does with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from streaming_runtime.logs import ErrorReport

Outcome = Literal["billed", "conflict"]  # conflict: billed, though a call of the same id had other rows


@dataclass(frozen=True)
class BilledCall:
    rows: list[Any]  # the body's rows: its array, an envelope's "rows", or the body itself as one row
    headers: dict[str, str]  # window-id, window-chunk, window-end: those the call carried
    outcome: Outcome
    arrived: float  # epoch seconds


def rows_of(body: Any) -> list[Any]:
    """The rows of a body: a JSON array, the joiner's envelope (``{"window_id": ..., "rows": [...]}``), or
    anything else as one row."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and isinstance(body.get("rows"), list) and "window_id" in body:
        return body["rows"]
    return [body]


class CallObservers:
    def __init__(self, errors: ErrorReport) -> None:
        self.errors = errors
        self.observers: list[Callable[[BilledCall], None]] = []

    def add(self, observer: Callable[[BilledCall], None]) -> None:
        self.observers.append(observer)

    def __call__(self, call: BilledCall) -> None:
        for observer in self.observers:
            try:
                observer(call)
            except Exception as error:  # noqa: BLE001 - an observer must not fail a call already billed
                self.errors(f"observing a billed call ({getattr(observer, '__qualname__', observer)})", error)
