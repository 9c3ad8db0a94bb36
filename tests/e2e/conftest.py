"""End-to-end fixtures: the real suite (daprd sidecars, redis-server, rabbitmq-server) from dapr.yaml.

Nothing here is faked. A missing piece is installed by ``make setup`` (``python -m devstack install``);
if it is still missing the stack fails with a message naming it: these tests never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.daprd import daprd_path, installed_version, pinned_version
from devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
RAN_DAPRD: list[str] = []


def pytest_report_header() -> str:
    return f"daprd pinned {pinned_version()}, installed {installed_version(daprd_path())} at {daprd_path()}"


def pytest_terminal_summary(terminalreporter) -> None:
    for line in RAN_DAPRD:
        terminalreporter.write_line(line)


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
    with Stack(ROOT / "dapr.yaml", run_dir, overrides, quiet=True) as running:
        RAN_DAPRD.append(f"end-to-end tests ran daprd {running.daprd_version} ({daprd_path()}), logs in {run_dir / 'logs'}")
        yield running
