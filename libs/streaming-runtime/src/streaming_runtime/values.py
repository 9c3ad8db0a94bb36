"""Which decoded JSON values an event may carry: what every JSON reader reads alike and what can be
written back out, so that nothing accepted at the edge can fail later (in a window, a row, a call).

Python's ``json`` reads ``1e400`` as ``inf`` (which it writes back as ``Infinity``, not JSON), a lone
``"\\ud800"`` escape as a string that cannot be encoded as UTF-8, integers of any size, and nesting as deep
as its recursion limit. Such values are refused here with the place where they are, e.g.
``data.kwh_use is inf, not a finite number``.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32  # containers inside containers; a reading has one
INT_LIMIT = 2**63  # beyond a signed 64-bit integer no common JSON reader keeps an integer exactly


def value_problem(value: Any, where: str = "data", max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (as ``json.loads`` makes it) cannot be accepted, naming the place; None if it can."""
    stack: list[tuple[Any, int, str]] = [(value, 0, where)]
    while stack:
        current, depth, path = stack.pop()
        kind = type(current)
        if kind is dict:
            if depth >= max_depth:
                return f"{path} is nested deeper than {max_depth} levels"
            for key, item in current.items():
                if not key.isascii() and _not_unicode(key):
                    return f"a key of {path} is not Unicode text (a lone surrogate)"
                if type(item) in _CONTAINERS:
                    stack.append((item, depth + 1, f"{path}.{key}"))
                elif (problem := _scalar_problem(item)) is not None:
                    return f"{path}.{key} {problem}"
        elif kind is list:
            if depth >= max_depth:
                return f"{path} is nested deeper than {max_depth} levels"
            for index, item in enumerate(current):
                if type(item) in _CONTAINERS:
                    stack.append((item, depth + 1, f"{path}[{index}]"))
                elif (problem := _scalar_problem(item)) is not None:
                    return f"{path}[{index}] {problem}"
        elif (problem := _scalar_problem(current)) is not None:
            return f"{path} {problem}"
    return None


_CONTAINERS = (dict, list)


def _scalar_problem(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return None if value.isascii() or not _not_unicode(value) else "is not Unicode text (a lone surrogate)"
    if kind is float:
        return None if math.isfinite(value) else f"is {value!r}, not a finite number"
    if kind is int:
        return None if -INT_LIMIT < value < INT_LIMIT else "is an integer beyond 64 bits"
    return None  # bool, None; json.loads makes nothing else


def _not_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
