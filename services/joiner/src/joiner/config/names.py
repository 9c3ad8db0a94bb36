"""Every setting of the joiner, once: its field in :class:`~joiner.config.model.JoinerConfig`, its place in
the Joiner YAML, its environment variables (the original joiner's names) and the reader of its value.

A ``.`` in ``field`` groups settings into one field (``event_time.grace``: the ``grace`` of ``event_time``).
The first YAML path that is present wins, and so does the first variable that is set; a variable wins
over the YAML. ``many``: each variable set gives one item of a list (the two streams, the two kinds of
target)."""

from __future__ import annotations

from dataclasses import dataclass

from joiner.config import readers as read
from joiner.config.readers import Reader


@dataclass(frozen=True)
class Name:
    field: str
    yaml: tuple[str, ...]
    env: tuple[str, ...] = ()
    read: Reader = read.text
    read_env: Reader | None = None  # when the variable is written differently from the YAML value
    many: bool = False
    required: str | None = None  # how the "is missing" error names it
    origin_field: str | None = None  # a field that keeps where the value came from, for later errors


NAMES: tuple[Name, ...] = (
    Name("window_seconds", ("window",), ("JOINER_WINDOW_SIZE",), read.window, required="window (JOINER_WINDOW_SIZE)"),
    Name(
        "sources",
        ("stream.from",),
        ("JOINER_STREAM_FROM_0", "JOINER_STREAM_FROM_1"),
        read.sources_from_yaml,
        read.source_from_env,
        many=True,
        required="stream.from (JOINER_STREAM_FROM_0 and _1)",
    ),
    Name(
        "targets",
        ("stream.to",),
        ("JOINER_STREAM_TO_COMPONENT", "JOINER_STREAM_TO_STREAM"),
        read.targets_from_yaml,
        read.target_from_env,
        many=True,
        required="stream.to (JOINER_STREAM_TO_COMPONENT or JOINER_STREAM_TO_STREAM)",
    ),
    Name(
        "select",
        ("stream.select",),
        ("JOINER_STREAM_SELECT",),
        read.expression,
        required="stream.select (JOINER_STREAM_SELECT)",
        origin_field="select_setting",
    ),
    Name(
        "where",
        ("stream.where", "stream.filter"),
        ("JOINER_STREAM_WHERE", "JOINER_STREAM_FILTER"),
        read.expression,
        required="stream.where (JOINER_STREAM_WHERE)",
        origin_field="where_setting",
    ),
    Name("max_window_events", ("maxWindowEvents",), ("JOINER_MAX_WINDOW_EVENTS",), read.event_count),
    Name("max_window_bytes", ("maxWindowBytes",), ("JOINER_MAX_WINDOW_BYTES",), read.size),
    Name("event_time.field", ("eventTime.field",), ("JOINER_TIME_FIELD",), read.time_field),
    Name("event_time.format", ("eventTime.format",), ("JOINER_TIME_FORMAT",), read.time_format),
    Name("event_time.grace", ("eventTime.grace",), ("JOINER_GRACE",), read.duration),
    Name("event_time.idle", ("eventTime.idle",), ("JOINER_IDLE_TIMEOUT",), read.positive_duration),
    Name(
        "event_time.max_future_skew",
        ("eventTime.maxFutureSkew",),
        ("JOINER_MAX_FUTURE_SKEW",),
        read.positive_duration,
    ),
    Name("late_target", ("late.stream",), ("JOINER_LATE_TO_STREAM",), read.publish_target),
    Name(
        "dead_letters",
        ("deadLetter",),
        ("JOINER_DEAD_LETTER_TO_STREAM",),
        read.dead_letters_from_yaml,
        read.dead_letters_from_env,
    ),
    Name("join_mode", ("join",), ("JOINER_JOIN_MODE",), read.join_mode),
    Name("table_deleted_when", ("table.deletedWhen",), ("JOINER_TABLE_DELETED_WHEN",), read.expression),
    Name("dedup_ttl", ("dedup.ttl",), ("JOINER_DEDUP_TTL",), read.positive_duration),
    Name("dedup_max_entries", ("dedup.maxEntries",), ("JOINER_DEDUP_MAX_ENTRIES",), read.count),
    Name("dedup_key_fields", ("dedup.keyFields",), (), read.key_fields),
    Name("aggregate", ("aggregate",), (), read.aggregate),
    Name("state_store", ("state.store",), ("JOINER_STATE_STORE",), read.store_name),
    Name("journal", ("state.journal",), ("JOINER_JOURNAL",), read.boolean),
    Name("envelope", ("output.envelope",), ("JOINER_OUTPUT_ENVELOPE",), read.boolean),
    # the replica this process is (docs/scaling.md): one per process, so JOINER_REPLICA rather than the YAML
    Name("replica", ("replica",), ("JOINER_REPLICA",), read.replica),
    # which streams every replica takes in full (its own consumer group); the others are shared, and claimed
    Name("broadcast", ("broadcast",), ("JOINER_BROADCAST",), read.stream_names),
)


@dataclass(frozen=True)
class Section:
    """A mapping of the Joiner YAML that holds settings, and what it must look like."""

    name: str
    shape: str  # the error when it is not a mapping
    required: str | None = None  # a key it cannot be without


SECTIONS: dict[str, Section] = {
    section.name: section
    for section in (
        Section("stream", "stream must be a mapping with from, to, select and where"),
        Section("eventTime", "eventTime must be a mapping with field (and format, grace, idle)"),
        Section("late", "late must be {stream: pubsub/topic}", required="stream"),
        Section("table", "table must be a mapping, such as {deletedWhen: 'tenants.deleted = true'}"),
        Section("dedup", "dedup must be a mapping, such as {ttl: 10m, maxEntries: 100000}"),
        Section(
            "state",
            "state must be {store: <Dapr state store component>}, such as {store: joiner-state}",
            required="store",
        ),
        Section("output", "output must be a mapping, such as {envelope: true}"),
    )
}
