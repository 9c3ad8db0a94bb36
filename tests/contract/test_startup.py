"""Each service started as a process with a bad setting stops with one line naming it (exit 2)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def start(module: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MESSAGE_", "JOINER_", "CLUSTER_", "STREAM_"))}
    return subprocess.run(
        [sys.executable, "-m", module], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("module", "env", "expected"),
    [
        (
            "message_gen",
            {"CLUSTER_STREAM": "s", "STREAM_TOPIC": "t"},
            "message-gen: configuration error: MESSAGE_EXPR is not set",
        ),
        (
            "message_gen",
            {"MESSAGE_EXPR": "[1]", "CLUSTER_STREAM": "s", "STREAM_TOPIC": "t", "MESSAGE_DELAY": "soon"},
            "MESSAGE_DELAY='soon' is not a duration",
        ),
        (
            "joiner",
            {
                "JOINER_STREAM_FROM_0": "tenants",
                "JOINER_STREAM_FROM_1": "poweruse",
                "JOINER_STREAM_TO_COMPONENT": "billable-proc/billables",
                "JOINER_STREAM_SELECT": "{}",
                "JOINER_STREAM_WHERE": "tenants.tenant_id === poweruse.tenant_id",
                "JOINER_WINDOW_SIZE": "2s",
            },
            "joiner: configuration error: JOINER_STREAM_WHERE does not parse:",
        ),
        ("joiner", {}, "joiner: configuration error: joiner configuration (environment) is missing window"),
        ("message_proc", {"APP_PORT": "eighty"}, "message-proc: configuration error: APP_PORT='eighty'"),
        # an empty token would switch the check off (daprd reads it so): a typo must not start unprotected
        ("message_proc", {"APP_API_TOKEN": ""}, "message-proc: configuration error: APP_API_TOKEN is set but empty"),
        (
            "message_proc",
            {"DAPR_API_TOKEN": "  "},
            "message-proc: configuration error: DAPR_API_TOKEN is set but empty",
        ),
        (
            "message_gen",
            {"MESSAGE_EXPR": "[1]", "CLUSTER_STREAM": "s", "STREAM_TOPIC": "t", "APP_API_TOKEN": ""},
            "message-gen: configuration error: APP_API_TOKEN is set but empty",
        ),
    ],
)
def test_bad_setting_stops_the_service_with_one_clear_line(module, env, expected):
    done = start(module, env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_a_bad_streaming_option_in_the_joiner_yaml_stops_it_with_one_line(tmp_path):
    config = tmp_path / "joiner.yaml"
    config.write_text(
        (Path(__file__).resolve().parents[2] / "services" / "joiner" / "joiner.yaml").read_text()
        + "  aggregate:\n    group_by: [customer_id]\n    fields: {kwh: total(tenant_kwh_usage)}\n"
    )
    done = start("joiner", {"JOINER_CONFIG": str(config)})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("joiner: configuration error: aggregate.fields.kwh:")
    assert "Traceback" not in done.stderr + done.stdout
