"""The joiner's configuration as types: one model per join mode, discriminated by ``join_mode``.

The models check what involves more than one setting (two streams, names that must be streams, what the
journal needs, that the expressions parse, that a table join has a key) when they are validated, so that a
:class:`JoinerConfig` is a configuration the processor can trust. Their errors are one-line ConfigErrors
naming the user's setting: :mod:`joiner.config.load` passes where each value came from as the validation
context (``origins``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, model_validator

from joiner.engine.aggregate import AggregateSpec
from joiner.engine.eventtime import EventTimeSpec
from joiner.engine.plan import plan_join
from streaming_runtime.errors import ConfigError
from streaming_runtime.expressions import Expression, compile_expression

DEFAULT_MAX_WINDOW_EVENTS = 1_000_000
DEFAULT_MAX_WINDOW_BYTES = 64 * 1024 * 1024  # of deliveries' JSON; Python holds a few times that in memory


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


def _origins(info: ValidationInfo) -> dict[str, str]:
    return (info.context or {}).get("origins", {})


class JoinerConfig(BaseModel):
    """What every join mode has. Build one with :func:`joiner.config.load_config` or
    :func:`joiner.config.config_from_yaml`; its type is :class:`WindowJoinConfig` or :class:`TableJoinConfig`."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    join_mode: Literal["window", "table"]
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
    dedup_ttl: float | None = Field(None, gt=0)  # seconds; None: no deduplication
    dedup_max_entries: int = Field(100_000, gt=0)
    dedup_key_fields: dict[str, str] = Field(default_factory=dict)  # stream -> field, for events without an id
    aggregate: AggregateSpec | None = None
    envelope: bool = False
    state_store: str | None = None  # a Dapr state store: open windows are handed over through it on restart
    journal: bool = False  # state.journal: deliveries journaled in the state store, replayed after a crash
    # JOINER_REPLICA: one of several replicas (docs/scaling.md): its state-store keys and its deliveries name it
    replica: str | None = None
    # JOINER_BROADCAST: the streams every replica takes in full; None: the first (the tenants, docs/scaling.md)
    broadcast: tuple[str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _two_streams(cls, values: Any, info: ValidationInfo) -> Any:
        """Before the tuple type: its own error would not say which setting or how many streams."""
        sources = values.get("sources") if isinstance(values, dict) else None
        if isinstance(sources, list | tuple) and len(sources) != 2:
            origin = _origins(info).get("sources[0]", "stream.from")
            raise ConfigError(f"{origin}: a join reads exactly two streams, got {len(sources)}")
        return values

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> JoinerConfig:
        origins = _origins(info)
        first, second = self.sources
        second_origin = origins.get("sources[1]", "stream.from[1]")
        if first.name == second.name:
            raise ConfigError(f"{second_origin}: both streams are named {first.name!r}")
        if first.route == second.route:
            raise ConfigError(f"{second_origin}: both streams are delivered to route {first.route}")
        if not self.targets:
            raise ConfigError("stream.to is empty: name at least one component or stream to send rows to")
        for field, setting in (("dead_letters", "deadLetter"), ("dedup_key_fields", "dedup.keyFields")):
            unknown = sorted(set(getattr(self, field)) - set(self.streams))
            if unknown:
                raise ConfigError(
                    f"{setting} names {unknown[0]!r}, which is not one of the streams {list(self.streams)}"
                )
        if self.journal:
            journal = origins.get("journal", "state.journal")
            if self.state_store is None:
                raise ConfigError(f"{journal}: the journal needs a state store (state.store or JOINER_STATE_STORE)")
            if self.dedup_ttl is None:
                raise ConfigError(
                    f"{journal}: the journal needs dedup (a delivery answered RETRY when its journal "
                    "write fails comes again, and must be recognised)"
                )
        unknown = [name for name in self.broadcast or () if name not in self.streams]
        if unknown:
            raise ConfigError(
                f"JOINER_BROADCAST: {', '.join(unknown)} is not one of the streams ({', '.join(self.streams)})"
            )
        if self.replica is not None and self.aggregate is not None:
            # each replica delivers a partial aggregate of its share; billable-proc combines them by the
            # envelope's "partial" (streaming_runtime.partials, docs/scaling.md)
            if not self.envelope:
                raise ConfigError(
                    f"JOINER_REPLICA={self.replica} with aggregate needs output.envelope: true (or "
                    "JOINER_OUTPUT_ENVELOPE=true): each replica delivers a partial aggregate, and its envelope "
                    "says how the parts combine (docs/scaling.md)"
                )
            lasts = [field.name for field in self.aggregate.fields if field.function == "last"]
            if lasts:
                raise ConfigError(
                    f"JOINER_REPLICA={self.replica} with aggregate: {', '.join(lasts)} is last(), the last row in "
                    "arrival order, which replicas do not share: it cannot combine; use max() of a time-ordered "
                    "field, or one joiner (docs/scaling.md)"
                )
        self.compiled_where()
        self.compiled_select()
        return self

    @property
    def broadcast_streams(self) -> tuple[int, ...]:
        """The indexes of the streams every replica takes in full: JOINER_BROADCAST, else the first."""
        if self.broadcast is None:
            return (0,)
        return tuple(index for index, name in enumerate(self.streams) if name in self.broadcast)

    @property
    def streams(self) -> tuple[str, str]:
        return (self.sources[0].name, self.sources[1].name)

    def compiled_where(self) -> Expression:
        return compile_expression(self.where, setting=self.where_setting)

    def compiled_select(self) -> Expression:
        return compile_expression(self.select, setting=self.select_setting)


class WindowJoinConfig(JoinerConfig):
    """``join: window`` (the default): both streams are windowed; pairs are made within a window."""

    join_mode: Literal["window"] = "window"


class TableJoinConfig(JoinerConfig):
    """``join: table``: the first stream is a table keyed by the equality of ``where``."""

    join_mode: Literal["table"] = "table"
    table_deleted_when: str | None = None  # JSONata over the table stream: true means "delete this key"

    @model_validator(mode="after")
    def _keyed(self) -> TableJoinConfig:
        if self.table_deleted_when is not None:
            compile_expression(self.table_deleted_when, setting="table.deletedWhen")
        if not plan_join(self.streams, self.compiled_where(), self.compiled_select()).keys:
            raise ConfigError(
                "join: table needs an equality between the two streams in where "
                f"(such as {self.streams[0]}.id = {self.streams[1]}.id) to key the table"
            )
        return self


AnyJoinerConfig = Annotated[WindowJoinConfig | TableJoinConfig, Field(discriminator="join_mode")]
ADAPTER: TypeAdapter[WindowJoinConfig | TableJoinConfig] = TypeAdapter(AnyJoinerConfig)
