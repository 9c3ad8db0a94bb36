"""Lines to events: msgspec's flat decoder, the exact way of the live joiner for what it does not take, and
the reasons a line is skipped (poison, an event time out of bounds, an unexpected error)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

import msgspec

from joiner.engine.eventtime import EARLIEST_TIME, LATEST_TIME, EventTimeSpec
from joiner.engine.windows import Window
from streaming_runtime.cloudevents import loads
from streaming_runtime.values import value_problem

# what rfc3339 can print, as the live joiner bounds event times (datetime has years 1..9999)
EARLIEST, LATEST = EARLIEST_TIME, LATEST_TIME

# A flat object of values every JSON reader reads alike (what almost every event is), decoded and checked
# in one step: msgspec refuses non-finite numbers, bad surrogates and bad UTF-8, the bounds refuse
# integers beyond 64 bits (as value_problem does), and a nested value is not of this type. Everything
# it does not take goes the exact way below, so the outcome and the reasons are those of the live joiner.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63) + 1, le=2**63 - 1)]
FLAT = msgspec.json.Decoder(dict[str, Union[_Int64, float, str, bool, None]])  # noqa: UP007 - a runtime type
_ANY = msgspec.json.Decoder()


def decode_exactly(raw: bytes) -> tuple[Any] | str | None:
    """``(data,)`` of a line the flat decoder did not take, else the reason it is skipped; None if blank."""
    try:
        data = _ANY.decode(raw)  # nested data, mostly: msgspec reads it as Python's json does
    except Exception:  # noqa: BLE001 - any refusal (even a RecursionError) is explained below
        pass
    else:
        if value_problem(data) is None:
            return (data,)
    # a refusal: in the words of the live joiner, which reads with Python's json
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:  # byte counted from 1, as JSON errors count columns
        return f"not valid UTF-8 at byte {error.start + 1} (0x{raw[error.start]:02x})"
    if not line.strip():
        return None
    try:
        data = loads(line)
    except ValueError as error:
        return f"not JSON: {error}"
    if (problem := value_problem(data)) is not None:
        return problem  # what the live joiner drops as poison: it could not be written out in a row
    return (data,)


def time_reason(when: float, spec: EventTimeSpec, window_at: Callable[[float], Window]) -> str | None:
    """Why an event time cannot place its line, or None."""
    if when != when:  # NaN: neither the field nor a CloudEvent time
        return f"no event time in field {'.'.join(spec.field)}"
    # checked before window_at, whose float arithmetic gives absurd (even zero-width) windows out there
    if not EARLIEST <= when <= LATEST:
        return f"event time {when!r} (epoch seconds) is outside the years 1970-9999"
    if window_at(when).end > LATEST:
        return f"event time {when!r} (epoch seconds) is in a window that ends after the year 9999"
    return None


def unexpected(error: BaseException) -> str:
    return f"unexpected {type(error).__name__}: {error}"
