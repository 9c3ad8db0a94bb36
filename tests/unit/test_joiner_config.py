"""The joiner's configuration: JOINER_* variables, a Joiner YAML file, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from joiner.config import (
    InvokeTarget,
    PublishTarget,
    StreamSource,
    TableJoinConfig,
    WindowJoinConfig,
    config_from_yaml,
    load_config,
)
from joiner.config.names import NAMES
from streaming_runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_YAML = ROOT / "services" / "joiner" / "joiner.yaml"

WHERE = "tenants.tenant_id == poweruse.tenant_id && poweruse.power_use >= 1.0"
SELECT = '{"customer_id": tenants.customer_id}'

BASE_ENV = {
    "JOINER_STREAM_FROM_0": "tenants",
    "JOINER_STREAM_FROM_1": "poweruse",
    "JOINER_STREAM_TO_COMPONENT": "billable-proc/billables",
    "JOINER_STREAM_SELECT": SELECT,
    "JOINER_STREAM_WHERE": WHERE,
    "JOINER_WINDOW_SIZE": "20s",
}

SPEC_YAML = """\
window: 5s
stream:
  from: [left, right]
  to:
    - stream: redis-stream/rows
  select: '{"l": left.x}'
  where: left.k == right.k
"""


def _env(**changes: str | None) -> dict[str, str]:
    env = {**BASE_ENV, **changes}
    return {key: value for key, value in env.items() if value is not None}


def _error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    return str(caught.value)


def _yaml_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_yaml(text)
    return str(caught.value)


# --- from the environment -------------------------------------------------------------------------


def test_env_bare_topics_name_the_streams_and_routes():
    config = load_config(_env())

    assert config.sources == (
        StreamSource(name="tenants", topic="tenants", route="/tenants", pubsub=None),
        StreamSource(name="poweruse", topic="poweruse", route="/poweruse", pubsub=None),
    )


def test_env_pubsub_topic_route_triples():
    config = load_config(
        _env(
            JOINER_STREAM_FROM_0="redis-stream|tenants|/in/tenants",
            JOINER_STREAM_FROM_1="rabbit-stream|poweruse|power",
        )
    )

    assert config.sources == (
        StreamSource(name="tenants", topic="tenants", route="/in/tenants", pubsub="redis-stream"),
        StreamSource(name="poweruse", topic="poweruse", route="/power", pubsub="rabbit-stream"),
    )


def test_env_triple_with_empty_route_uses_the_topic():
    config = load_config(_env(JOINER_STREAM_FROM_0="redis-stream|tenants|"))

    assert config.sources[0].route == "/tenants"


def test_env_window_size():
    assert load_config(_env(JOINER_WINDOW_SIZE="1m30s")).window_seconds == 90.0


def test_env_component_target():
    config = load_config(_env())

    assert config.targets == (InvokeTarget(app_id="billable-proc", method="billables"),)
    assert str(config.targets[0]) == "billable-proc/billables"


def test_env_stream_target():
    config = load_config(_env(JOINER_STREAM_TO_COMPONENT=None, JOINER_STREAM_TO_STREAM="redis-stream/billables"))

    assert config.targets == (PublishTarget(pubsub="redis-stream", topic="billables"),)


def test_env_both_targets_component_first():
    config = load_config(_env(JOINER_STREAM_TO_STREAM="redis-stream/billables"))

    assert [str(target) for target in config.targets] == ["billable-proc/billables", "redis-stream/billables"]


def test_env_where_and_select_keep_their_setting_names():
    config = load_config(_env())

    assert (config.where, config.where_setting) == (WHERE, "JOINER_STREAM_WHERE")
    assert (config.select, config.select_setting) == (SELECT, "JOINER_STREAM_SELECT")


def test_env_filter_is_an_alias_of_where():
    config = load_config(_env(JOINER_STREAM_WHERE=None, JOINER_STREAM_FILTER="true"))

    assert (config.where, config.where_setting) == ("true", "JOINER_STREAM_FILTER")


def test_env_where_wins_over_filter():
    config = load_config(_env(JOINER_STREAM_FILTER="false"))

    assert config.where == WHERE


# --- from YAML ------------------------------------------------------------------------------------


def test_the_example_joiner_yaml_loads():
    config = load_config({"JOINER_CONFIG": str(EXAMPLE_YAML)})

    assert config.window_seconds == 20.0
    assert [(s.name, s.topic, s.route) for s in config.sources] == [
        ("tenants", "tenants", "/tenants"),
        ("poweruse", "poweruse", "/poweruse"),
    ]
    assert config.targets == (InvokeTarget(app_id="billable-proc", method="billables"),)
    assert config.where_setting == "stream.where"
    assert "poweruse.power_use >= 1.0" in config.where
    assert '"tenant_kwh_usage": poweruse.kwh_use' in config.select


def test_yaml_file_from_joiner_config(tmp_path):
    path = tmp_path / "joiner.yaml"
    path.write_text(SPEC_YAML)

    config = load_config({"JOINER_CONFIG": str(path)})

    assert config.window_seconds == 5.0
    assert [s.name for s in config.sources] == ["left", "right"]
    assert config.targets == (PublishTarget(pubsub="redis-stream", topic="rows"),)
    assert config.where == "left.k == right.k"


def test_env_overrides_a_yaml_value(tmp_path):
    path = tmp_path / "joiner.yaml"
    path.write_text(SPEC_YAML)

    config = load_config({"JOINER_CONFIG": str(path), "JOINER_WINDOW_SIZE": "1m", "JOINER_STREAM_WHERE": "true"})

    assert config.window_seconds == 60.0
    assert (config.where, config.where_setting) == ("true", "JOINER_STREAM_WHERE")
    assert config.select == '{"l": left.x}'  # not overridden: still from the file


def test_config_from_yaml_bare_spec():
    config = config_from_yaml(SPEC_YAML)

    assert config.window_seconds == 5.0
    assert [s.route for s in config.sources] == ["/left", "/right"]


def test_yaml_stream_entries_as_mappings():
    config = config_from_yaml(
        """\
