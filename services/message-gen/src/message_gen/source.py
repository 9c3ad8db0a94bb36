"""Which message to publish next: pure, no I/O.

``MESSAGE_EXPR`` is evaluated for every message with ``$id`` (1-based message counter) and
``$timestamp`` (epoch milliseconds) bound. A list result yields its elements in turn, one per
message (message ``n`` takes element ``(n - 1) mod len``), as the original message-gen did;
any other result is the message itself.
"""

from __future__ import annotations

from typing import Any

from streaming_runtime.errors import EvaluationError
from streaming_runtime.expressions import Expression, reads_variables

_UNSET = object()


class MessageSource:
    def __init__(self, expression: Expression) -> None:
        self._expression = expression
        # an expression without $id/$timestamp (the example's lists) has one value: evaluate it once
        self._constant = not reads_variables(expression.tree)
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
