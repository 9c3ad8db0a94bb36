"""Readers of single settings: a raw value (YAML or a variable's text) and where it came from in,
a typed value out, or a one-line ConfigError naming that place. One reader per kind of value, shared by
the YAML and the environment forms (see :mod:`joiner.config.names`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from joiner.config.model import InvokeTarget, PublishTarget, StreamSource
from joiner.engine.aggregate import AggregateSpec, parse_aggregate
from streaming_runtime.durations import parse_duration
from streaming_runtime.errors import ConfigError
from streaming_runtime.sizes import parse_bytes

Reader = Callable[[Any, str], Any]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TIME_FORMATS = ("auto", "epoch_s", "epoch_ms", "rfc3339")


def text(raw: Any, origin: str) -> str:
    return str(raw)


def expression(raw: Any, origin: str) -> str:
    """JSONata text; that it parses is checked with the whole configuration (its errors name ``origin``)."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{origin} is empty: expected a JSONata expression")
    return raw


def duration(raw: Any, origin: str) -> float:
    return parse_duration(str(raw), setting=origin)


def positive_duration(raw: Any, origin: str) -> float:
    seconds = duration(raw, origin)
    if seconds <= 0:
        raise ConfigError(f"{origin}={str(raw)!r}: must be longer than zero")
    return seconds


def window(raw: Any, origin: str) -> float:
    seconds = duration(raw, origin)
    if seconds <= 0:
        raise ConfigError(f"{origin}={str(raw)!r}: the window must be longer than zero")
    return seconds


def count(raw: Any, origin: str) -> int:
    return _whole(raw, origin, "a whole number")


def event_count(raw: Any, origin: str) -> int:
    return _whole(raw, origin, "a whole number of events")


def _whole(raw: Any, origin: str, expected: str) -> int:
    try:
        number = int(str(raw).replace("_", ""))
    except ValueError:
        raise ConfigError(f"{origin}={raw!r}: expected {expected}") from None
    if number <= 0:
        raise ConfigError(f"{origin}={raw!r}: must be at least 1")
    return number


def size(raw: Any, origin: str) -> int:
    return parse_bytes(raw, setting=origin)


def boolean(raw: Any, origin: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if str(raw).strip().lower() in ("true", "1", "yes"):
        return True
    if str(raw).strip().lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"{origin}={raw!r}: expected true or false")


def join_mode(raw: Any, origin: str) -> str:
    if raw not in ("window", "table"):
        raise ConfigError(
            f"{origin}={raw!r}: expected window (both streams windowed) or table (the first stream is a table)"
        )
    return str(raw)


def time_field(raw: Any, origin: str) -> tuple[str, ...]:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{origin} must name the event's time field, such as ts or reading.time")
    return tuple(raw.strip().split("."))


def time_format(raw: Any, origin: str) -> str:
    if raw not in _TIME_FORMATS:
        raise ConfigError(f"{origin}={raw!r}: expected auto, epoch_s, epoch_ms or rfc3339")
    return str(raw)