window: 1s
stream:
  from:
    - {name: t, pubsub: redis-stream, topic: tenants, route: /tenants-in}
    - {topic: poweruse}
  to: [{component: app/method}]
  select: t
  where: "true"
"""
    )

    assert config.sources == (
        StreamSource(name="t", topic="tenants", route="/tenants-in", pubsub="redis-stream"),
        StreamSource(name="poweruse", topic="poweruse", route="/poweruse", pubsub=None),
    )


def test_yaml_filter_is_an_alias_of_where():
    config = config_from_yaml(SPEC_YAML.replace("where:", "filter:"))

    assert (config.where, config.where_setting) == ("left.k == right.k", "stream.filter")


# --- errors ---------------------------------------------------------------------------------------


def test_error_missing_everything():
    assert _error({}) == (
        "joiner configuration (environment) is missing window (JOINER_WINDOW_SIZE), "
        "stream.from (JOINER_STREAM_FROM_0 and _1), "
        "stream.to (JOINER_STREAM_TO_COMPONENT or JOINER_STREAM_TO_STREAM), "
        "stream.select (JOINER_STREAM_SELECT), stream.where (JOINER_STREAM_WHERE)"
    )


def test_error_missing_one():
    assert _error(_env(JOINER_STREAM_SELECT=None)) == (
        "joiner configuration (environment) is missing stream.select (JOINER_STREAM_SELECT)"
    )


def test_error_window_not_a_duration():
    assert _error(_env(JOINER_WINDOW_SIZE="soon")) == (
        "JOINER_WINDOW_SIZE='soon' is not a duration: expected a number with a unit "
        "(ns, us, ms, s, m, h), such as 1s, 250ms or 1m30s"
    )


def test_error_window_zero():
    assert _error(_env(JOINER_WINDOW_SIZE="0s")) == "JOINER_WINDOW_SIZE='0s': the window must be longer than zero"


def test_error_from_with_two_parts():
    assert _error(_env(JOINER_STREAM_FROM_0="a|b")) == (
        "JOINER_STREAM_FROM_0='a|b': expected pubsub|topic|route (or just topic)"
    )


def test_error_stream_name_with_a_dash():
    assert _error(_env(JOINER_STREAM_FROM_1="power-use")) == (
        "JOINER_STREAM_FROM_1: stream name 'power-use' cannot be a JSONata variable: use letters, digits and _"
    )


def test_error_same_stream_twice():
    assert _error(_env(JOINER_STREAM_FROM_1="tenants")) == "JOINER_STREAM_FROM_1: both streams are named 'tenants'"


def test_error_only_one_stream():
    assert _error(_env(JOINER_STREAM_FROM_1=None)) == ("JOINER_STREAM_FROM_0: a join reads exactly two streams, got 1")


def test_error_two_streams_on_one_route():
    message = _error(_env(JOINER_STREAM_FROM_0="ps|tenants|/in", JOINER_STREAM_FROM_1="ps|poweruse|/in"))

    assert message == "JOINER_STREAM_FROM_1: both streams are delivered to route /in"


def test_error_component_without_method():
    assert _error(_env(JOINER_STREAM_TO_COMPONENT="billable-proc")) == (
        "JOINER_STREAM_TO_COMPONENT='billable-proc': expected app-id/method, such as billable-proc/billables"
    )


def test_error_stream_target_without_topic():
    assert _error(_env(JOINER_STREAM_TO_STREAM="nopubsub")) == (
        "JOINER_STREAM_TO_STREAM='nopubsub': expected pubsub/topic, such as redis-stream/billables"
    )


def test_error_yaml_that_does_not_parse():
    assert _yaml_error("window: 20s\nstream: from: [a, b]\n") == (
        "joiner YAML: not valid YAML at line 2, column 13: mapping values are not allowed here"
    )


def test_error_yaml_file_that_does_not_parse_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("window: [20s\n")

    message = _error({"JOINER_CONFIG": str(path)})

    assert message.startswith(f"JOINER_CONFIG={path}: not valid YAML at line 2, column 1: ")


def test_error_kind_processor():
    assert _yaml_error("kind: Processor\nspec:\n  window: 1s\n") == (
        "joiner YAML: kind is 'Processor', expected Joiner"
    )


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just text\n", ""])
def test_error_yaml_not_a_mapping(text):
    assert _yaml_error(text) == "joiner YAML: expected a mapping with window and stream"


@pytest.mark.parametrize("text", ["kind: Joiner\nspec:\n", "spec: [1]\n"])
def test_error_spec_not_a_mapping(text):
    assert _yaml_error(text) == "joiner YAML: spec must be a mapping with window and stream"


def test_error_stream_not_a_mapping():
    assert _yaml_error("window: 1s\nstream: [a]\n") == (
        "joiner YAML: stream must be a mapping with from, to, select and where"
    )


def test_error_joiner_config_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"

    assert _error({"JOINER_CONFIG": str(path)}) == (
        f"JOINER_CONFIG={path}: cannot read the file: No such file or directory"
    )


def test_error_missing_from_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("window: 1s\n")

    message = _error({"JOINER_CONFIG": str(path)})

    assert message.startswith(f"joiner configuration (JOINER_CONFIG={path}) is missing stream.from ")


def test_error_empty_yaml_where():
    assert _yaml_error(SPEC_YAML.replace("where: left.k == right.k", "where: ''")) == (
        "stream.where is empty: expected a JSONata expression"
    )


# --- state.store: the handover of open windows ----------------------------------------------------


def test_state_store_from_yaml_and_from_the_environment():
    assert config_from_yaml(SPEC_YAML + "state: {store: joiner-state}\n").state_store == "joiner-state"
    assert load_config(_env(JOINER_STATE_STORE="joiner-state")).state_store == "joiner-state"
    assert load_config(_env()).state_store is None


@pytest.mark.parametrize("extra", ["dedup: {ttl: 1m}", "eventTime: {field: ts}", "join: table"])
def test_state_store_with_every_mode(extra):
    assert config_from_yaml(SPEC_YAML + "state: {store: joiner-state}\n" + extra + "\n").state_store == "joiner-state"


@pytest.mark.parametrize("value", ["joiner-state", "{}", "[1]"])
def test_state_must_name_a_store(value):
    assert _yaml_error(SPEC_YAML + f"state: {value}\n") == (
        "joiner YAML: state must be {store: <Dapr state store component>}, such as {store: joiner-state}"
    )


def test_state_store_must_be_a_name():
    assert _yaml_error(SPEC_YAML + "state: {store: ''}\n") == (
        "state.store='': expected the name of a Dapr state store component, such as joiner-state"
    )


# --- bounds: maxWindowBytes, eventTime.maxFutureSkew -----------------------------------------------


def test_max_window_bytes_from_yaml_and_from_the_environment():
    assert config_from_yaml(SPEC_YAML + "maxWindowBytes: 48Mi\n").max_window_bytes == 48 * 1024 * 1024
    assert load_config(_env(JOINER_MAX_WINDOW_BYTES="1000000")).max_window_bytes == 1_000_000
    assert load_config(_env()).max_window_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize("value", ["lots", "0", "-1Mi"])
def test_max_window_bytes_must_be_a_size(value):
    assert "maxWindowBytes=" in _yaml_error(SPEC_YAML + f"maxWindowBytes: '{value}'\n")
    assert "JOINER_MAX_WINDOW_BYTES=" in _error(_env(JOINER_MAX_WINDOW_BYTES=value))


def test_max_future_skew_from_yaml_and_from_the_environment():
    assert config_from_yaml(SPEC_YAML + "eventTime: {field: ts, maxFutureSkew: 2m}\n").event_time.max_future_skew == 120
    assert load_config(_env(JOINER_TIME_FIELD="ts", JOINER_MAX_FUTURE_SKEW="30s")).event_time.max_future_skew == 30
    assert config_from_yaml(SPEC_YAML + "eventTime: {field: ts}\n").event_time.max_future_skew == 900


def test_max_future_skew_needs_event_time_and_a_positive_duration():
    assert _yaml_error(SPEC_YAML + "eventTime: {field: ts, maxFutureSkew: 0s}\n") == (
        "eventTime.maxFutureSkew='0s': must be longer than zero"
    )
    assert _error(_env(JOINER_MAX_FUTURE_SKEW="1m")) == (
        "JOINER_MAX_FUTURE_SKEW needs an event time field (eventTime.field or JOINER_TIME_FIELD)"
    )


# --- deadLetter: the joiner's own dead letters, per stream -------------------------------------------


def test_dead_letters_from_yaml_and_from_the_environment():
    config = config_from_yaml(SPEC_YAML + "deadLetter: {right: rabbit-stream/right-deadletter}\n")
    assert config.dead_letters == {"right": PublishTarget(pubsub="rabbit-stream", topic="right-deadletter")}
    env = load_config(_env(JOINER_DEAD_LETTER_TO_STREAM="poweruse=rabbit-stream/p-dl, tenants=redis-stream/t-dl"))
    assert env.dead_letters == {
        "poweruse": PublishTarget(pubsub="rabbit-stream", topic="p-dl"),
        "tenants": PublishTarget(pubsub="redis-stream", topic="t-dl"),
    }
    assert load_config(_env()).dead_letters == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{nope: a/b}", "deadLetter names 'nope', which is not one of the streams ['left', 'right']"),
        ("{right: nothing}", "deadLetter.right='nothing': expected pubsub/topic, such as redis-stream/billables"),
        (
            "[right]",
            "deadLetter must map a stream to pubsub/topic, such as {poweruse: rabbit-stream/poweruse-deadletter}",
        ),
    ],
)
def test_dead_letters_must_name_a_stream_and_a_topic(value, message):
    assert _yaml_error(SPEC_YAML + f"deadLetter: {value}\n") == message


def test_dead_letters_from_the_environment_need_stream_equals_topic():
    assert _error(_env(JOINER_DEAD_LETTER_TO_STREAM="rabbit-stream/p")) == (
        "JOINER_DEAD_LETTER_TO_STREAM='rabbit-stream/p': expected stream=pubsub/topic, comma-separated"
    )


# --- state.journal -------------------------------------------------------------------------------------


def test_the_journal_needs_a_state_store_and_dedup():
    with_both = SPEC_YAML + "state: {store: joiner-state, journal: true}\ndedup: {ttl: 10m}\n"
    assert config_from_yaml(with_both).journal is True
    assert load_config(_env(JOINER_STATE_STORE="s", JOINER_JOURNAL="true", JOINER_DEDUP_TTL="10m")).journal is True
    assert _yaml_error(SPEC_YAML + "state: {store: joiner-state, journal: true}\n") == (
        "state.journal: the journal needs dedup (a delivery answered RETRY when its journal write fails comes "
        "again, and must be recognised)"
    )
    assert _error(_env(JOINER_JOURNAL="yes", JOINER_DEDUP_TTL="1m")) == (
        "JOINER_JOURNAL: the journal needs a state store (state.store or JOINER_STATE_STORE)"
    )
    assert _error(_env(JOINER_JOURNAL="maybe")) == "JOINER_JOURNAL='maybe': expected true or false"


# --- one typed configuration per join mode, validated in one step ------------------------------------


def test_the_join_mode_decides_the_configurations_type():
    assert isinstance(config_from_yaml(SPEC_YAML), WindowJoinConfig)
    table = config_from_yaml(SPEC_YAML + "join: table\ntable: {deletedWhen: left.gone = true}\n")
    assert isinstance(table, TableJoinConfig)
    assert table.table_deleted_when == "left.gone = true"
    assert isinstance(load_config(_env(JOINER_JOIN_MODE="table")), TableJoinConfig)


def test_a_setting_of_the_table_join_is_refused_in_a_window_join():
    assert _yaml_error(SPEC_YAML + "table: {deletedWhen: left.gone = true}\n") == (
        "table.deletedWhen only applies with join: table"
    )
    assert _error(_env(JOINER_TABLE_DELETED_WHEN="tenants.gone")) == (
        "JOINER_TABLE_DELETED_WHEN only applies with join: table"
    )


def test_an_expression_that_does_not_parse_stops_the_configuration_naming_its_setting():
    assert _error(_env(JOINER_STREAM_SELECT='{"a": tenants.}')).startswith("JOINER_STREAM_SELECT does not parse: ")
    assert _yaml_error(SPEC_YAML.replace("where: left.k == right.k", "where: left.k ==")).startswith(
        "stream.where does not parse: "
    )
    table = SPEC_YAML + "join: table\ntable: {deletedWhen: 'left.gone ='}\n"
    assert _yaml_error(table).startswith("table.deletedWhen does not parse: ")


def test_a_variable_wins_over_the_yaml_for_every_kind_of_value(tmp_path):
    path = tmp_path / "joiner.yaml"
    path.write_text(SPEC_YAML + "dedup: {ttl: 1m, maxEntries: 10}\noutput: {envelope: false}\n")
    config = load_config(
        {
            "JOINER_CONFIG": str(path),
            "JOINER_DEDUP_TTL": "2m",
            "JOINER_DEDUP_MAX_ENTRIES": "20",
            "JOINER_OUTPUT_ENVELOPE": "true",
            "JOINER_STREAM_TO_COMPONENT": "billable-proc/billables",
        }
    )
    assert (config.dedup_ttl, config.dedup_max_entries, config.envelope) == (120, 20, True)
    assert config.targets == (InvokeTarget(app_id="billable-proc", method="billables"),)


def test_every_setting_has_a_yaml_path_and_every_variable_is_read_once():
    variables = [variable for name in NAMES for variable in name.env]
    assert len(variables) == len(set(variables))
    assert all(name.yaml for name in NAMES)
    assert len({name.field for name in NAMES}) == len(NAMES)
