"""Optional aggregation of a window's rows, after ``select`` shaped them.

Configured in the Joiner YAML beside ``select``::

    aggregate:
      group_by: [customer_id]            # dotted paths allowed: [tenant.customer_id]
      fields:                            # output name: "fn(field)", in output order
        kwh: "sum(tenant_kwh_usage)"
        peak: "max(tenant_kwh_usage)"
        n: "count()"
        mean: "avg(tenant_kwh_usage)"
        low: "min(tenant_kwh_usage)"
        latest: "last(tenant_kwh_usage)"

Each window's rows are grouped by the values at the ``group_by`` paths, and each group becomes one
output row: the ``group_by`` values under their paths as written (``"tenant.customer_id": 7``),
then the aggregates in the order configured. Groups come out in the order of their first row.
Without ``group_by`` (or with ``[]``) the whole window is one group; a window without rows gives
no row at all (not SQL's single row with ``count() = 0``: a window without rows sends nothing).

Semantics follow SQL, applied to JSON values:

* Grouping is by JSON value: ``1`` and ``1.0`` are the same number, so the same group (the output
  shows the first row's spelling); ``1``, ``"1"`` and ``true`` are three groups. A missing field
  and ``null`` group together, under ``null``.
* A row that lacks the aggregated field, or holds ``null`` there, is left out of sum, avg, min,
  max and last; ``count()`` counts every row of the group.
* ``sum`` and ``avg`` take numbers only (booleans are not numbers). Any other value is left out and
  counted in :attr:`Aggregated.ignored`, once per aggregate that met it. A sum of integers stays an
  integer; with any float it is a float, added with ``math.fsum`` so the result does not depend
  on the order of the rows. ``avg`` is that sum divided by how many numbers there were.
* ``min`` and ``max`` compare numbers; a group with no number there compares its strings (code
  point order) instead. So a mix of numbers and strings uses the numbers only, and the strings are
  counted as ignored; booleans, objects and lists are always ignored and counted.
* ``last`` is the value of the last row, in arrival order, that has the field (of any type).
* An aggregate with no value to work on gives ``null``.
* A row that is not an object cannot be grouped: it is skipped and counted in
  :attr:`Aggregated.skipped_rows`.

Choosing ``sum`` or ``max`` for power: the panels' ``kwh_use`` may be a cumulative meter reading
rather than the energy used since the previous reading. Summing cumulative readings counts the same
energy many times; for those, ``max`` (the latest total, as the Confluent datacenter billing recipe
does per month) or ``max`` minus ``min`` over the window is the right figure. ``sum`` is right when
each reading is the energy of its own interval. Both are offered because the data decides.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from joiner.engine.paths import MISSING, field_at
from streaming_runtime.errors import ConfigError
from streaming_runtime.partials import add as _sum
from streaming_runtime.partials import group_key as _group_key
from streaming_runtime.partials import is_number as _is_number

Function = Literal["sum", "max", "min", "count", "avg", "last"]
FUNCTIONS: tuple[Function, ...] = ("sum", "max", "min", "count", "avg", "last")

_CHOICES = "sum(field), max(field), min(field), count(), avg(field), last(field)"
_CALL = re.compile(r"^\s*([A-Za-z_]+)\s*\(\s*(.*?)\s*\)\s*$")
_PATH = re.compile(r"^[^.,\s()]+(\.[^.,\s()]+)*$")


@dataclass(frozen=True)
class AggregateField:
    """One output column: ``name`` = ``function(path)``; ``path`` is None for ``count()``."""

    name: str
    function: Function
    path: str | None


@dataclass(frozen=True)
class AggregateSpec:
    group_by: tuple[str, ...]
    fields: tuple[AggregateField, ...]


@dataclass(frozen=True)
class Aggregated:
    """The window's output rows, and what was left out making them (for stats and logs)."""

    rows: list[dict[str, Any]]
    ignored: int
    """Values of the wrong type met by sum, avg, min or max (once per aggregate)."""
    skipped_rows: int
    """Rows that were not objects."""


def parse_aggregate(value: Any, setting: str = "aggregate") -> AggregateSpec:
    """Check the ``aggregate`` setting; every problem is a one-line ConfigError naming the setting."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{setting}: expected a mapping with group_by and fields, got {value!r}")
    for key in value:
        if key not in ("group_by", "fields"):
            raise ConfigError(f"{setting}.{key}: unknown setting; expected group_by and fields")
    group_by = _parse_group_by(_or(value.get("group_by"), []), f"{setting}.group_by")
    if "fields" not in value:
        raise ConfigError(
            f'{setting}.fields is missing: name at least one output, such as kwh: "sum(tenant_kwh_usage)"'
        )
    fields = _or(value["fields"], {})
    if not isinstance(fields, Mapping):
        raise ConfigError(f'{setting}.fields: expected a mapping of output name to "fn(field)", got {fields!r}')
    if not fields:
        raise ConfigError(f'{setting}.fields is empty: name at least one output, such as kwh: "sum(tenant_kwh_usage)"')
    parsed = []
    for name, text in fields.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{setting}.fields: output name {name!r} must be non-empty text")
        field_setting = f"{setting}.fields.{name}"
        if name in group_by:
            raise ConfigError(f"{field_setting}: the output name is also a group_by field; choose another name")
        parsed.append(_parse_field(name, text, field_setting))
    return AggregateSpec(group_by=group_by, fields=tuple(parsed))


def _or(value: Any, empty: Any) -> Any:
    """YAML's ``key:`` with nothing after it is null; read it as the empty value, not as a type error."""
    return empty if value is None else value


