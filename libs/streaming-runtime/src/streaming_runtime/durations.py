"""Go-style durations (`1s`, `250ms`, `1m30s`), the format the original project's settings use."""

import math
import re

from streaming_runtime.errors import ConfigError

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str, *, setting: str = "duration") -> float:
    """Seconds in a Go duration string; a bare number is taken as seconds.

    >>> parse_duration("1m30s")
    90.0
    """
    value = text.strip()
    if not value:
        raise ConfigError(f"{setting} is empty: expected a duration such as 1s, 250ms or 1m30s")
    try:
        return _non_negative(float(value), setting, text)
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        raise ConfigError(
            f"{setting}={text!r} is not a duration: expected a number with a unit "
            "(ns, us, ms, s, m, h), such as 1s, 250ms or 1m30s"
        )
    return _non_negative(total, setting, text)


def _non_negative(seconds: float, setting: str, text: str) -> float:
    if not math.isfinite(seconds):  # float() takes "nan" and "inf"
        raise ConfigError(f"{setting}={text!r} is not a finite duration")
    if seconds < 0:
        raise ConfigError(f"{setting}={text!r} is negative")
    return seconds
