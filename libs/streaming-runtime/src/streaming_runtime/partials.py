"""Partial aggregates: what each joiner replica delivers of a window's ``aggregate`` (docs/scaling.md), and
how the parts combine into the rows one joiner would have made (billable-proc does it:
:mod:`message_proc.combine`).

A replica aggregates only its share of the readings, so instead of a value per field it delivers a *state*
that combines with the other replicas' states of the same group:

=========  ==========================  ==================================================
function   state of one part           combined
=========  ==========================  ==================================================
count      rows counted                the sum
sum        the sum, or null            the sum of the sums that are not null (null if none)
avg        ``[sum, numbers]``          all sums over all numbers (null if no number)
min, max   ``[number, string]``        the least (greatest) number; with no number anywhere,
           (either may be null)        the least (greatest) string, as one joiner compares
=========  ==========================  ==================================================

``last`` has no state that combines: it is the last row in arrival order, and replicas do not share an
arrival order. A joiner refuses ``last`` with ``JOINER_REPLICA`` at start-up.

The envelope of a part says how to read it: ``"partial": {"group_by": [...], "fields": {name: function}}``.
Rows carry the group's values under the ``group_by`` paths as written and each field's state under its name.
Groups are one group when their values are equal as JSON (``1`` and ``1.0`` alike), as in one joiner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

MERGEABLE = ("count", "sum", "avg", "min", "max")


def add(numbers: Iterable[int | float]) -> int | float:
    """A sum as one joiner makes it: integers stay integers, floats are added with ``math.fsum``."""
    values = list(numbers)
    if all(isinstance(number, int) for number in values):
        return sum(values)
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):  # inf + -inf, or a finite overflow: plain addition says nan/inf
        return sum(values, 0.0)


def group_key(value: Any) -> tuple[str, Any]:
    """A hashable key with JSON's equality: 1 == 1.0, but 1, "1" and true differ."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, float) and math.isnan(value):
        return ("number", "nan")  # nan != nan would give every such row its own group
    if isinstance(value, (int, float)):
        return ("number", value)  # Python's int/float equality and hash are exact: 1 == 1.0
    if isinstance(value, str):
        return ("string", value)
    return ("json", json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge(function: str, states: list[Any]) -> Any:
    """The value of one field of one group from its parts' states (see the module's table)."""
    if function == "count":
        return sum(int(state) for state in states if is_number(state))
    if function == "sum":
        present = [state for state in states if is_number(state)]
        return add(present) if present else None
    if function == "avg":
        pairs = [state for state in states if isinstance(state, list) and len(state) == 2 and is_number(state[1])]
        taken = sum(int(count) for _, count in pairs)
        sums = [total for total, count in pairs if count and is_number(total)]
        return add(sums) / taken if taken and sums else None
    if function in ("min", "max"):
        pick = min if function == "min" else max
        pairs = [state for state in states if isinstance(state, list) and len(state) == 2]
        numbers = [number for number, _ in pairs if is_number(number)]
        if numbers:
            return pick(numbers)
        strings = [text for _, text in pairs if isinstance(text, str)]
        return pick(strings) if strings else None
    raise ValueError(f"{function} has no partial state that combines (only {', '.join(MERGEABLE)})")


class PartialSpec:
    """How a part's rows read: the envelope's ``partial``. ValueError when it is not one."""

    def __init__(self, document: Any) -> None:
        if not isinstance(document, Mapping):
            raise ValueError(f"partial must be an object with group_by and fields, got {document!r}")
        group_by, fields = document.get("group_by"), document.get("fields")
        if not isinstance(group_by, list) or not all(isinstance(path, str) for path in group_by):
            raise ValueError(f"partial.group_by must be a list of field paths, got {group_by!r}")
        if not isinstance(fields, Mapping) or not fields:
            raise ValueError(f"partial.fields must map output names to functions, got {fields!r}")
        for name, function in fields.items():
            if function not in MERGEABLE:
                raise ValueError(f"partial.fields.{name}: {function!r} does not combine ({', '.join(MERGEABLE)})")
        self.group_by: list[str] = list(group_by)
        self.fields: dict[str, str] = dict(fields)

    def as_document(self) -> dict[str, Any]:
        return {"group_by": self.group_by, "fields": self.fields}


def combine(spec: PartialSpec, parts: Iterable[list[Any]]) -> list[dict[str, Any]]:
    """One row per group over every part's rows, groups in order of first appearance (parts in the order
    given); a row that is not an object is left out."""
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, list[Any]]]] = {}
    for rows in parts:
        for row in rows:
            if not isinstance(row, dict):
                continue
            values = [row.get(path) for path in spec.group_by]
            key = tuple(group_key(value) for value in values)
            entry = groups.get(key)
            if entry is None:
                entry = groups[key] = (dict(zip(spec.group_by, values)), {name: [] for name in spec.fields})
            for name in spec.fields:
                if name in row:
                    entry[1][name].append(row[name])
    out = []
    for head, states in groups.values():
        row = dict(head)
        for name, function in spec.fields.items():
            row[name] = merge(function, states[name])
        out.append(row)
    return out