def _parse_group_by(value: Any, setting: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{setting}: expected a list of field paths, such as [customer_id], got {value!r}")
    paths: list[str] = []
    for index, path in enumerate(value):
        if not isinstance(path, str) or not _PATH.match(path):
            raise ConfigError(
                f"{setting}[{index}]: expected a field path such as customer_id or tenant.id, got {path!r}"
            )
        if path in paths:
            raise ConfigError(f"{setting}[{index}]: {path} is listed twice")
        paths.append(path)
    return tuple(paths)


def _parse_field(name: str, text: Any, setting: str) -> AggregateField:
    if not isinstance(text, str):
        raise ConfigError(f'{setting}: expected "fn(field)" such as "sum(tenant_kwh_usage)", got {text!r}')
    quoted = json.dumps(text, ensure_ascii=False)
    call = _CALL.match(text)
    function = call.group(1).lower() if call else ""
    if function not in FUNCTIONS:
        raise ConfigError(f"{setting}: {quoted} is not one of {_CHOICES}")
    path = call.group(2) if call else ""
    if function == "count":
        if path:
            raise ConfigError(f"{setting}: count() takes no field (it counts the group's rows), got {quoted}")
        return AggregateField(name=name, function="count", path=None)
    if not path:
        raise ConfigError(f'{setting}: {function} needs a field, such as "{function}(tenant_kwh_usage)", got {quoted}')
    if not _PATH.match(path):
        raise ConfigError(f"{setting}: {quoted}: {path!r} is not a field path such as tenant_kwh_usage or panel.kwh")
    return AggregateField(name=name, function=cast(Function, function), path=path)


def aggregate(rows: list[Any], spec: AggregateSpec, partial: bool = False) -> Aggregated:
    """One output row per group of ``rows``, in order of each group's first row (see module docs).
    ``partial``: each field's state instead of its value, for one replica of several to deliver
    (:mod:`streaming_runtime.partials`, which combines the parts)."""
    group_paths = [path.split(".") for path in spec.group_by]
    field_paths = [field.path.split(".") if field.path else None for field in spec.fields]
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], list[_Accumulator]]] = {}
    skipped = 0
    for row in rows:
        if not isinstance(row, dict):
            skipped += 1
            continue
        values = [field_at(row, path) for path in group_paths]
        values = [None if value is MISSING else value for value in values]
        key = tuple(_group_key(value) for value in values)
        entry = groups.get(key)
        if entry is None:
            head = dict(zip(spec.group_by, values))
            entry = groups[key] = (head, [_Accumulator(field.function) for field in spec.fields])
        for accumulator, path in zip(entry[1], field_paths):
            accumulator.add(row, path)
    out: list[dict[str, Any]] = []
    ignored = 0
    for head, accumulators in groups.values():
        result = dict(head)
        for field, accumulator in zip(spec.fields, accumulators):
            result[field.name], wrong = accumulator.state() if partial else accumulator.result()
            ignored += wrong
        out.append(result)
    return Aggregated(rows=out, ignored=ignored, skipped_rows=skipped)


class _Accumulator:
    """The state of one aggregate over one group; ``result`` also says how many values it ignored."""

    __slots__ = ("function", "rows", "numbers", "strings", "others", "last")

    def __init__(self, function: Function) -> None:
        self.function = function
        self.rows = 0
        self.numbers: list[int | float] = []
        self.strings: list[str] = []
        self.others = 0  # values that are neither numbers nor strings
        self.last: Any = MISSING

    def add(self, row: dict[str, Any], path: list[str] | None) -> None:
        self.rows += 1
        if path is None:
            return
        value = field_at(row, path)
        if value is MISSING or value is None:
            return
        if self.function == "last":
            self.last = value
        elif _is_number(value):
            self.numbers.append(value)
        elif isinstance(value, str) and self.function in ("min", "max"):
            self.strings.append(value)
        else:
            self.others += 1

    def result(self) -> tuple[Any, int]:
        if self.function == "count":
            return self.rows, 0
        if self.function == "last":
            return (None if self.last is MISSING else self.last), 0
        if self.function in ("sum", "avg"):
            if not self.numbers:
                return None, self.others
            total = _sum(self.numbers)
            return (total if self.function == "sum" else total / len(self.numbers)), self.others
        pick = min if self.function == "min" else max
        if self.numbers:
            return pick(self.numbers), self.others + len(self.strings)
        if self.strings:
            return pick(self.strings), self.others
        return None, self.others

    def state(self) -> tuple[Any, int]:
        """What combines with other replicas' states of the group (streaming_runtime.partials); what was
        ignored is counted where the part was made (a string beside numbers in min/max: at the combine)."""
        if self.function in ("count", "sum"):
            return self.result()
        if self.function == "avg":
            return [_sum(self.numbers) if self.numbers else None, len(self.numbers)], self.others
        if self.function in ("min", "max"):
            pick = min if self.function == "min" else max
            best_number = pick(self.numbers) if self.numbers else None
            return [best_number, pick(self.strings) if self.strings else None], self.others
        raise ValueError(f"{self.function} has no partial state")
