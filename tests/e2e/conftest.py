"""End-to-end fixtures: the real suite (daprd sidecars, redis-server, rabbitmq-server) from dapr.yaml.

Nothing here is faked. A missing piece is installed by ``make setup`` (``python -m devstack install``);
if it is still missing the stack fails with a message naming it: these tests never skip.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack.daprd import daprd_path, installed_version, pinned_version
from devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
RAN_DAPRD: list[str] = []


def pytest_report_header() -> str:
    return f"daprd pinned {pinned_version()}, installed {installed_version(daprd_path())} at {daprd_path()}"


def pytest_terminal_summary(terminalreporter) -> None:
    for line in RAN_DAPRD:
        terminalreporter.write_line(line)


def with_topic(directory: Path, pubsub: str, app_id: str, topic: str) -> Path:
    """A copy of components/ in ``directory`` where ``app_id`` may also publish ``topic`` on ``pubsub``: the
    joiner's stream target of these tests (as docs/streaming.md tells users to add one)."""
    shutil.copytree(ROOT / "components", directory, dirs_exist_ok=True)
    path = directory / f"{pubsub}.yaml"
    component = yaml.safe_load(path.read_text())
    for item in component["spec"]["metadata"]:
        if item["name"] == "allowedTopics":
            item["value"] += f",{topic}"
        elif item["name"] == "publishingScopes":
            item["value"] = ";".join(
                scope + (f",{topic}" if scope.startswith(f"{app_id}=") else "") for scope in item["value"].split(";")
            )
    path.write_text(yaml.safe_dump(component, sort_keys=False))
    return directory


@pytest.fixture(scope="package")
def stack(tmp_path_factory) -> Iterator[Stack]:
    overrides = {
        # rows also go to a topic, to check the window metadata Dapr carries as CloudEvent extensions
        "join-tenants-poweruse": {
            "JOINER_WINDOW_SIZE": "2s",
            "JOINER_STREAM_TO_COMPONENT": "billable-proc/billables",
            "JOINER_STREAM_TO_STREAM": "redis-stream/billables",
        },
        "tenants-gen": {"MESSAGE_DELAY": "100ms"},
        "poweruse-gen": {"MESSAGE_DELAY": "100ms"},
    }
    run_dir = tmp_path_factory.mktemp("stack")
    resources = with_topic(tmp_path_factory.mktemp("resources"), "redis-stream", "join-tenants-poweruse", "billables")
    with Stack(ROOT / "dapr.yaml", run_dir, overrides, quiet=True, resources=resources) as running:
        RAN_DAPRD.append(
            f"end-to-end tests ran daprd {running.daprd_version} ({daprd_path()}), logs in {run_dir / 'logs'}"
        )
        yield running
