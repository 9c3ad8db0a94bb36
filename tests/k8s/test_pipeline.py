"""The pipeline on a real one-node Kubernetes cluster with Dapr's control plane (scripts/cluster/): the
local overlay of deploy/, sidecars injected, mTLS from sentry, and faults a cluster has and a laptop
has not: a rollout of the joiner in the middle of a window, a broker pod deleted mid-stream. Both are
checked by numbers, as the fault suite does: each reading carries its number as ``kwh_use``, and every
number published must be billed exactly once."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_power_usage_pipeline import EXPECTED_ROWS
from tests.k8s.cluster import APPS, ROOT, Cluster, poll

JOINER = "join-tenants-poweruse"
DAPR_VERSION = (ROOT / "dapr.version").read_text().strip()
TENANT, CUSTOMER = "dc:eqix:us:chi1:12", 924  # one of the example's tenants, which tenants-gen keeps publishing
# this run's numbers (a cluster kept running between sessions still holds earlier runs' rows); the
# example's own readings are all below EXAMPLE_ABOVE
RUN = int(time.time()) * 1000
EXAMPLE_ABOVE = 1_000_000

# run by python in poweruse-gen's container: numbered readings through its sidecar, one line per
# reading the sidecar accepted (the broker confirmed it: publisherConfirm)
PUBLISHER = """
import json, os, sys, time, urllib.request
first, count, gap, tenant = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
url = "http://127.0.0.1:%s/v1.0/publish/rabbit-stream/poweruse" % os.environ.get("DAPR_HTTP_PORT", "3500")
for n in range(first, first + count):
    body = json.dumps({"panel_id": 7, "tenant_id": tenant, "power_use": 2.0, "kwh_use": n}).encode()
    request = urllib.request.Request(url, body, {"content-type": "application/json",
                                                 "dapr-api-token": os.environ["DAPR_API_TOKEN"]})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            if answer.status == 204:
                print(n, flush=True)
    except Exception as error:
        print("failed", n, error, file=sys.stderr, flush=True)
    time.sleep(gap)
"""


def billed_rows(cluster: Cluster) -> list[tuple]:
    rows = []
    for line in cluster.logs("billable-proc").splitlines():
        if "Data received: " in line:
            batch = json.loads(line.split("Data received: ", 1)[1])
            rows += [(r["customer_id"], r["tenant_id"], r["tenant_kwh_usage"]) for r in batch]
    return rows


class Publisher:
    """PUBLISHER running in the background; ``accepted`` fills as the sidecar accepts readings."""

    def __init__(self, cluster: Cluster, first: int, count: int, gap: float) -> None:
        self.accepted: list[int] = []
        self.proc = subprocess.Popen(
            [
                str(ROOT / "scripts" / "cluster" / "kubectl"),
                "exec",
                "deploy/poweruse-gen",
                "-c",
                "poweruse-gen",
                "--",
                "python",
                "-c",
                PUBLISHER,
                str(first),
                str(count),
                str(gap),
                TENANT,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.accepted.append(int(line))

    def wait(self, timeout: float) -> list[int]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        self.reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.accepted


def assert_each_billed_once(cluster: Cluster, numbers: list[int], timeout: float) -> None:
    mine = set(numbers)

    def counts() -> Counter:
        return Counter(
            kwh
            for customer, tenant, kwh in billed_rows(cluster)
            if kwh in mine and (customer, tenant) == (CUSTOMER, TENANT)
        )

    poll(
        lambda: set(counts()) >= mine,
        timeout,
        "every accepted reading billed",
        lambda: f"missing: {sorted(mine - set(counts()))[:20]}",
    )
    billed = counts()
    assert [n for n in numbers if billed[n] != 1] == [], "billed other than once"
    assert sum(billed.values()) == len(numbers)


# -- the deployment -------------------------------------------------------------------------------


def test_every_app_pod_runs_the_app_and_its_injected_daprd(pipeline: Cluster):
    for app in APPS:
        pods = pipeline.live_pods(app)
        assert len(pods) == (3 if app == JOINER else 1), (app, [p["metadata"]["name"] for p in pods])
        for pod in pods:
            containers = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
            # the injector's webhook fails open: without this check a pod with no sidecar would pass
            assert containers.get("daprd") == f"localhost/dapr/daprd:{DAPR_VERSION}", f"{app}: {containers}"
            assert app in containers
            statuses = pod["status"]["containerStatuses"]
            assert len(statuses) == 2 and all(s["ready"] for s in statuses), f"{app}: {statuses}"


def test_billable_proc_logs_exactly_the_example_rows(pipeline: Cluster):
    def example_rows() -> set[tuple]:
        return {row for row in billed_rows(pipeline) if row[2] < EXAMPLE_ABOVE}

    poll(
        lambda: example_rows() >= EXPECTED_ROWS,
        150,
        "the example's billable rows in billable-proc's log",
        lambda: f"rows so far: {sorted(example_rows())}",
    )
    assert example_rows() == EXPECTED_ROWS


def test_the_sidecars_talk_mtls_with_certificates_sentry_issued(pipeline: Cluster):
    bundle = pipeline.json("get", "configmap", "dapr-trust-bundle", "-n", "dapr-system")["data"]["ca.crt"]
    config = pipeline.json("get", "configurations.dapr.io", "daprsystem", "-n", "dapr-system")
    assert config["spec"]["mtls"]["enabled"] is True
    with tempfile.TemporaryDirectory() as tmp:
        anchors = Path(tmp) / "anchors.pem"
        anchors.write_text(bundle)
        for app, pod in pipeline.every_app_pod():
            # daprd's internal gRPC port (sidecar to sidecar) presents its workload certificate
            shown = pipeline.in_netns(
                "openssl", "s_client", "-connect", f"{pod['status']['podIP']}:50002", "-showcerts", input=""
            )
            certs = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", shown.stdout, re.S)
            assert certs, f"{app}: no certificate on the internal gRPC port: {shown.stderr[-500:]}"
            leaf, chain = Path(tmp) / f"{app}.pem", Path(tmp) / f"{app}-chain.pem"
            leaf.write_text(certs[0] + "\n")
            chain.write_text("\n".join(certs[1:]) + "\n")
            verify = subprocess.run(
                ["openssl", "verify", "-CAfile", str(anchors), "-untrusted", str(chain), str(leaf)],
                capture_output=True,
                text=True,
            )
            assert verify.returncode == 0, (
                f"{app}: not issued under Dapr's trust anchors: {verify.stdout}{verify.stderr}"
            )
            san = subprocess.run(
                ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(leaf)],
                capture_output=True,
                text=True,
            ).stdout
            assert re.search(rf"URI:spiffe://[^/]+/ns/default/{app}\b", san), f"{app}: {san}"


# -- faults ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_mode(pipeline: Cluster) -> Cluster:
    """The joiner in table mode (tenants as a table, each reading joined once with its tenant's latest
    version), so that a reading's number is billed exactly once whatever window it falls in."""
    joiner = pipeline.workload(JOINER)
    env = pipeline.kubectl("set", "env", joiner, "--list")
    if "JOINER_JOIN_MODE=table" not in env:
        pipeline.kubectl("set", "env", joiner, "JOINER_JOIN_MODE=table")
    pipeline.kubectl("rollout", "status", joiner, "--timeout=300s", timeout=320)
    # a reading that comes before its tenant is in the new joiner's table is, rightly, a table miss (not
    # billed): the tests' numbered readings start once tenants-gen has filled every replica's table again
    poll(lambda: tables_full(pipeline), 90, "the example's 5 tenants in every replica's table")
    return pipeline


