"""The data contract between the engine, its generated arrival loops and the C loop (join_kernel): what an
entry of a window's buffer holds, and how a row's values are found. Defined here once; the C loop exports
the values it was built with, and :mod:`joiner.engine.native` uses it only when they are these.

An entry is ``(data, event id, projection ok, *projection)``: the event, its CloudEvent id (or None), whether
its projection of the values ``select`` reads of it could be computed, and those values from
``PROJECTION_AT`` on.
"""

PROJECTION_AT = 3
# where a row's value comes from: the arriving event's projection, the partner's, or a constant of select
FROM_EVENT, FROM_PARTNER, FROM_CONSTANT = 0, 1, 2
MAX_FIELDS = 64  # fields of one stream the C loop reads; a plan reading more stays in generated Python
EXACT_INT = 2**53  # ints up to this compare exactly as doubles

CONTRACT = {
    "PROJECTION_AT": PROJECTION_AT,
    "FROM_EVENT": FROM_EVENT,
    "FROM_PARTNER": FROM_PARTNER,
    "FROM_CONSTANT": FROM_CONSTANT,
    "MAX_FIELDS": MAX_FIELDS,
    "EXACT_INT": EXACT_INT,
}


def contract_problem(module: object) -> str:
    """Why a built C loop does not keep this contract ("" when it does)."""
    differences = [
        f"{name} is {getattr(module, name, None)!r}, not {value!r}"
        for name, value in CONTRACT.items()
        if getattr(module, name, None) != value
    ]
    return "join_kernel was built for another entry layout: " + "; ".join(differences) if differences else ""