def store_name(raw: Any, origin: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{origin}={raw!r}: expected the name of a Dapr state store component, such as joiner-state")
    return raw.strip()


REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")  # billable-proc reads it back the same way


def replica(raw: Any, origin: str) -> str:
    """A replica's name: it goes into state-store keys and a header, so letters, digits, ``_`` and ``-``."""
    text = str(raw).strip()
    if not REPLICA_ID.fullmatch(text):
        raise ConfigError(
            f"{origin}={text[:80]!r}: expected a replica name of up to 63 letters, digits, '_' or '-' "
            "(such as join-tenants-poweruse-0)"
        )
    return text


def stream_names(raw: Any, origin: str) -> tuple[str, ...]:
    """Stream names, as a list or comma-separated text; ``none`` (or nothing) for none."""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if names == ("none",):
        return ()
    for name in names:
        if not _NAME.match(name):
            raise ConfigError(f"{origin}: {name!r} is not a stream name (such as tenants), nor is it none")
    return names


def aggregate(raw: Any, origin: str) -> AggregateSpec:
    return parse_aggregate(raw, origin)


def key_fields(raw: Any, origin: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v for v in raw.values()):
        raise ConfigError(f"{origin} must map a stream name to a field, such as {{poweruse: reading_id}}")
    return {str(name): value for name, value in raw.items()}


# -- streams and targets ----------------------------------------------------------------------------


def source(name: str, pubsub: str | None, topic: str, route: str | None, origin: str) -> StreamSource:
    name = name.strip()
    if not _NAME.match(name):
        raise ConfigError(f"{origin}: stream name {name!r} cannot be a JSONata variable: use letters, digits and _")
    route = "/" + (route or name).strip().lstrip("/")
    return StreamSource(name=name, pubsub=pubsub, topic=topic, route=route)


def sources_from_yaml(raw: Any, origin: str) -> list[StreamSource]:
    if not isinstance(raw, list):
        raise ConfigError(f"{origin} must be a list of two streams")
    return [_source_from_yaml(entry, f"{origin}[{i}]") for i, entry in enumerate(raw)]


def _source_from_yaml(entry: Any, origin: str) -> StreamSource:
    if isinstance(entry, str):
        return source(entry, None, entry, None, origin)
    if isinstance(entry, dict) and ("name" in entry or "topic" in entry):
        name = str(entry.get("name") or entry["topic"])
        return source(name, entry.get("pubsub"), str(entry.get("topic") or name), entry.get("route"), origin)
    raise ConfigError(f"{origin}: expected a stream name or {{name, pubsub, topic, route}}, got {entry!r}")


def source_from_env(raw: Any, origin: str) -> StreamSource:
    parts = [part.strip() for part in str(raw).split("|")]
    if len(parts) == 1:
        return source(parts[0], None, parts[0], None, origin)
    if len(parts) == 3 and all(parts[:2]):
        pubsub, topic, route = parts
        return source(topic, pubsub, topic, route or None, origin)
    raise ConfigError(f"{origin}={raw!r}: expected pubsub|topic|route (or just topic)")


def invoke_target(raw: Any, origin: str) -> InvokeTarget:
    app_id, _, method = str(raw).strip().partition("/")
    if not app_id or not method.strip("/"):
        raise ConfigError(f"{origin}={raw!r}: expected app-id/method, such as billable-proc/billables")
    return InvokeTarget(app_id=app_id, method=method.strip("/"))


def publish_target(raw: Any, origin: str) -> PublishTarget:
    pubsub, _, topic = str(raw).strip().partition("/")
    if not pubsub or not topic:
        raise ConfigError(f"{origin}={raw!r}: expected pubsub/topic, such as redis-stream/billables")
    return PublishTarget(pubsub=pubsub, topic=topic)


def targets_from_yaml(raw: Any, origin: str) -> list[InvokeTarget | PublishTarget]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{origin} must be a list of {{component: app/route}} or {{stream: pubsub/topic}}")
    return [_target_from_yaml(entry, f"{origin}[{i}]") for i, entry in enumerate(raw)]


def _target_from_yaml(entry: Any, origin: str) -> InvokeTarget | PublishTarget:
    if isinstance(entry, dict) and "component" in entry:
        return invoke_target(entry["component"], f"{origin}.component")
    if isinstance(entry, dict) and "stream" in entry:
        return publish_target(entry["stream"], f"{origin}.stream")
    raise ConfigError(f"{origin}: expected {{component: app/route}} or {{stream: pubsub/topic}}, got {entry!r}")


def target_from_env(raw: Any, origin: str) -> InvokeTarget | PublishTarget:
    return invoke_target(raw, origin) if origin.endswith("_COMPONENT") else publish_target(raw, origin)


def dead_letters_from_yaml(raw: Any, origin: str) -> dict[str, PublishTarget]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{origin} must map a stream to pubsub/topic, such as {{poweruse: rabbit-stream/poweruse-deadletter}}"
        )
    return {str(name): publish_target(target, f"{origin}.{name}") for name, target in raw.items()}


def dead_letters_from_env(raw: Any, origin: str) -> dict[str, PublishTarget]:
    out = {}
    for item in str(raw).split(","):
        name, sep, target = item.strip().partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{origin}={raw!r}: expected stream=pubsub/topic, comma-separated")
        out[name.strip()] = publish_target(target, origin)
    return out