def tables_full(cluster: Cluster) -> bool:
    pods = cluster.pod_names(JOINER)
    return len(pods) == 3 and all(cluster.app_stats(JOINER, pod)["table_keys"] >= 5 for pod in pods)


def test_three_joiner_replicas_each_named_by_its_pod_take_every_tenant_and_share_the_readings(pipeline: Cluster):
    """The StatefulSet's pods are the replicas: each its own JOINER_REPLICA and consumer group (every tenant
    record reaches each), the readings shared through one queue."""
    assert pipeline.pod_names(JOINER) == [f"{JOINER}-{n}" for n in range(3)]

    def everyone_took_both() -> bool:
        for pod in pipeline.pod_names(JOINER):
            stats = pipeline.app_stats(JOINER, pod)
            assert stats["replica"] == pod
            if not stats["accepted"].get("tenants") or not stats["accepted"].get("poweruse"):
                return False
        return True

    poll(everyone_took_both, 120, "tenants and readings taken by every replica")


def test_a_rollout_restart_of_the_joiner_mid_window_loses_no_row(table_mode: Cluster):
    cluster = table_mode
    before = {p["metadata"]["uid"] for p in cluster.pods(JOINER) if not p["metadata"].get("deletionTimestamp")}
    publisher = Publisher(cluster, first=RUN, count=150, gap=0.2)  # about 30 s, more than a window
    poll(lambda: len(publisher.accepted) >= 50, 60, "the first readings published")
    cluster.kubectl("rollout", "restart", cluster.workload(JOINER))  # one replica at a time, each its windows
    numbers = publisher.wait(timeout=120)
    cluster.kubectl("rollout", "status", cluster.workload(JOINER), "--timeout=300s", timeout=320)
    after = {p["metadata"]["uid"] for p in cluster.pods(JOINER) if not p["metadata"].get("deletionTimestamp")}
    assert len(after) == 3 and not after & before
    assert len(numbers) == 150
    assert_each_billed_once(cluster, numbers, timeout=120)


def test_the_readings_broker_deleted_mid_stream_recovers_and_bills_what_it_had_accepted(table_mode: Cluster):
    cluster = table_mode
    publisher = Publisher(cluster, first=RUN + 500, count=200, gap=0.2)
    poll(lambda: len(publisher.accepted) >= 50, 60, "the first readings published")
    cluster.kubectl("delete", "pod", "rabbitmq-0", "--wait=false")
    numbers = publisher.wait(timeout=180)
    poll(
        lambda: (
            cluster.json("get", "pod", "rabbitmq-0").get("status", {}).get("containerStatuses", [{}])[0].get("ready")
        ),
        180,
        "rabbitmq-0 back",
    )
    assert len(numbers) >= 50
    assert_each_billed_once(cluster, numbers, timeout=180)
