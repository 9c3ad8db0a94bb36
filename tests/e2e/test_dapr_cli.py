"""`dapr run -f` with the real Dapr CLI: the run file as users run it, not as devstack reads it.

The pinned CLI (``dapr-cli.version``, installed by ``make setup``) runs a copy of ``dapr.yaml`` that
differs only where one machine running several suites needs it to: free ports, a directory per app
(where the CLI writes its logs), a private name-resolution database, a 2 s window and faster generators.
The brokers are private ones; their addresses, a sentry on localhost:50001 (where the CLI points daprd when
the Configuration has mTLS on) and the tokens are exported to the CLI, as docs/operations.md tells users to.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devstack.brokers import start_rabbitmq, start_redis
from devstack.daprd import ensure_dapr_cli, ensure_daprd, pinned_version
from devstack.processes import die_with_parent, free_port
from devstack.sentry import start_sentry
from devstack.stack import SECRET_PREFIX, data_received
from tests.e2e.test_power_usage_pipeline import EXPECTED_ROWS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FASTER = {
    "join-tenants-poweruse": {"JOINER_WINDOW_SIZE": "2s", "JOINER_CONFIG": str(ROOT / "services/joiner/joiner.yaml")},
    "tenants-gen": {"MESSAGE_DELAY": "100ms"},
    "poweruse-gen": {"MESSAGE_DELAY": "100ms"},
}


@dataclass
class CliRun:
    process: subprocess.Popen
    output: Path
    run_dir: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def rows(self) -> list[tuple]:
        return [
            (row["customer_id"], row["tenant_id"], row["tenant_kwh_usage"])
            for batch in data_received(self.text())
            for row in batch
        ]


def render_run_file(run_dir: Path) -> Path:
    spec = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    config = yaml.safe_load((ROOT / spec["common"]["configFilePath"]).read_text())
    config["spec"]["nameResolution"]["configuration"]["connectionString"] = str(run_dir / "name-resolution.db")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    spec["common"].update(
        resourcesPath=str(ROOT / spec["common"]["resourcesPath"]), configFilePath=str(run_dir / "config.yaml")
    )
    for app in spec["apps"]:
        app_dir = run_dir / app["appID"]
        app_dir.mkdir()
        # every port chosen here, below the ephemeral range: a port the CLI picks can be taken by an outgoing
        # connection in the ten seconds daprd waits (for the scheduler `dapr run` names) before it listens
        app.update(
            appDirPath=str(app_dir),
            appPort=free_port(),
            daprHTTPPort=free_port(),
            daprGRPCPort=free_port(),
            daprInternalGRPCPort=free_port(),
            metricsPort=free_port(),
            appLogDestination="console",
            daprdLogDestination="file",
        )
        app["env"] = {**app.get("env", {}), **FASTER.get(app["appID"], {})}
    path = run_dir / "dapr.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def processes_of(run_dir: Path) -> list[int]:
    """Live processes started for this run: their working directory or command line is under run_dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if "\nState:\tZ" in (entry / "status").read_text():
                continue  # exited, waiting to be reaped
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(run_dir)) or str(run_dir) in cmdline:
            found.append(int(entry.name))
    return found


def stop(run: CliRun) -> int | None:
    """Ctrl-C, as a user stops it; then whatever is left is killed (the test has failed by then)."""
    if run.process.poll() is None:
        run.process.send_signal(signal.SIGINT)
        try:
            run.process.wait(30)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait(5)
    return run.process.returncode


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Iterator[CliRun]:
    cli, _ = ensure_dapr_cli()
    ensure_daprd()
    run_dir = tmp_path_factory.mktemp("dapr-cli")
    brokers_dir = tmp_path_factory.mktemp("brokers")  # apart: processes_of(run_dir) finds the run's only
    started: list = []  # the brokers and sentry, stopped last-first
    try:
        started.append(start_redis(brokers_dir))
        started.append(start_rabbitmq(brokers_dir))
        started.append(start_sentry(brokers_dir, port=50001))  # the CLI's fixed address; taken: the test fails
        redis, rabbitmq, sentry = started
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `python` is the venv's
            **{SECRET_PREFIX + name: value for broker in (redis, rabbitmq) for name, value in broker.secrets.items()},
            "DAPR_HOST_IP": "127.0.0.1",
            "DAPR_TRUST_ANCHORS": sentry.trust_anchors(),
            "DAPR_API_TOKEN": secrets.token_urlsafe(32),
            "APP_API_TOKEN": secrets.token_urlsafe(32),
        }
        output = run_dir / "dapr-run.log"
        with open(output, "wb") as log:
            process = subprocess.Popen(
                [str(cli), "run", "-f", str(render_run_file(run_dir))],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=run_dir,
                preexec_fn=die_with_parent,
            )
        run = CliRun(process, output, run_dir)
        try:
            yield run
        finally:
            stop(run)
            for pid in processes_of(run_dir):  # a safety net: nothing outlives the test
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    finally:
        for broker in reversed(started):
            broker.stop()


def test_the_cli_and_runtime_are_the_pinned_ones():
    cli, version = ensure_dapr_cli()
    out = subprocess.run([str(cli), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"CLI version: {version}" in out
    assert f"Runtime version: {pinned_version()}" in out


def test_dapr_run_f_bills_exactly_the_billable_rows(cli_run: CliRun):
    deadline = time.monotonic() + 120
    while not set(cli_run.rows()) >= EXPECTED_ROWS:
        if cli_run.process.poll() is not None:
            pytest.fail(f"dapr run -f exited with {cli_run.process.returncode}:\n{cli_run.text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"billable-proc did not log every billable row within 120s:\n{cli_run.text()[-3000:]}")
        time.sleep(0.2)
    assert set(cli_run.rows()) == EXPECTED_ROWS
    for app_id in ("billable-proc", "join-tenants-poweruse", "tenants-gen", "poweruse-gen"):
        assert f'Started Dapr with app id "{app_id}"' in cli_run.text()


def test_the_sidecars_apis_listen_on_loopback_only(cli_run: CliRun):
    """apiListenAddresses in dapr.yaml: the sidecars' HTTP and gRPC APIs on 127.0.0.1 (the CLI has no setting
    for the internal gRPC and metrics addresses, docs/operations.md)."""
    spec = yaml.safe_load((cli_run.run_dir / "dapr.yaml").read_text())
    ports = {app[key] for app in spec["apps"] for key in ("daprHTTPPort", "daprGRPCPort")}
    deadline = time.monotonic() + 60
    while True:
        table = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
        listening = [line.split()[3] for line in table.splitlines() if int(line.split()[3].rpartition(":")[2]) in ports]
        if {int(address.rpartition(":")[2]) for address in listening} == ports or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {int(address.rpartition(":")[2]) for address in listening} == ports, listening
    assert all(address.startswith("127.0.0.1:") for address in listening), listening


def test_ctrl_c_stops_every_app_and_sidecar(cli_run: CliRun):
    assert processes_of(cli_run.run_dir), "the run's processes should be up before it is stopped"
    assert stop(cli_run) == 0, cli_run.text()[-2000:]
    deadline = time.monotonic() + 15
    while (left := processes_of(cli_run.run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"still running after dapr run -f stopped: {left}"
