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
STATEFUL = {"join-tenants-poweruse"}  # the joiner's replicas: a StatefulSet (docs/scaling.md), the rest Deployments
T = TypeVar("T")


class Cluster:
    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(SCRIPTS / "kubectl"), *args], input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def in_netns(self, *command: str, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """A command on the node, inside the cluster's network namespace (where pod addresses exist)."""
        netns = "/run/netns/power-usage-k8s"
        return subprocess.run(
            ["nsenter", f"--net={netns}", "--", *command], input=input, capture_output=True, text=True, timeout=timeout
        )

    def pods(self, app: str) -> list[dict]:
        return self.json("get", "pods", "-l", f"app={app}")["items"]

    def live_pods(self, app: str) -> list[dict]:
        """The app's pods that are not being deleted (the joiner has three: its replicas)."""
        return [p for p in self.pods(app) if not p["metadata"].get("deletionTimestamp")]

    def every_app_pod(self) -> list[tuple[str, dict]]:
        """(app, pod) for every live pod of every app."""
        return [(app, pod) for app in APPS for pod in self.live_pods(app)]

    def pod_names(self, app: str) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.live_pods(app))

    @staticmethod
    def workload(app: str) -> str:
        return f"statefulset/{app}" if app in STATEFUL else f"deploy/{app}"

    def logs(self, app: str, container: str | None = None) -> str:
        """Every pod's log of the app, one after the other."""
        return "".join(
            self.kubectl("logs", f"pod/{pod}", "-c", container or app, "--tail=-1", check=False)
            for pod in self.pod_names(app)
        )

    def exec_python(self, app: str, code: str, timeout: float = 120) -> str:
        """Python in an app's own container (its sidecar answers on localhost there)."""
        return self.kubectl("exec", self.workload(app), "-c", app, "--", "python", "-c", code, timeout=timeout)

    def http_from(
        self,
        app: str,
        method: str,
        url: str,
        body: str = "",
        token: str | None = "DAPR_API_TOKEN",
        pod: str | None = None,
    ) -> tuple[int, str]:
        """An HTTP call made from inside ``app``'s container (to its sidecar on localhost, or to a pod's IP),
        with the pod's ``token`` (DAPR_API_TOKEN for a sidecar, APP_API_TOKEN for an app; None: no token):
        (status, body). ``pod``: which of the app's pods (else one of them)."""
        where = f"pod/{pod}" if pod else self.workload(app)
        out = self.kubectl(
            "exec", where, "-c", app, "--", "python", "-c", HTTP_CALL, method, url, body, token or "none"
        )
        answer = json.loads(out.strip().splitlines()[-1])
        return answer["status"], answer["body"]

    def app_stats(self, app: str, pod: str | None = None) -> dict:
        """An app's /stats (of one of its pods, or of ``pod``), asked from inside its container with its app token."""
        status, body = self.http_from(app, "GET", "http://127.0.0.1:8080/stats", token="APP_API_TOKEN", pod=pod)
        assert status == 200, (app, status, body)
        return json.loads(body)


# run by python in an app's container: one HTTP call, printed as {"status": ..., "body": ...}; the token the
# call names (DAPR_API_TOKEN, for the sidecar; APP_API_TOKEN, for an app) is sent from the container's
# environment, "none" sends none
HTTP_CALL = """
import json, os, sys, urllib.request, urllib.error
method, url, body, token = sys.argv[1], sys.argv[2], sys.argv[3].encode(), sys.argv[4]
headers = {"content-type": "application/json"}
if token != "none":
    headers["dapr-api-token"] = os.environ[token]
request = urllib.request.Request(url, body or None, headers, method=method)
try:
    with urllib.request.urlopen(request, timeout=10) as answer:
        print(json.dumps({"status": answer.status, "body": answer.read().decode(errors="replace")}))
except urllib.error.HTTPError as error:
    print(json.dumps({"status": error.code, "body": error.read().decode(errors="replace")}))
"""


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
