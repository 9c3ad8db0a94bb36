"""The joiner's configuration, from a Joiner YAML file or from environment variables.

YAML (the original project's Joiner resource, or just its ``spec``)::

    window: 20s
    stream:
      from: [tenants, poweruse]              # or {name, pubsub, topic, route} each
      to:
        - component: billable-proc/billables # Dapr service invocation: app-id/method
        - stream: pubsub-name/topic          # Dapr publish
      select: '{"customer_id": tenants.customer_id, ...}'
      where: tenants.tenant_id == poweruse.tenant_id && poweruse.power_use >= 1.0

Environment (names of the original joiner): ``JOINER_STREAM_FROM_0`` / ``_1`` = ``pubsub|topic|route``
(or just ``topic``), ``JOINER_STREAM_TO_COMPONENT`` = ``app/route``, ``JOINER_STREAM_TO_STREAM`` =
``pubsub/topic``, ``JOINER_STREAM_WHERE`` (alias ``JOINER_STREAM_FILTER``), ``JOINER_STREAM_SELECT``,
``JOINER_WINDOW_SIZE``. ``JOINER_CONFIG`` names a YAML file instead; variables set beside it win.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from joiner.engine.eventtime import DEFAULT_MAX_FUTURE_SKEW, EventTimeSpec, event_time_spec
from streaming_runtime.durations import parse_duration
from streaming_runtime.errors import ConfigError
from streaming_runtime.sizes import parse_bytes

DEFAULT_MAX_WINDOW_EVENTS = 1_000_000
DEFAULT_MAX_WINDOW_BYTES = 64 * 1024 * 1024  # of deliveries' JSON; Python holds a few times that in memory
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StreamSource(BaseModel):
    """One input stream. ``name`` is the variable the expressions use; ``route`` is where Dapr delivers."""

    model_config = ConfigDict(frozen=True)

    name: str
    topic: str
    route: str
    pubsub: str | None = None


class InvokeTarget(BaseModel):
    model_config = ConfigDict(frozen=True)

    app_id: str
    method: str

    def __str__(self) -> str:
        return f"{self.app_id}/{self.method}"


class PublishTarget(BaseModel):
    model_config = ConfigDict(frozen=True)

    pubsub: str
    topic: str

    def __str__(self) -> str:
        return f"{self.pubsub}/{self.topic}"


class JoinerConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_seconds: float = Field(gt=0)
    sources: tuple[StreamSource, StreamSource]
    where: str
    select: str
    where_setting: str = "stream.where"
    select_setting: str = "stream.select"
    targets: tuple[InvokeTarget | PublishTarget, ...]
    max_window_events: int = Field(DEFAULT_MAX_WINDOW_EVENTS, gt=0)
    max_window_bytes: int = Field(DEFAULT_MAX_WINDOW_BYTES, gt=0)
    # streaming semantics (see docs/streaming.md); defaults keep the original example's behaviour
    event_time: EventTimeSpec | None = None
    late_target: PublishTarget | None = None
    # stream -> where the joiner itself publishes the events of that stream it drops (for a bulk
    # Subscription, which cannot have a deadLetterTopic with daprd 1.18: see docs/configuration.md)
    dead_letters: dict[str, PublishTarget] = Field(default_factory=dict)
    join_mode: Literal["window", "table"] = "window"
    table_deleted_when: str | None = None  # JSONata over the table stream: true means "delete this key"
    dedup_ttl: float | None = None  # seconds; None: no deduplication
    dedup_max_entries: int = 100_000
    dedup_key_fields: dict[str, str] = Field(default_factory=dict)  # stream -> field, for events without an id
    aggregate: Any = None  # the raw `aggregate` mapping, validated by joiner.engine.aggregate
    envelope: bool = False
    state_store: str | None = None  # a Dapr state store: open windows are handed over through it on restart
    journal: bool = False  # state.journal: deliveries journaled in the state store, replayed after a crash


def load_config(environ: Mapping[str, str]) -> JoinerConfig:
    """From ``JOINER_CONFIG`` (a YAML file) and/or the ``JOINER_*`` variables."""
    values: dict[str, Any] = {}
    path = environ.get("JOINER_CONFIG")
    if path:
        values.update(_from_yaml_file(Path(path)))
    values.update(_from_env(environ))
    return _build(values, origin=f"JOINER_CONFIG={path}" if path else "environment")


def config_from_yaml(text: str, origin: str = "joiner YAML") -> JoinerConfig:
    return _build(_from_yaml_text(text, origin), origin)


def _from_yaml_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"JOINER_CONFIG={path}: cannot read the file: {error.strerror}") from None
    return _from_yaml_text(text, f"JOINER_CONFIG={path}")


def _from_yaml_text(text: str, origin: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{origin}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{origin}: expected a mapping with window and stream")
    if document.get("kind") not in (None, "Joiner"):
        raise ConfigError(f"{origin}: kind is {document.get('kind')!r}, expected Joiner")
    spec = document.get("spec", document)
    if not isinstance(spec, dict):
        raise ConfigError(f"{origin}: spec must be a mapping with window and stream")
    stream = spec.get("stream") or {}
    if not isinstance(stream, dict):
        raise ConfigError(f"{origin}: stream must be a mapping with from, to, select and where")
    values: dict[str, Any] = {}
    if "window" in spec:
        values["window"] = (str(spec["window"]), "window")
    if "maxWindowEvents" in spec:
        values["max_window_events"] = (spec["maxWindowEvents"], "maxWindowEvents")
    if "maxWindowBytes" in spec:
        values["max_window_bytes"] = (spec["maxWindowBytes"], "maxWindowBytes")
    if "from" in stream:
        entries = stream["from"]
        if not isinstance(entries, list):
            raise ConfigError(f"{origin}: stream.from must be a list of two streams")
        values["from"] = [
            (_source_from_yaml(entry, f"stream.from[{i}]"), f"stream.from[{i}]") for i, entry in enumerate(entries)
        ]
    if "to" in stream:
        entries = stream["to"] or []
        if not isinstance(entries, list):
            raise ConfigError(
                f"{origin}: stream.to must be a list of {{component: app/route}} or {{stream: pubsub/topic}}"
            )
        values["to"] = [_target_from_yaml(entry, f"stream.to[{i}]") for i, entry in enumerate(entries)]
    for key in ("select", "where"):
        if key in stream:
            values[key] = (stream[key], f"stream.{key}")
    if "filter" in stream and "where" not in stream:
        values["where"] = (stream["filter"], "stream.filter")
    _semantics_from_yaml(spec, values)
    return values


def _semantics_from_yaml(spec: dict[str, Any], values: dict[str, Any]) -> None:
    """eventTime, late, join, table, dedup, aggregate, output: each optional."""
    if "eventTime" in spec:
        event = spec["eventTime"]
        if not isinstance(event, dict):
            raise ConfigError("eventTime must be a mapping with field (and format, grace, idle)")
        for key in ("field", "format"):
            if key in event:
                values[f"time_{key}"] = (event[key], f"eventTime.{key}")
        for key in ("grace", "idle", "maxFutureSkew"):
            if key in event:
                values[key] = (str(event[key]), f"eventTime.{key}")
    if "late" in spec:
        late = spec["late"]
        if not isinstance(late, dict) or "stream" not in late:
            raise ConfigError("late must be {stream: pubsub/topic}")
        values["late"] = _publish_target(str(late["stream"]), "late.stream")
    if "deadLetter" in spec:
        entries = spec["deadLetter"]
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(
                "deadLetter must map a stream to pubsub/topic, such as {poweruse: rabbit-stream/poweruse-deadletter}"
            )
        values["dead_letters"] = {
            str(name): _publish_target(str(target), f"deadLetter.{name}") for name, target in entries.items()
        }
    if "join" in spec:
        values["join"] = (spec["join"], "join")
    if "table" in spec:
        table = spec["table"] or {}
        if not isinstance(table, dict):
            raise ConfigError("table must be a mapping, such as {deletedWhen: 'tenants.deleted = true'}")
        if "deletedWhen" in table:
            values["deleted_when"] = (table["deletedWhen"], "table.deletedWhen")
    if "dedup" in spec:
        dedup = spec["dedup"]
        if not isinstance(dedup, dict):
            raise ConfigError("dedup must be a mapping, such as {ttl: 10m, maxEntries: 100000}")
        if "ttl" in dedup:
            values["dedup_ttl"] = (str(dedup["ttl"]), "dedup.ttl")
        if "maxEntries" in dedup:
            values["dedup_max"] = (dedup["maxEntries"], "dedup.maxEntries")
        if "keyFields" in dedup:
            fields = dedup["keyFields"]
            if not isinstance(fields, dict) or not all(isinstance(v, str) and v for v in fields.values()):
                raise ConfigError("dedup.keyFields must map a stream name to a field, such as {poweruse: reading_id}")
            values["dedup_keys"] = dict(fields)
    if "aggregate" in spec:
        values["aggregate"] = spec["aggregate"]
    if "state" in spec:
        state = spec["state"]
        if not isinstance(state, dict) or not isinstance(state.get("store"), str) or not state["store"].strip():
            raise ConfigError("state must be {store: <Dapr state store component>}, such as {store: joiner-state}")
        values["state_store"] = (state["store"].strip(), "state.store")
        if "journal" in state:
            values["journal"] = (state["journal"], "state.journal")
    if "output" in spec:
        output = spec["output"] or {}
        if not isinstance(output, dict):
            raise ConfigError("output must be a mapping, such as {envelope: true}")
        if "envelope" in output:
            values["envelope"] = (output["envelope"], "output.envelope")


def _source_from_yaml(entry: Any, setting: str) -> StreamSource:
    if isinstance(entry, str):
        return _source(entry, None, entry, None, setting)
    if isinstance(entry, dict) and ("name" in entry or "topic" in entry):
        name = str(entry.get("name") or entry["topic"])
        return _source(name, entry.get("pubsub"), str(entry.get("topic") or name), entry.get("route"), setting)
    raise ConfigError(f"{setting}: expected a stream name or {{name, pubsub, topic, route}}, got {entry!r}")


def _target_from_yaml(entry: Any, setting: str) -> InvokeTarget | PublishTarget:
    if isinstance(entry, dict) and "component" in entry:
        return _invoke_target(str(entry["component"]), f"{setting}.component")
    if isinstance(entry, dict) and "stream" in entry:
        return _publish_target(str(entry["stream"]), f"{setting}.stream")
    raise ConfigError(f"{setting}: expected {{component: app/route}} or {{stream: pubsub/topic}}, got {entry!r}")


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if environ.get("JOINER_WINDOW_SIZE"):
        values["window"] = (environ["JOINER_WINDOW_SIZE"], "JOINER_WINDOW_SIZE")
    if environ.get("JOINER_MAX_WINDOW_EVENTS"):
        values["max_window_events"] = (environ["JOINER_MAX_WINDOW_EVENTS"], "JOINER_MAX_WINDOW_EVENTS")
    if environ.get("JOINER_MAX_WINDOW_BYTES"):
        values["max_window_bytes"] = (environ["JOINER_MAX_WINDOW_BYTES"], "JOINER_MAX_WINDOW_BYTES")
    sources = []
    for index in (0, 1):
        key = f"JOINER_STREAM_FROM_{index}"
        if environ.get(key):
            sources.append((_source_from_env(environ[key], key), key))
    if sources:
        values["from"] = sources
    targets: list[InvokeTarget | PublishTarget] = []
    if environ.get("JOINER_STREAM_TO_COMPONENT"):
        targets.append(_invoke_target(environ["JOINER_STREAM_TO_COMPONENT"], "JOINER_STREAM_TO_COMPONENT"))
    if environ.get("JOINER_STREAM_TO_STREAM"):
        targets.append(_publish_target(environ["JOINER_STREAM_TO_STREAM"], "JOINER_STREAM_TO_STREAM"))
    if targets:
        values["to"] = targets
    for key, name in (
        ("JOINER_TIME_FIELD", "time_field"),
        ("JOINER_TIME_FORMAT", "time_format"),
        ("JOINER_GRACE", "grace"),
        ("JOINER_IDLE_TIMEOUT", "idle"),
        ("JOINER_MAX_FUTURE_SKEW", "maxFutureSkew"),
        ("JOINER_JOIN_MODE", "join"),
        ("JOINER_TABLE_DELETED_WHEN", "deleted_when"),
        ("JOINER_DEDUP_TTL", "dedup_ttl"),
        ("JOINER_DEDUP_MAX_ENTRIES", "dedup_max"),
        ("JOINER_OUTPUT_ENVELOPE", "envelope"),
    ):
        if environ.get(key):
            values[name] = (environ[key], key)
    if environ.get("JOINER_JOURNAL", "").strip():
        values["journal"] = (environ["JOINER_JOURNAL"].strip(), "JOINER_JOURNAL")
    if environ.get("JOINER_STATE_STORE", "").strip():
        values["state_store"] = (environ["JOINER_STATE_STORE"].strip(), "JOINER_STATE_STORE")
    if environ.get("JOINER_DEAD_LETTER_TO_STREAM"):
        values["dead_letters"] = _dead_letters_from_env(environ["JOINER_DEAD_LETTER_TO_STREAM"])
    if environ.get("JOINER_LATE_TO_STREAM"):
        values["late"] = _publish_target(environ["JOINER_LATE_TO_STREAM"], "JOINER_LATE_TO_STREAM")
    if environ.get("JOINER_STREAM_SELECT"):
        values["select"] = (environ["JOINER_STREAM_SELECT"], "JOINER_STREAM_SELECT")
    for key in ("JOINER_STREAM_WHERE", "JOINER_STREAM_FILTER"):
        if environ.get(key):
            values["where"] = (environ[key], key)
            break
    return values


def _dead_letters_from_env(value: str) -> dict[str, PublishTarget]:
    setting = "JOINER_DEAD_LETTER_TO_STREAM"
    out = {}
    for item in value.split(","):
        name, sep, target = item.strip().partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{setting}={value!r}: expected stream=pubsub/topic, comma-separated")
        out[name.strip()] = _publish_target(target, setting)
    return out


def _source_from_env(value: str, setting: str) -> StreamSource:
    parts = [part.strip() for part in value.split("|")]
    if len(parts) == 1:
        return _source(parts[0], None, parts[0], None, setting)
    if len(parts) == 3 and all(parts[:2]):
        pubsub, topic, route = parts
        return _source(topic, pubsub, topic, route or None, setting)
    raise ConfigError(f"{setting}={value!r}: expected pubsub|topic|route (or just topic)")


def _source(name: str, pubsub: str | None, topic: str, route: str | None, setting: str) -> StreamSource:
    name = name.strip()
    if not _NAME.match(name):
        raise ConfigError(f"{setting}: stream name {name!r} cannot be a JSONata variable: use letters, digits and _")
    route = "/" + (route or name).strip().lstrip("/")
    return StreamSource(name=name, pubsub=pubsub, topic=topic, route=route)


def _invoke_target(value: str, setting: str) -> InvokeTarget:
    app_id, _, method = value.strip().partition("/")
    if not app_id or not method.strip("/"):
        raise ConfigError(f"{setting}={value!r}: expected app-id/method, such as billable-proc/billables")
    return InvokeTarget(app_id=app_id, method=method.strip("/"))


def _publish_target(value: str, setting: str) -> PublishTarget:
    pubsub, _, topic = value.strip().partition("/")
    if not pubsub or not topic:
        raise ConfigError(f"{setting}={value!r}: expected pubsub/topic, such as redis-stream/billables")
    return PublishTarget(pubsub=pubsub, topic=topic)


def _build(values: dict[str, Any], origin: str) -> JoinerConfig:
    missing = [
        name
        for name, key in (
            ("window (JOINER_WINDOW_SIZE)", "window"),
            ("stream.from (JOINER_STREAM_FROM_0 and _1)", "from"),
            ("stream.to (JOINER_STREAM_TO_COMPONENT or JOINER_STREAM_TO_STREAM)", "to"),
            ("stream.select (JOINER_STREAM_SELECT)", "select"),
            ("stream.where (JOINER_STREAM_WHERE)", "where"),
        )
        if key not in values
    ]
    if missing:
        raise ConfigError(f"joiner configuration ({origin}) is missing {', '.join(missing)}")
    window_text, window_setting = values["window"]
    window = parse_duration(window_text, setting=window_setting)
    if window <= 0:
        raise ConfigError(f"{window_setting}={window_text!r}: the window must be longer than zero")
    sources = values["from"]
    if len(sources) != 2:
        raise ConfigError(
            f"{sources[0][1] if sources else 'stream.from'}: a join reads exactly two streams, got {len(sources)}"
        )
    (first, _), (second, second_setting) = sources
    if first.name == second.name:
        raise ConfigError(f"{second_setting}: both streams are named {first.name!r}")
    if first.route == second.route:
        raise ConfigError(f"{second_setting}: both streams are delivered to route {first.route}")
    if not values["to"]:
        raise ConfigError("stream.to is empty: name at least one component or stream to send rows to")
    where, where_setting = values["where"]
    select, select_setting = values["select"]
    for text, setting in ((where, where_setting), (select, select_setting)):
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{setting} is empty: expected a JSONata expression")
    max_events = DEFAULT_MAX_WINDOW_EVENTS
    if "max_window_events" in values:
        raw, setting = values["max_window_events"]
        try:
            max_events = int(str(raw).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{setting}={raw!r}: expected a whole number of events") from None
        if max_events <= 0:
            raise ConfigError(f"{setting}={raw!r}: must be at least 1")
    max_bytes = DEFAULT_MAX_WINDOW_BYTES
    if "max_window_bytes" in values:
        raw, setting = values["max_window_bytes"]
        max_bytes = parse_bytes(raw, setting=setting)
    semantics = _semantics(values, (first.name, second.name))
    return JoinerConfig(
        **semantics,
        max_window_events=max_events,
        max_window_bytes=max_bytes,
        window_seconds=window,
        sources=(first, second),
        where=where,
        select=select,
        where_setting=where_setting,
        select_setting=select_setting,
        targets=tuple(values["to"]),
    )


def _semantics(values: dict[str, Any], streams: tuple[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "time_field" in values:
        time_field, _ = values["time_field"]
        time_format = values.get("time_format", ("auto", ""))[0]
        grace = _duration(values["grace"]) if "grace" in values else 0.0
        idle = _duration(values["idle"]) if "idle" in values else None
        skew = _duration(values["maxFutureSkew"]) if "maxFutureSkew" in values else DEFAULT_MAX_FUTURE_SKEW
        for name, seconds in (("idle", idle), ("maxFutureSkew", skew)):
            if seconds is not None and seconds <= 0:
                raise ConfigError(f"{values[name][1]}={values[name][0]!r}: must be longer than zero")
        out["event_time"] = event_time_spec(
            {"field": time_field, "format": time_format, "grace": grace, "idle": idle, "max_future_skew": skew}
        )
    else:
        for key in ("time_format", "grace", "idle", "maxFutureSkew"):
            if key in values:
                raise ConfigError(f"{values[key][1]} needs an event time field (eventTime.field or JOINER_TIME_FIELD)")
    if "late" in values:
        out["late_target"] = values["late"]
    if "dead_letters" in values:
        unknown = sorted(set(values["dead_letters"]) - set(streams))
        if unknown:
            raise ConfigError(f"deadLetter names {unknown[0]!r}, which is not one of the streams {list(streams)}")
        out["dead_letters"] = values["dead_letters"]
    if "join" in values:
        mode, setting = values["join"]
        if mode not in ("window", "table"):
            raise ConfigError(
                f"{setting}={mode!r}: expected window (both streams windowed) or table (the first stream is a table)"
            )
        out["join_mode"] = mode
    if "deleted_when" in values:
        text, setting = values["deleted_when"]
        if out.get("join_mode") != "table":
            raise ConfigError(f"{setting} only applies with join: table")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{setting} is empty: expected a JSONata predicate over {streams[0]}")
        out["table_deleted_when"] = text
    if "dedup_ttl" in values:
        ttl = _duration(values["dedup_ttl"])
        if ttl <= 0:
            raise ConfigError(f"{values['dedup_ttl'][1]}={values['dedup_ttl'][0]!r}: must be longer than zero")
        out["dedup_ttl"] = ttl
    if "dedup_max" in values:
        raw, setting = values["dedup_max"]
        try:
            out["dedup_max_entries"] = int(str(raw))
        except ValueError:
            raise ConfigError(f"{setting}={raw!r}: expected a whole number") from None
        if out["dedup_max_entries"] <= 0:
            raise ConfigError(f"{setting}={raw!r}: must be at least 1")
    if "dedup_keys" in values:
        unknown = sorted(set(values["dedup_keys"]) - set(streams))
        if unknown:
            raise ConfigError(f"dedup.keyFields names {unknown[0]!r}, which is not one of the streams {list(streams)}")
        out["dedup_key_fields"] = values["dedup_keys"]
    if "aggregate" in values:
        out["aggregate"] = values["aggregate"]
    if "state_store" in values:
        out["state_store"] = values["state_store"][0]
    if "journal" in values:
        raw, setting = values["journal"]
        journal = _boolean(raw, setting)
        if journal and "state_store" not in values:
            raise ConfigError(f"{setting}: the journal needs a state store (state.store or JOINER_STATE_STORE)")
        if journal and "dedup_ttl" not in values:
            raise ConfigError(
                f"{setting}: the journal needs dedup (a delivery answered RETRY when its journal "
                "write fails comes again, and must be recognised)"
            )
        out["journal"] = journal
    if "envelope" in values:
        out["envelope"] = _boolean(*values["envelope"])
    return out


def _duration(entry: tuple[Any, str]) -> float:
    text, setting = entry
    return parse_duration(str(text), setting=setting)


def _boolean(raw: Any, setting: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "1", "yes"):
        return True
    if str(raw).lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"{setting}={raw!r}: expected true or false")
