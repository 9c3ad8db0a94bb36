"""What the power-usage services share.

Errors raised by this package (all carry a message meant for the operator, never a trace)::

    StreamingRuntimeError
    ├── ConfigError          a setting is missing or has a bad value (start-up stops)
    │   └── ExpressionError  a JSONata expression does not parse
    ├── EvaluationError      an expression failed on some input (that input is set aside)
    └── MalformedEvent       a delivered event cannot be used (it is dropped to the dead-letter topic)
        └── PayloadTooLarge  a body over the size limit
"""

from streaming_runtime.errors import (
    ConfigError,
    EvaluationError,
    ExpressionError,
    MalformedEvent,
    StreamingRuntimeError,
)

__all__ = [
    "ConfigError",
    "EvaluationError",
    "ExpressionError",
    "MalformedEvent",
    "StreamingRuntimeError",
]
