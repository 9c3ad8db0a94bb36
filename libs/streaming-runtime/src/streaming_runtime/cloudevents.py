"""Reading what Dapr delivers to a subscriber route.

Dapr wraps published data in a CloudEvent (JSON, ``specversion`` present). Raw payloads
(``rawPayload`` metadata) arrive as the bare data. Either way the result is a
:class:`Delivery` whose ``data`` is what the publisher sent.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from streaming_runtime.errors import MalformedEvent, PayloadTooLarge


class Delivery(BaseModel):
    """One delivered event: its CloudEvent id (if any), and the decoded data."""

    model_config = ConfigDict(frozen=True)

    id: str | None = None
    topic: str | None = None
    pubsubname: str | None = None
    time: str | None = None
    data: Any = None


def loads(text: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity (which Python's json accepts) are not JSON and are refused."""
    return json.loads(text, parse_constant=_refuse_constant)


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
    return Delivery(data=document)


def is_bulk(document: Any) -> bool:
    """Whether a decoded body is a Dapr bulk delivery (``{"entries": [...], ...}``, no ``specversion``)."""
    return isinstance(document, dict) and isinstance(document.get("entries"), list) and "specversion" not in document


def bulk_entries(document: dict[str, Any]) -> list[tuple[str, Delivery | MalformedEvent]]:
    """``(entryId, delivery or the reason it is malformed)`` for each entry of a bulk delivery."""
    out: list[tuple[str, Delivery | MalformedEvent]] = []
    for position, entry in enumerate(document["entries"]):
        entry_id = str(entry.get("entryId", position)) if isinstance(entry, dict) else str(position)
        try:
            if not isinstance(entry, dict) or "event" not in entry:
                raise MalformedEvent("bulk entry without an event")
            event = entry["event"]
            if isinstance(event, (str, bytes)):
                try:
                    event = loads(event)
                except (UnicodeDecodeError, ValueError) as error:
                    raise MalformedEvent(f"event is not JSON: {_json_problem(error)}") from None
            out.append((entry_id, delivery_of(event)))
        except MalformedEvent as error:
            out.append((entry_id, error))
    return out


def _from_cloudevent(envelope: dict[str, Any]) -> Delivery:
    event_id = envelope.get("id")
    data = envelope.get("data")
    if data is None and "data_base64" in envelope:
        try:
            data = loads(base64.b64decode(envelope["data_base64"], validate=True))
        except (ValueError, UnicodeDecodeError) as error:
            raise MalformedEvent(f"event {event_id}: data_base64 is not base64 JSON: {error}") from None
    elif isinstance(data, str) and "json" in str(envelope.get("datacontenttype", "")):
        # some publishers send JSON as a string with a JSON content type
        try:
            data = loads(data)
        except ValueError as error:
            raise MalformedEvent(f"event {event_id}: data is not JSON: {_json_problem(error)}") from None
    return Delivery(
        id=str(event_id) if event_id is not None else None,
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
