"""Event time: where it comes from, and the watermark that closes event-time windows.

With ``eventTime.field`` configured, an event's time is that field (epoch seconds, epoch
milliseconds or RFC 3339), else its CloudEvent ``time``, else the time it arrived. Without it, the
joiner windows by arrival time (processing time), as the original example did.

The watermark is the highest event time seen minus ``grace``: a window closes once the watermark
passes its end, so events up to ``grace`` out of order still land in their window. An event for a
window already closed is *late* (see the joiner service: counted, logged, published). Only events
that can take part in the join move the watermark (not those the stream's own conditions filter
out), and an event time more than ``maxFutureSkew`` ahead of the clock, or outside the years
1970-9999, is bad input: one publisher's wrong clock must not make everyone's events late.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from joiner.engine.paths import MISSING, field_at
from streaming_runtime.errors import ConfigError

TimeFormat = Literal["auto", "epoch_s", "epoch_ms", "rfc3339"]
_EPOCH_MS_ABOVE = 100_000_000_000  # 1e11 s is year 5138: larger numbers are milliseconds
DEFAULT_MAX_FUTURE_SKEW = 900.0  # seconds an event time may be ahead of the clock (eventTime.maxFutureSkew)
# event times a window can hold and print: 1970-01-01 to 9999-12-31 UTC
EARLIEST_TIME, LATEST_TIME = 0.0, 253_402_300_799.0


@dataclass(frozen=True)
class EventTimeSpec:
    field: tuple[str, ...]
    format: TimeFormat = "auto"
    grace: float = 0.0
    idle: float | None = None  # seconds without input after which open windows close; None: window + grace
    # an event further ahead of the clock is bad input: one wrong clock must not close everyone's windows
    max_future_skew: float = DEFAULT_MAX_FUTURE_SKEW


def parse_time(value: Any, time_format: TimeFormat = "auto") -> float | None:
    """Epoch seconds of a timestamp value, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        if time_format == "epoch_ms" or (time_format == "auto" and abs(value) >= _EPOCH_MS_ABOVE):
            return value / 1000.0
        return float(value) if time_format in ("auto", "epoch_s") else None
    if isinstance(value, str) and time_format in ("auto", "rfc3339"):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None  # RFC 3339 requires an offset; a naive time would depend on the host's zone
        return parsed.timestamp()
    return None


def event_time(spec: EventTimeSpec | None, data: Any, cloudevent_time: str | None, arrival: float) -> float:
    """The time that places an event in its window (see the module docstring for the order)."""
    if spec is None:
        return arrival
    value = field_at(data, spec.field)
    found = parse_time(value, spec.format) if value is not MISSING and value is not None else None
    if found is None and cloudevent_time:
        found = parse_time(cloudevent_time, "rfc3339")
    return arrival if found is None else found


def time_reader(spec: EventTimeSpec) -> Callable[[Any, str | None, float], float]:
    """:func:`event_time` for one spec, with the common case (a top-level field holding epoch seconds or
    milliseconds as a number) read inline: what a batch of events pays per event."""
    if len(spec.field) != 1 or spec.format not in ("auto", "epoch_s", "epoch_ms"):
        return lambda data, cloudevent_time, arrival: event_time(spec, data, cloudevent_time, arrival)
    name, milliseconds, isfinite = spec.field[0], spec.format == "epoch_ms", math.isfinite
    automatic = spec.format == "auto"

    def read(data: Any, cloudevent_time: str | None, arrival: float) -> float:
        if data.__class__ is dict:
            value = data.get(name)
            if (value.__class__ is float or value.__class__ is int) and isfinite(value):
                if milliseconds or (automatic and abs(value) >= _EPOCH_MS_ABOVE):
                    return value / 1000.0
                return float(value)
        return event_time(spec, data, cloudevent_time, arrival)

    return read


def time_problem(spec: EventTimeSpec, when: float, now: float) -> str | None:
    """Why ``when`` cannot place an event (too far ahead of ``now``, or outside 1970-9999), or None."""
    if not EARLIEST_TIME <= when <= LATEST_TIME:
        return f"event time {when:g} (epoch seconds) is outside the years 1970-9999"
    if when - now > spec.max_future_skew:
        return (
            f"event time {datetime.fromtimestamp(when, tz=UTC).isoformat()} is {when - now:.0f}s ahead "
            f"of the clock (eventTime.maxFutureSkew is {spec.max_future_skew:g}s)"
        )
    return None


class Watermark:
    """Highest event time seen, minus the grace period."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.highest = -math.inf

    def observe(self, when: float) -> None:
        if when > self.highest:
            self.highest = when

    @property
    def value(self) -> float:
        return self.highest - self.grace


def event_time_spec(values: dict[str, Any], setting: str = "eventTime") -> EventTimeSpec:
    """Validate the ``eventTime`` settings (field, format, grace, idle and max_future_skew seconds)."""
    field = values.get("field")
    if not isinstance(field, str) or not field.strip():
        raise ConfigError(f"{setting}.field must name the event's time field, such as ts or reading.time")
    time_format = values.get("format", "auto")
    if time_format not in ("auto", "epoch_s", "epoch_ms", "rfc3339"):
        raise ConfigError(f"{setting}.format={time_format!r}: expected auto, epoch_s, epoch_ms or rfc3339")
    return EventTimeSpec(
        field=tuple(part for part in field.strip().split(".")),
        format=time_format,
        grace=values.get("grace", 0.0),
        idle=values.get("idle"),
        max_future_skew=values.get("max_future_skew", DEFAULT_MAX_FUTURE_SKEW),
    )
