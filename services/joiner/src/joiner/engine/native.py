"""The C arrival loop (:mod:`join_kernel`), for plans of the shape most joins have.

The shape: a hash key of top-level fields, no residual, filters ``stream.field <op> number`` or
``stream.field = "text"`` (or ``!=``), and a ``select`` that is an object of top-level fields of either
stream and constants (the example's join). For such a plan :func:`native_arrival` builds the C loop of
one stream, which the engine calls instead of its generated Python loop; for any other plan it says why
not, and the generated loop is used.

The C loop only decides events it is sure of (see ``_arrival.c``) and leaves the rest to the exact
path, like the generated loop does, so the rows are the same whichever loop ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from joiner.engine.entries import EXACT_INT, FROM_CONSTANT, FROM_EVENT, FROM_PARTNER, MAX_FIELDS, contract_problem
from joiner.engine.plan import JoinPlan, _plain_path


def _file_pending(buckets: dict[Any, list], keys: list, entries: list) -> None:
    """``buckets[key].append(entry)`` for each pending pair, in order; then both lists are emptied."""
    for key, entry in zip(keys, entries):
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [entry]
        else:
            bucket.append(entry)
    keys.clear()
    entries.clear()


def _number_span(entries: list[tuple], name: str) -> tuple[float, float, int] | None:
    """(lowest, latest, position of the first latest) of ``entry[0][name]`` when each is a finite float or
    int (not bool) in a dict, else None: the event times of a batch, in one pass."""
    values: list[Any] = [entry[0].get(name) if entry[0].__class__ is dict else None for entry in entries]
    if not values or not set(map(type, values)) <= {float, int}:
        return None
    try:
        numbers = [float(value) for value in values]
    except OverflowError:  # an integer beyond a float
        return None
    if not all(map(math.isfinite, numbers)):
        return None
    latest = max(numbers)
    return min(numbers), latest, numbers.index(latest)


try:
    import join_kernel
    from join_kernel import OPERATORS, Arrival, file_pending, number_span
except ImportError as error:  # the package is built with the joiner; a broken build must not stop the service
    OPERATORS, Arrival, file_pending, number_span = {}, None, _file_pending, _number_span
    UNAVAILABLE = f"join_kernel is not importable ({error})"
else:
    # a C loop built for another entry layout would read the wrong slots: it is not used at all then
    UNAVAILABLE = contract_problem(join_kernel)
    if UNAVAILABLE:
        OPERATORS, Arrival, file_pending, number_span = {}, None, _file_pending, _number_span
_MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}


class NotNative(Exception):
    """The plan is outside the shape the C loop takes; the message says what."""


def native_arrival(
    plan: JoinPlan,
    index: int,
    required_fields: frozenset[str],
    roots: tuple[Sequence[Any], Sequence[Any]],
) -> Callable[..., tuple[int, int, int]]:
    """The C arrival loop of stream ``index``, called like the generated one. Raises NotNative.

    ``required_fields`` are the top-level fields the expressions read of this stream; ``roots``
    are the parts of ``select`` whose values an entry of each stream carries (its projection)."""
    if Arrival is None:
        raise NotNative(UNAVAILABLE)
    mine = plan.streams[index]
    if plan.residual:
        raise NotNative("a residual condition")
    if not plan.keys:
        raise NotNative("no hash key")
    fields = sorted(required_fields)
    if len(fields) > MAX_FIELDS:
        raise NotNative(f"more than {MAX_FIELDS} fields of {mine}")
    position = {name: i for i, name in enumerate(fields)}
    key_paths = [part.left if index == 0 else part.right for part in plan.keys]
    if any(len(path) != 1 or path[0] not in position for path in key_paths):
        raise NotNative("a key below the top level")
    filters = [_filter(condition.expression.tree, mine, position) for condition in plan.filters[index]]
    projection = [position[_field_of(root, mine)] for root in roots[index]]
    row, constants = _row(plan.select.expression.tree, roots, index)
    return Arrival(
        fields=fields,
        keys=[position[path[0]] for path in key_paths],
        filters=filters,
        projection=projection,
        row=row,
        partner_projection=len(roots[1 - index]),
        constants=tuple(constants),
    )


def _field_of(node: Any, stream: str) -> str:
    """The field of a path ``stream.field``; NotNative for anything else."""
    path = _plain_path(node)
    if path is None or len(path) != 2 or path[0] != stream:
        raise NotNative(f"a value of select that is not a top-level field of {stream}")
    return path[1]


def _filter(tree: Any, stream: str, position: dict[str, int]) -> tuple[int, int, float | str]:
    """``(field position, operator code, literal)`` of a filter ``stream.field <op> number``, or
    ``stream.field = "text"`` / ``!=``."""
    op = getattr(tree, "value", None)
    if getattr(tree, "type", None) != "binary" or not isinstance(op, str) or op not in OPERATORS:
        raise NotNative("a filter that is not a comparison")
    path, literal = tree.lhs, tree.rhs
    if getattr(path, "type", None) in ("number", "string"):
        path, literal, op = literal, path, _MIRRORED[op]
    field = _plain_path(path)
    if field is None or len(field) != 2 or field[0] != stream or field[1] not in position:
        raise NotNative("a filter on something other than a top-level field")
    value = getattr(literal, "value", None)
    if getattr(literal, "type", None) == "string" and isinstance(value, str) and op in ("=", "!="):
        return position[field[1]], OPERATORS[op], value
    if getattr(literal, "type", None) != "number" or value.__class__ not in (int, float):
        raise NotNative("a filter that compares with something other than a number (or a string, by = or !=)")
    if abs(value) > EXACT_INT or not math.isfinite(value):
        raise NotNative("a filter literal beyond 2**53")
    return position[field[1]], OPERATORS[op], float(value)


def _row(tree: Any, roots: tuple[Sequence[Any], Sequence[Any]], index: int) -> tuple[list[tuple[str, int, int]], list]:
    """``(key, source, position)`` per key of an object ``select`` (the position in this event's or the
    partner's projection, or in the constants), and the constants."""
    if getattr(tree, "type", None) != "unary" or getattr(tree, "value", None) != "{":
        raise NotNative("a select that is not an object")
    where_root = {id(node): (side, i) for side in (0, 1) for i, node in enumerate(roots[side])}
    row: list[tuple[str, int, int]] = []
    constants: list = []
    keys: set[str] = set()
    reads_a_stream = False
    for key, value in tree.lhs_object or []:
        if getattr(key, "type", None) != "string" or key.value in keys:
            raise NotNative("a select key that is not a distinct string")
        keys.add(key.value)
        kind = getattr(value, "type", None)
        if kind in ("string", "number") or (kind == "value" and value.value in (True, False, None)):
            row.append((key.value, FROM_CONSTANT, len(constants)))
            constants.append(value.value)  # the very object jsonata-python gives for the literal
            continue
        found, plain = where_root.get(id(value)), _plain_path(value)
        if found is None or plain is None or len(plain) != 2:
            raise NotNative("a select value that is not a top-level field or a constant")
        side, i = found
        row.append((key.value, FROM_PARTNER if side != index else FROM_EVENT, i))
        reads_a_stream = True
    if not reads_a_stream:
        raise NotNative("a select that reads no stream")
    return row, constants
