"""The k8s tier: one local cluster (scripts/cluster/up.sh) for the whole session, the local overlay
applied to it, and the cluster taken down at the end whatever happened (down.sh), unless it was
already running when the session started (then it is left as it was found, for iterating)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.cluster import APPS, ROOT, SCRIPTS, Cluster, poll


def _running() -> bool:
    return Path("/run/netns/power-usage-k8s").exists() and Path("/var/lib/power-usage-k8s/.up").exists()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    ours = not _running()
    if ours:
        subprocess.run(["bash", str(SCRIPTS / "up.sh")], check=True, timeout=3600)
    try:
        yield Cluster()
    finally:
        if ours:
            subprocess.run(["bash", str(SCRIPTS / "down.sh")], check=False, timeout=300)


@pytest.fixture(scope="session")
def pipeline(cluster: Cluster) -> Cluster:
    """The local overlay applied, and every pod of it ready."""
    subprocess.run(["sh", str(ROOT / "deploy" / "overlays" / "dev" / "generate-secrets.sh")], check=True)
    kustomize = Path.home() / ".cache" / "power-usage" / "bin" / "kustomize"
    manifests = subprocess.run(
        [str(kustomize), "build", str(ROOT / "deploy" / "overlays" / "local")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cluster.kubectl("apply", "-f", "-", input=manifests)
    for app in (*APPS, "redis", "rabbitmq"):
        poll(
            lambda app=app: _ready(cluster, app),
            300,
            f"pods of {app} ready",
            lambda: cluster.kubectl("get", "pods", "-o", "wide", check=False),
        )
    return cluster


def _ready(cluster: Cluster, app: str) -> bool:
    pods = [p for p in cluster.pods(app) if not p["metadata"].get("deletionTimestamp")]
    if app in APPS:
        # a pod created while the injector's webhook was not reachable has no daprd (the webhook fails
        # open): deleted, its controller makes it again, through the webhook this time
        for pod in pods:
            if "daprd" not in {c["name"] for c in pod["spec"]["containers"]}:
                cluster.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
                return False
    return bool(pods) and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])) for p in pods
    )
