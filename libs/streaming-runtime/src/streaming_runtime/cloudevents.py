"""Reading what Dapr delivers to a subscriber route.

Dapr wraps published data in a CloudEvent (JSON, ``specversion`` present). Raw payloads
(``rawPayload`` metadata) arrive as the bare data. Either way the result is a
:class:`Delivery` whose ``data`` is what the publisher sent.

daprd passes a publisher's own CloudEvent on unchanged, so every attribute read here may be of any type:
what is not as the CloudEvents spec has it, and data that :func:`~streaming_runtime.values.value_problem`
refuses, is a :class:`MalformedEvent` naming what is wrong, never another exception.
"""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass
from typing import Any

from streaming_runtime.errors import MalformedEvent, PayloadTooLarge
from streaming_runtime.logs import printable
from streaming_runtime.values import value_problem

STRING_ATTRIBUTES = ("time", "topic", "pubsubname", "datacontenttype")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered event: its CloudEvent id (if any), and the decoded data. A dataclass, not a pydantic
    model: its fields are checked by :func:`delivery_of` already, and it is made once per event."""

    id: str | None = None
    topic: str | None = None
    pubsubname: str | None = None
    time: str | None = None
    data: Any = None


# daprd (Go's encoding/json) passes on JSON nested up to 10,000 levels; a bulk delivery wraps it in a few
# more. Python's parser stops at the recursion limit (10,000 once jsonata-python is imported): below what
# daprd sends, a whole bulk delivery could not be read, and no entry of it answered on its own.
PARSE_RECURSION_LIMIT = 12_000


def ensure_parse_depth() -> None:
    """Let the parser read what daprd delivers. Services call it when their app is made (after every
    import: jsonata-python sets the limit when imported); :func:`loads` checks again each time."""
    if sys.getrecursionlimit() < PARSE_RECURSION_LIMIT:
        sys.setrecursionlimit(PARSE_RECURSION_LIMIT)


def loads(text: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity (which Python's json accepts) are not JSON and are refused; so is
    nesting deeper than the parser can read (ValueError either way). Anything daprd delivers is read,
    so that a too-deep entry of a bulk delivery is refused alone (by value_problem), not the delivery."""
    ensure_parse_depth()  # each time: a library may lower it
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def read_body(body: bytes, *, max_bytes: int) -> Any:
    """The JSON document of a request body; raises MalformedEvent saying what is wrong."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"payload of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    if not body.strip():
        raise MalformedEvent("empty body")
    try:
        return loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedEvent(f"body is not JSON: {_json_problem(error)}") from None


def parse_delivery(body: bytes, *, max_bytes: int) -> Delivery:
    """Decode a delivery; raises MalformedEvent saying what is wrong (never a parser trace)."""
    return delivery_of(read_body(body, max_bytes=max_bytes))


def delivery_of(document: Any) -> Delivery:
    """A delivery from a decoded document: a CloudEvent envelope, or raw data."""
    if isinstance(document, dict) and "specversion" in document:
        return _from_cloudevent(document)
    if (problem := value_problem(document)) is not None:
        raise MalformedEvent(problem)
    return Delivery(data=document)


def is_bulk(document: Any) -> bool:
    """Whether a decoded body is a Dapr bulk delivery (``{"entries": [...], ...}``, no ``specversion``)."""
    return isinstance(document, dict) and isinstance(document.get("entries"), list) and "specversion" not in document


def bulk_entries(
    document: dict[str, Any], max_event_bytes: int | None = None
) -> list[tuple[str, Delivery | MalformedEvent]]:
    """``(entryId, delivery or the reason it is malformed)`` for each entry of a bulk delivery.

    ``max_event_bytes``: an entry whose event is larger (as JSON) is refused as a single event of that
    size would be; measured only when the whole delivery is larger, so it costs nothing otherwise."""
    out: list[tuple[str, Delivery | MalformedEvent]] = []
    for position, entry in enumerate(document["entries"]):
        entry_id = str(position)
        if isinstance(entry, dict) and type(entry.get("entryId")) in (str, int):
            entry_id = str(entry["entryId"])
        try:
            if not isinstance(entry, dict) or "event" not in entry:
                raise MalformedEvent("bulk entry without an event")
            event = entry["event"]
            if isinstance(event, str):
                if max_event_bytes is not None and len(event) > max_event_bytes:
                    raise PayloadTooLarge(f"event of {len(event)} bytes exceeds the limit of {max_event_bytes} bytes")
                try:
                    event = loads(event)
                except (UnicodeDecodeError, ValueError) as error:
                    raise MalformedEvent(f"event is not JSON: {_json_problem(error)}") from None
            elif max_event_bytes is not None and _larger_than(event, max_event_bytes):
                raise PayloadTooLarge(
                    f"event of more than {max_event_bytes} bytes exceeds the limit of {max_event_bytes} bytes"
                )
            out.append((entry_id, delivery_of(event)))
        except MalformedEvent as error:
            out.append((entry_id, error))
    return out


def _larger_than(event: Any, limit: int) -> bool:
    """Whether an event's JSON text is over ``limit`` bytes; events of a reading's size answer at once."""
    if isinstance(event, dict) and len(event) < 64 and all(type(v) in _SMALL for v in event.values()):
        return False  # a flat event of numbers: a few bytes per key, far below any sensible limit
    try:
        return (
            len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")) > limit
        )
    except (ValueError, RecursionError):
        return False  # delivery_of names what is wrong with it


_SMALL = (int, float, bool, type(None))


def _from_cloudevent(envelope: dict[str, Any]) -> Delivery:
    event_id = envelope.get("id")
    if event_id is not None and type(event_id) not in (str, int):
        raise MalformedEvent(f"CloudEvent id is {type(event_id).__name__}, not a string")
    event_id = str(event_id) if event_id is not None else None

    def label() -> str:  # only for an error: escaping the id costs more than reading a good event
        return f"event {printable(event_id, 80)}"

    for name in STRING_ATTRIBUTES:
        value = envelope.get(name)
        if value is not None and type(value) is not str:
            raise MalformedEvent(f"{label()}: CloudEvent attribute {name} is {type(value).__name__}, not a string")
    data = envelope.get("data")
    if data is None and "data_base64" in envelope:
        encoded = envelope["data_base64"]
        if type(encoded) is not str:
            raise MalformedEvent(f"{label()}: data_base64 is {type(encoded).__name__}, not a string")
        try:
            data = loads(base64.b64decode(encoded, validate=True))
        except (ValueError, UnicodeDecodeError) as error:
            raise MalformedEvent(f"{label()}: data_base64 is not base64 JSON: {_json_problem(error)}") from None
    elif isinstance(data, str) and "json" in str(envelope.get("datacontenttype", "")):
        # some publishers send JSON as a string with a JSON content type
        try:
            data = loads(data)
        except ValueError as error:
            raise MalformedEvent(f"{label()}: data is not JSON: {_json_problem(error)}") from None
    if (problem := value_problem(data)) is not None:
        raise MalformedEvent(f"{label()}: {problem}")
    return Delivery(
        id=event_id,
        topic=envelope.get("topic"),
        pubsubname=envelope.get("pubsubname"),
        time=envelope.get("time"),
        data=data,
    )


def _json_problem(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno}, column {error.colno}"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(error)
