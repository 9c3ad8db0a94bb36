"""Reading the configuration: the Joiner YAML and the ``JOINER_*`` variables, through the one table of
:mod:`joiner.config.names`, into one validated :class:`~joiner.config.model.JoinerConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from joiner.config.model import ADAPTER, JoinerConfig
from joiner.config.names import NAMES, SECTIONS, Name
from joiner.engine.eventtime import EventTimeSpec
from streaming_runtime.errors import ConfigError

_MISSING = object()


class _Values:
    """The settings read so far: field -> typed value, and where each came from."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def set(self, name: Name, value: Any, origin: str, items: list[str] | None = None) -> None:
        self.values[name.field] = value
        self.origins[name.field] = origin
        for index, item in enumerate(items or []):
            self.origins[f"{name.field}[{index}]"] = item
        if name.origin_field:
            self.values[name.origin_field] = origin


def load_config(environ: Mapping[str, str]) -> JoinerConfig:
    """From ``JOINER_CONFIG`` (a YAML file) and/or the ``JOINER_*`` variables; a variable wins."""
    read = _Values()
    path = environ.get("JOINER_CONFIG")
    if path:
        _read_yaml(_read_file(Path(path)), f"JOINER_CONFIG={path}", read)
    _read_env(environ, read)
    return _build(read, f"JOINER_CONFIG={path}" if path else "environment")


def config_from_yaml(text: str, origin: str = "joiner YAML") -> JoinerConfig:
    read = _Values()
    _read_yaml(text, origin, read)
    return _build(read, origin)


def _read_file(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise ConfigError(f"JOINER_CONFIG={path}: cannot read the file: {error.strerror}") from None


def _read_yaml(text: str, origin: str, read: _Values) -> None:
    spec = _spec_of(text, origin)
    for name in NAMES:
        for path in name.yaml:
            raw = _at(spec, path)
            if raw is not _MISSING:
                value = name.read(raw, path)
                items = [f"{path}[{i}]" for i in range(len(value))] if name.many else None
                read.set(name, value, path, items)
                break


def _spec_of(text: str, origin: str) -> dict[str, Any]:
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
    for section in SECTIONS.values():
        if section.name in spec:
            content = spec[section.name]
            content = {} if content is None and section.required is None else content
            if not isinstance(content, dict) or (section.required is not None and section.required not in content):
                raise ConfigError(f"{origin}: {section.shape}")
    return spec


def _at(spec: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of the spec, or _MISSING (a section given as null holds nothing)."""
    node: Any = spec
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _read_env(environ: Mapping[str, str], read: _Values) -> None:
    for name in NAMES:
        present = [(variable, environ[variable].strip()) for variable in name.env if environ.get(variable, "").strip()]
        if not present:
            continue
        reader = name.read_env or name.read
        if name.many:
            values = [reader(value, variable) for variable, value in present]
            read.set(name, values, present[0][0], [variable for variable, _ in present])
        else:
            variable, value = present[0]
            read.set(name, reader(value, variable), variable)


def _build(read: _Values, origin: str) -> JoinerConfig:
    missing = [name.required for name in NAMES if name.required and name.field not in read.values]
    if missing:
        raise ConfigError(f"joiner configuration ({origin}) is missing {', '.join(missing)}")
    values = {field: value for field, value in read.values.items() if "." not in field}
    values.setdefault("join_mode", "window")
    event_time = _event_time(read)
    if event_time is not None:
        values["event_time"] = event_time
    try:
        return ADAPTER.validate_python(values, context={"origins": read.origins})
    except ValidationError as error:
        raise ConfigError(_one_line(error, read.origins)) from None


def _event_time(read: _Values) -> EventTimeSpec | None:
    group = {field.partition(".")[2]: value for field, value in read.values.items() if field.startswith("event_time.")}
    if not group:
        return None
    if "field" not in group:
        first = next(name for name in NAMES if name.field in read.values and name.field.startswith("event_time."))
        raise ConfigError(
            f"{read.origins[first.field]} needs an event time field (eventTime.field or JOINER_TIME_FIELD)"
        )
    return EventTimeSpec(**group)


def _one_line(error: ValidationError, origins: dict[str, str]) -> str:
    """The first problem pydantic found, named by the user's setting."""
    problem = error.errors()[0]
    fields = [part for part in problem["loc"] if isinstance(part, str) and part in origins]
    setting = origins[fields[0]] if fields else ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":  # a setting of another join mode
        return f"{setting} only applies with join: table"
    return f"{setting}: {problem['msg']}"
