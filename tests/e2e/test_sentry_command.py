"""`python -m devstack sentry`, what a `dapr run -f .` user starts first: sentry on localhost:50001 (where the
CLI points daprd when the Configuration has mTLS on), its keys and the name-resolution database in the
project's `.dapr/`, which only its owner can enter (a fixed file under /tmp could be made first by another
user, to redirect calls)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from devstack.processes import port_open
from devstack.runfile import read_run_file

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_name_resolution_database_of_dapr_run_is_in_the_private_directory():
    config = yaml.safe_load((ROOT / "components" / "config.yaml").read_text())
    path = config["spec"]["nameResolution"]["configuration"]["connectionString"]
    assert not path.startswith("/"), path
    # the CLI runs each daprd in its app's directory: every one must reach the same file, in .dapr/
    for app in read_run_file(ROOT / "dapr.yaml").apps:
        assert (app.app_dir / path).resolve() == ROOT / ".dapr" / "name-resolution.db", app.app_id
    ignored = subprocess.run(["git", "check-ignore", "-q", ".dapr/name-resolution.db"], cwd=ROOT)
    assert ignored.returncode == 0


def test_devstack_sentry_serves_mtls_for_the_cli_from_a_private_directory():
    with subprocess.Popen(
        [sys.executable, "-m", "devstack", "sentry"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        check_sentry_command(process)
    assert process.returncode == 0
    assert not port_open(50001)
    assert os.access(ROOT / ".dapr", os.W_OK)


def check_sentry_command(process: subprocess.Popen) -> None:
    assert process.stdout is not None and process.stderr is not None
    try:
        exports = [process.stdout.readline(), process.stdout.readline()]
        assert exports[0].startswith('export DAPR_TRUST_ANCHORS="$(cat '), (exports, process.stderr.read())
        assert exports[1].startswith("export DAPR_API_TOKEN=") and " APP_API_TOKEN=" in exports[1]
        deadline = time.monotonic() + 30
        while not port_open(50001) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert port_open(50001)
        private = ROOT / ".dapr"
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        anchors = Path(exports[0].split("$(cat ", 1)[1].split(")", 1)[0])
        assert anchors.read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert private in anchors.parents
        assert stat.S_IMODE((anchors.parent / "issuer.key").stat().st_mode) & 0o077 == 0
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)
