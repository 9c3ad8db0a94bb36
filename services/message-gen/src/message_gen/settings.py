"""message-gen's settings: the original project's variable names."""

from typing import Annotated

from pydantic import BeforeValidator, Field

from streaming_runtime.durations import parse_duration
from streaming_runtime.errors import ConfigError
from streaming_runtime.settings import ServiceSettings


def _duration(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return parse_duration(value, setting="MESSAGE_DELAY")
    except ConfigError as error:
        raise ValueError(str(error)) from None  # reported with the other settings' problems


class GeneratorSettings(ServiceSettings):
    message_expr: str = Field(validation_alias="MESSAGE_EXPR", min_length=1)
    cluster_stream: str = Field(validation_alias="CLUSTER_STREAM", min_length=1)
    stream_topic: str = Field(validation_alias="STREAM_TOPIC", min_length=1)
    message_count: int = Field(0, ge=0, validation_alias="MESSAGE_COUNT")
    message_delay: Annotated[float, BeforeValidator(_duration)] = Field(1.0, ge=0, validation_alias="MESSAGE_DELAY")
    # messages per tick; above 1 they go out in one bulk publish (Dapr's publish_events)
    message_batch: int = Field(1, ge=1, le=10_000, validation_alias="MESSAGE_BATCH")
    # a field of each message whose value is its key (metadata partitionKey: Kafka places messages by it)
    message_key: str | None = Field(None, validation_alias="MESSAGE_PARTITION_KEY", min_length=1)
