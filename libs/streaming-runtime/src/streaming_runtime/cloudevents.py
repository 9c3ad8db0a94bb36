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

from streaming_runtime.errors import MalformedEvent


class Delivery(BaseModel):
    """One delivered event: its CloudEvent id (if any), and the decoded data."""

    model_config = ConfigDict(frozen=True)

    id: str | None = None
    topic: str | None = None
    pubsubname: str | None = None
    time: str | None = None
    data: Any = None


def parse_delivery(body: bytes, *, max_bytes: int) -> Delivery:
    """Decode a delivery; raises MalformedEvent saying what is wrong (never a parser trace)."""
    if len(body) > max_bytes:
        raise MalformedEvent(f"payload of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    if not body.strip():
        raise MalformedEvent("empty body")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedEvent(f"body is not JSON: {_json_problem(error)}") from None
    if isinstance(document, dict) and "specversion" in document:
        return _from_cloudevent(document)
    return Delivery(data=document)


def _from_cloudevent(envelope: dict[str, Any]) -> Delivery:
    event_id = envelope.get("id")
    data = envelope.get("data")
    if data is None and "data_base64" in envelope:
        try:
            data = json.loads(base64.b64decode(envelope["data_base64"], validate=True))
        except (ValueError, UnicodeDecodeError) as error:
            raise MalformedEvent(f"event {event_id}: data_base64 is not base64 JSON: {error}") from None
    elif isinstance(data, str) and "json" in str(envelope.get("datacontenttype", "")):
        # some publishers send JSON as a string with a JSON content type
        try:
            data = json.loads(data)
        except json.JSONDecodeError as error:
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
    return "not UTF-8 text"
