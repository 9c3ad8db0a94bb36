"""Settings from the environment, validated once at start-up, errors on one line per setting."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streaming_runtime.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


# a request body's limit: what each service accepts, and so what the joiner sends in one call (MAX_CALL_BYTES)
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class ServiceSettings(BaseSettings):
    """What every service reads: where to listen and how to reach its sidecar.

    Names are those the Dapr CLI and the Kubernetes injector set (``APP_PORT``, ``DAPR_HTTP_PORT``...).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    app_id: str | None = None  # APP_ID, as the Dapr CLI sets it
    app_host: str = "127.0.0.1"
    app_port: int = 8080
    dapr_host: str = "127.0.0.1"
    dapr_http_port: int = 3500
    dapr_grpc_port: int = 50001
    dapr_api_token: str | None = None
    app_api_token: str | None = None
    log_level: str = "INFO"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @field_validator("dapr_api_token", "app_api_token")
    @classmethod
    def _token_not_empty(cls, value: str | None, info) -> str | None:
        # daprd takes an empty token for none: a check switched off by a typo must not start
        if value is not None and not value.strip():
            raise ValueError(f"{info.field_name.upper()} is set but empty: give it a value, or unset it")
        return value

    @property
    def dapr_http_endpoint(self) -> str:
        return f"http://{self.dapr_host}:{self.dapr_http_port}"


def load_settings(cls: type[SettingsT], **overrides) -> SettingsT:
    """Build ``cls`` from the environment; a bad or missing value raises ConfigError naming the variable."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, cls)) from None


def describe_validation_error(error: ValidationError, cls: type[BaseSettings] | None = None) -> str:
    prefix = (cls.model_config.get("env_prefix") or "") if cls else ""
    problems = []
    for item in error.errors():
        name = _env_name(item["loc"], prefix, cls)
        if item["type"] == "missing":
            problems.append(f"{name} is not set")
            continue
        value = item.get("input")
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if message.startswith(name):  # the validator already named the setting
            problems.append(message)
        else:
            problems.append(f"{name}={_short(value)}: {message}")
    return "; ".join(problems)


def _env_name(loc, prefix: str, cls) -> str:
    if not loc:
        return "settings"
    field_name = str(loc[0])
    if cls is not None and field_name in cls.model_fields:
        alias = cls.model_fields[field_name].validation_alias or cls.model_fields[field_name].alias
        if isinstance(alias, str):
            return alias
    return (prefix + field_name).upper()


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
