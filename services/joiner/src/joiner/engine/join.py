"""The join query: ``from`` two streams, ``where`` a JSONata predicate, ``select`` a JSONata shape.

Every event of the first stream is paired with every event of the second in the same window;
pairs the ``where`` accepts are shaped by ``select`` into rows. The stream names are the
variables of both expressions (``tenants.customer_id``).

Events are checked on arrival (:meth:`JoinQuery.check`) so that one that can never be joined
(a field the expressions read is missing, or has a type they cannot use) is rejected there,
where it can still go to a dead-letter topic, instead of failing silently at window close.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joiner.engine.windows import ClosedWindow
from streaming_runtime.errors import EvaluationError, MalformedEvent
from streaming_runtime.expressions import Expression, truthy

_MISSING = object()


@dataclass
class JoinResult:
    rows: list[Any] = field(default_factory=list)
    pairs: int = 0
    errors: list[str] = field(default_factory=list)


class JoinQuery:
    def __init__(self, streams: tuple[str, str], where: Expression, select: Expression) -> None:
        if len(streams) != 2 or streams[0] == streams[1]:
            raise ValueError("a join reads exactly two distinct streams")
        self.streams = streams
        self.where = where
        self.select = select
        names = set(streams)
        self._required = {
            name: sorted(where.paths_under({name})[name] | select.paths_under({name})[name]) for name in streams
        }
        # conjuncts of `where` that read one stream only can be checked on that stream's events alone
        self._single_stream_checks = {
            name: [part for part in where.conjuncts() if part.roots_used(names) == {name}] for name in streams
        }

    def check(self, stream: str, data: Any) -> dict[str, Any]:
        """Return ``data`` if it can take part in the join; raise MalformedEvent saying why not."""
        if not isinstance(data, dict):
            raise MalformedEvent(f"{stream} event is {_json_type(data)}, not a JSON object")
        for path in self._required[stream]:
            if _lookup(data, path) is _MISSING:
                raise MalformedEvent(f"{stream} event has no field {'.'.join(path)} (used by the expressions)")
        alone = {stream: data}
        try:
            for part in self._single_stream_checks[stream]:
                part.evaluate(alone)
            self.select.evaluate(alone)
        except EvaluationError as error:
            raise MalformedEvent(f"{stream} event does not fit the expressions: {error}") from None
        return data

    def run(self, closed: ClosedWindow) -> JoinResult:
        """Join one closed window (nested loop over both buffers)."""
        left_name, right_name = self.streams
        result = JoinResult()
        for left in closed.events.get(left_name, ()):
            for right in closed.events.get(right_name, ()):
                result.pairs += 1
                binding = {left_name: left.data, right_name: right.data}
                try:
                    if not truthy(self.where.evaluate(binding)):
                        continue
                    row = self.select.evaluate(binding)
                except EvaluationError as error:
                    result.errors.append(f"{left_name} {left.id} x {right_name} {right.id}: {error}")
                    continue
                if row is not None:
                    result.rows.append(row)
        return result


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for step in path:
        if isinstance(value, list):  # JSONata maps a path over arrays; any element will do
            values = [item[step] for item in value if isinstance(item, dict) and step in item]
            if not values:
                return _MISSING
            value = values
        elif isinstance(value, dict) and step in value:
            value = value[step]
        else:
            return _MISSING
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


