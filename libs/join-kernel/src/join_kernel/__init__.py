"""The joiner's arrival loop in C, for the plan shape most joins have.

:class:`Arrival` is built once per stream from a plan (which fields to read, the key, the filters,
what an entry carries, how a row is made) and then called per batch exactly like the arrival loop
the engine generates in Python. The engine decides when the shape fits; see
``joiner.engine.native``.
"""

from join_kernel._arrival import (
    EXACT_INT,
    FROM_CONSTANT,
    FROM_EVENT,
    FROM_PARTNER,
    MAX_FIELDS,
    OPERATORS,
    PROJECTION_AT,
    Arrival,
    file_pending,
    number_span,
)

__all__ = [
    "EXACT_INT",
    "FROM_CONSTANT",
    "FROM_EVENT",
    "FROM_PARTNER",
    "MAX_FIELDS",
    "OPERATORS",
    "PROJECTION_AT",
    "Arrival",
    "file_pending",
    "number_span",
]
