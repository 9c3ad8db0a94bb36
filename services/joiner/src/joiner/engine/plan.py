"""Planning a join from its ``where``: which conjuncts become hash keys, filters, or a residual.

The top-level ``and`` chain of ``where`` is split:

* ``a.path = b.path`` between the two streams → a part of the hash key (several make a composite key);
* a conjunct that reads one stream only → a filter applied to that stream's events on arrival;
* anything else (and conjuncts that read no stream) → the residual, evaluated on candidate pairs.

Without a key conjunct the plan is a nested loop (filters still applied on arrival). A pair is kept
exactly when every conjunct is true, as in the naive plan, so the rows are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streaming_runtime.expressions import Expression
from streaming_runtime.jsonata_compiler import FastExpression

_STEP_FLAGS = ("stages", "predicate", "group", "focus", "index", "tuple", "keep_array", "ancestor")


@dataclass(frozen=True)
class KeyPart:
    """One equality conjunct: the path read in the first stream and in the second."""

    left: tuple[str, ...]
    right: tuple[str, ...]


@dataclass
class JoinPlan:
    streams: tuple[str, str]
    keys: list[KeyPart]
    filters: tuple[list[FastExpression], list[FastExpression]]
    residual: list[FastExpression]
    where: FastExpression
    select: FastExpression

    def describe(self) -> str:
        left, right = self.streams
        if self.keys:
            shape = "hash join on " + ", ".join(
                f"{left}.{'.'.join(k.left)} = {right}.{'.'.join(k.right)}" for k in self.keys
            )
        else:
            shape = "nested loop (no equality between the streams in where)"
        filters = (
            "; ".join(
                f"{name}: {len(fs)} filter(s) [{', '.join(f.evaluator for f in fs)}]"
                for name, fs in zip(self.streams, self.filters)
                if fs
            )
            or "none"
        )
        residual = (
            f"{len(self.residual)} conjunct(s) [{', '.join(f.evaluator for f in self.residual)}]"
            if self.residual
            else "none"
        )
        return f"{shape}; filters on arrival: {filters}; residual: {residual}; select: {self.select.evaluator}"


def plan_join(streams: tuple[str, str], where: Expression, select: Expression) -> JoinPlan:
    names = set(streams)
    keys: list[KeyPart] = []
    filters: tuple[list[FastExpression], list[FastExpression]] = ([], [])
    residual: list[FastExpression] = []
    for conjunct in where.conjuncts():
        key = _key_part(conjunct.tree, streams)
        if key is not None:
            keys.append(key)
            continue
        used = conjunct.roots_used(names)
        if len(used) == 1:
            index = streams.index(next(iter(used)))
            filters[index].append(FastExpression(conjunct, (streams[index],)))
        else:
            residual.append(FastExpression(conjunct, streams))
    return JoinPlan(
        streams=streams,
        keys=keys,
        filters=filters,
        residual=residual,
        where=FastExpression(where, streams),
        select=FastExpression(select, streams),
    )


def _key_part(node: Any, streams: tuple[str, str]) -> KeyPart | None:
    if getattr(node, "type", None) != "binary" or getattr(node, "value", None) != "=":
        return None
    lhs, rhs = _plain_path(node.lhs), _plain_path(node.rhs)
    if lhs is None or rhs is None or len(lhs) < 2 or len(rhs) < 2:
        return None
    left, right = streams
    if lhs[0] == left and rhs[0] == right:
        return KeyPart(tuple(lhs[1:]), tuple(rhs[1:]))
    if lhs[0] == right and rhs[0] == left:
        return KeyPart(tuple(rhs[1:]), tuple(lhs[1:]))
    return None


def _plain_path(node: Any) -> list[str] | None:
    if getattr(node, "type", None) != "path":
        return None
    steps = node.steps or []
    names = []
    for step in [node, *steps]:
        if any(getattr(step, flag, None) for flag in _STEP_FLAGS):
            return None
    for step in steps:
        if getattr(step, "type", None) != "name":
            return None
        names.append(str(step.value))
    return names
