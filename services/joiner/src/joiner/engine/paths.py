"""Reading a field of an event by its path (``reading.meta.ts`` -> ``("reading", "meta", "ts")``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MISSING: Any = object()


def field_at(data: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` through nested objects, or ``MISSING`` (arrays are not walked into)."""
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data
