"""What Dapr delivers to a subscriber route: CloudEvent envelopes and raw payloads."""

from __future__ import annotations

import base64
import json

import pytest

from streaming_runtime.cloudevents import parse_delivery
from streaming_runtime.errors import MalformedEvent

LIMIT = 1024


def _body(document) -> bytes:
    return json.dumps(document).encode()


def _envelope(**fields) -> dict:
    return {"specversion": "1.0", "id": "evt-1", "source": "tenants-gen", "type": "com.dapr.event.sent", **fields}


def _malformed(body: bytes, max_bytes: int = LIMIT) -> str:
    with pytest.raises(MalformedEvent) as caught:
        parse_delivery(body, max_bytes=max_bytes)
    return str(caught.value)


def test_cloudevent_gives_id_and_data():
    body = _body(_envelope(topic="tenants", pubsubname="redis-stream", data={"tenant_id": "t1", "customer_id": 924}))

    delivery = parse_delivery(body, max_bytes=LIMIT)

    assert delivery.id == "evt-1"
    assert delivery.data == {"tenant_id": "t1", "customer_id": 924}
    assert (delivery.topic, delivery.pubsubname) == ("tenants", "redis-stream")


def test_cloudevent_numeric_id_becomes_a_string():
    assert parse_delivery(_body(_envelope(id=7, data={})), max_bytes=LIMIT).id == "7"


def test_raw_json_object_is_the_data_without_id():
    delivery = parse_delivery(b'{"tenant_id": "t1", "customer_id": 924}', max_bytes=LIMIT)

    assert delivery.id is None
    assert delivery.data == {"tenant_id": "t1", "customer_id": 924}


def test_raw_json_array_is_the_data():
    assert parse_delivery(b"[1, 2]", max_bytes=LIMIT).data == [1, 2]


def test_data_base64_is_decoded():
    encoded = base64.b64encode(b'{"power_use": 1.05}').decode()

    delivery = parse_delivery(_body(_envelope(data_base64=encoded)), max_bytes=LIMIT)

    assert delivery.data == {"power_use": 1.05}
    assert delivery.id == "evt-1"


def test_data_base64_that_is_not_base64_json():
    message = _malformed(_body(_envelope(data_base64="!!! not base64")))

    assert message.startswith("event evt-1: data_base64 is not base64 JSON")


def test_json_string_data_with_json_content_type_is_decoded():
    body = _body(_envelope(datacontenttype="application/json", data='{"kwh_use": 1034}'))

    assert parse_delivery(body, max_bytes=LIMIT).data == {"kwh_use": 1034}


def test_string_data_with_another_content_type_stays_a_string():
    body = _body(_envelope(datacontenttype="text/plain", data='{"kwh_use": 1034}'))

    assert parse_delivery(body, max_bytes=LIMIT).data == '{"kwh_use": 1034}'


def test_string_data_with_json_content_type_that_is_not_json():
    message = _malformed(_body(_envelope(datacontenttype="application/json", data="{oops")))

    assert message.startswith("event evt-1: data is not JSON")
    assert "line 1, column 2" in message


def test_body_that_is_not_json():
    message = _malformed(b"tenant_id=t1")

    assert message.startswith("body is not JSON")
    assert "line 1, column 1" in message


def test_body_that_is_not_utf8():
    assert _malformed(b'{"a": "\xff"}').startswith("body is not JSON")


@pytest.mark.parametrize("body", [b"", b"   \n"])
def test_empty_body(body):
    assert _malformed(body) == "empty body"


def test_body_over_max_bytes():
    body = _body({"pad": "x" * 200})

    message = _malformed(body, max_bytes=100)

    assert message == f"payload of {len(body)} bytes exceeds the limit of 100 bytes"


def test_body_at_exactly_max_bytes_is_accepted():
    body = _body({"pad": "x" * 50})

    assert parse_delivery(body, max_bytes=len(body)).data == {"pad": "x" * 50}
