"""Byte sizes as people and Kubernetes write them: ``65536``, ``64Ki``, ``64MiB``, ``1.5GB``."""

import math
import re

from streaming_runtime.errors import ConfigError

_UNIT_BYTES = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")


def parse_bytes(text: object, *, setting: str = "size") -> int:
    """Bytes in ``text``: a whole number, or a number with a unit (B, KB/MB/GB, Ki/Mi/Gi or KiB/MiB/GiB).

    >>> parse_bytes("64Mi")
    67108864
    """
    if isinstance(text, bool):
        raise ConfigError(f"{setting}={text!r} is not a size: expected bytes, such as 65536, 64Mi or 64MiB")
    match = _SIZE.match(str(text).replace("_", ""))
    unit = _UNIT_BYTES.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ConfigError(f"{setting}={text!r} is not a size: expected bytes, such as 65536, 64Mi or 64MiB")
    value = float(match.group(1)) * unit
    if not math.isfinite(value) or value < 1:
        raise ConfigError(f"{setting}={text!r}: must be at least 1 byte")
    return int(value)
