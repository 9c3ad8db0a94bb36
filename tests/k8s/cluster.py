"""The local cluster of scripts/cluster/ as the k8s tier sees it: kubectl inside its network namespace,
polling with a deadline, and the pods, logs and certificates the tests look at."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "cluster"
APPS = ("billable-proc", "join-tenants-poweruse", "tenants-gen", "poweruse-gen")
T = TypeVar("T")


class Cluster:
    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run([str(SCRIPTS / "kubectl"), *args], input=input, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def in_netns(self, *command: str, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """A command on the node, inside the cluster's network namespace (where pod addresses exist)."""
        netns = "/run/netns/power-usage-k8s"
        return subprocess.run(["nsenter", f"--net={netns}", "--", *command], input=input, capture_output=True,
                              text=True, timeout=timeout)

    def pods(self, app: str) -> list[dict]:
        return self.json("get", "pods", "-l", f"app={app}")["items"]

    def logs(self, app: str, container: str | None = None) -> str:
        return self.kubectl("logs", f"deploy/{app}", "-c", container or app, "--tail=-1", check=False)

    def exec_python(self, app: str, code: str, timeout: float = 120) -> str:
        """Python in an app's own container (its sidecar answers on localhost there)."""
        return self.kubectl("exec", f"deploy/{app}", "-c", app, "--", "python", "-c", code, timeout=timeout)


def poll(condition: Callable[[], T], timeout: float, what: str, explain: Callable[[], str] = lambda: "") -> T:
    """``condition()`` once truthy, polled every half second; fails after ``timeout`` saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s. {explain()}")
        time.sleep(0.5)
