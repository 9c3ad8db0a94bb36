"""Which message to publish next: pure, no I/O.

``MESSAGE_EXPR`` is evaluated for every message with ``$id`` (1-based message counter) and
``$timestamp`` (epoch milliseconds) bound. A list result yields its elements in turn, one per
message (message ``n`` takes element ``(n - 1) mod len``), as the original message-gen did;
any other result is the message itself.
"""

from __future__ import annotations

from typing import Any

from streaming_runtime.errors import EvaluationError
from streaming_runtime.expressions import Expression

_UNSET = object()
_IMPURE = {"now", "millis", "random", "uuid"}


def _uses_variables(node: Any) -> bool:
    """Whether the tree reads a variable ($id, $timestamp, ...) or calls an impure function."""
    if node is None:
        return False
    if isinstance(node, (list, tuple)):
        return any(_uses_variables(item) for item in node)
    kind = getattr(node, "type", None)
    if kind == "variable":
        return True
    if kind == "function":
        procedure = getattr(node, "procedure", None)
        if str(getattr(procedure, "value", "")) in _IMPURE or getattr(procedure, "type", None) != "variable":
            return True
        return _uses_variables(node.arguments)
    children = [getattr(node, name, None) for name in (
        "lhs", "rhs", "expression", "expressions", "steps", "arguments", "condition", "then", "_else",
        "stages", "predicate", "body", "group",
    )]
    children += [list(pair) for pair in (getattr(node, "lhs_object", None) or [])]
    return any(_uses_variables(child) for child in children if child is not None and child is not node)


class MessageSource:
    def __init__(self, expression: Expression) -> None:
        self._expression = expression
        # an expression without $id/$timestamp (the example's lists) has one value: evaluate it once
        self._constant = not _uses_variables(expression.tree)
        self._cached: Any = _UNSET

    def message(self, message_id: int, timestamp_ms: int) -> Any:
        if self._constant and self._cached is not _UNSET:
            result = self._cached
        else:
            result = self._expression.evaluate(None, {"id": message_id, "timestamp": timestamp_ms})
            if self._constant:
                self._cached = result
        if isinstance(result, list):
            if not result:
                raise EvaluationError(f"{self._expression.setting} gave an empty list for $id={message_id}")
            return result[(message_id - 1) % len(result)]
        if result is None:
            raise EvaluationError(f"{self._expression.setting} gave no value for $id={message_id}")
        return result
