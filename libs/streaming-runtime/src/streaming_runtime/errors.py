"""The error types every service maps to log lines and HTTP answers (see the package docstring)."""


class StreamingRuntimeError(Exception):
    """Base class: the message is written for a person and is complete on one line."""


class ConfigError(StreamingRuntimeError):
    """A setting is missing or invalid. Services stop at start-up with this message."""


class ExpressionError(ConfigError):
    """A JSONata expression does not parse."""


class EvaluationError(StreamingRuntimeError):
    """An expression raised on a particular input."""


class MalformedEvent(StreamingRuntimeError):
    """A delivered event that no retry can make usable."""


class PayloadTooLarge(MalformedEvent):
    """A body over the configured limit (reading stopped at the limit)."""
