"""What the monitoring tests need: the pinned promtool, the Prometheus Operator CRD schemas, the metric
names the services and daprd export, and the metric names a PromQL expression reads.

* promtool is built from ``github.com/prometheus/prometheus/cmd/promtool`` at ``deploy/promtool.version``
  by ``deploy/install-promtool.sh`` into the directory of kustomize (``~/.cache/power-usage/bin``).
* The CRDs are ``example/prometheus-operator-crd/`` of the ``github.com/prometheus-operator/prometheus-operator``
  module at ``deploy/prometheus-operator.version`` (``scripts/install-prometheus-operator-crds.sh``).
* The services' metrics are the tables of ``docs/metrics.md``, which ``tests/contract/test_metrics.py``
  compares with what each service exposes; daprd's are listed here with the name of the OpenCensus view
  each comes from, which the test finds in the daprd source at the pinned Dapr version.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.deploy.support import DEPLOY, ROOT, closed

MONITORING = DEPLOY / "overlays" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "power-usage.json"
RULES = MONITORING / "prometheus-rules.yaml"
RULES_TEST = MONITORING / "prometheus" / "rules-test.yml"
APP_SCRAPE_CONFIG = MONITORING / "prometheus" / "app-scrape-config.yml"
OPERATOR_GROUP = "monitoring.coreos.com"
OPERATOR_VERSION = (DEPLOY / "prometheus-operator.version").read_text().strip()
OPERATOR_MODULE = f"github.com/prometheus-operator/prometheus-operator@{OPERATOR_VERSION}"
OPERATOR_CRDS = Path(
    os.environ.get(
        "PROMETHEUS_OPERATOR_CRDS_DIR",
        Path.home() / ".cache" / "power-usage" / "prometheus-operator-crds" / OPERATOR_VERSION,
    )
)

# daprd's metrics the dashboard reads: Prometheus name -> (kind, OpenCensus view in pkg/diagnostics of
# github.com/dapr/dapr, exported as dapr_<view with "/" as "_">)
DAPR_METRICS = {
    "dapr_component_pubsub_ingress_count": ("counter", "component/pubsub_ingress/count"),
    "dapr_component_pubsub_ingress_bulk_event_count": ("counter", "component/pubsub_ingress/bulk/event_count"),
    "dapr_component_pubsub_egress_count": ("counter", "component/pubsub_egress/count"),
    "dapr_runtime_service_invocation_req_sent_total": ("counter", "runtime/service_invocation/req_sent_total"),
    "dapr_runtime_service_invocation_res_recv_total": ("counter", "runtime/service_invocation/res_recv_total"),
    "dapr_runtime_service_invocation_res_recv_latency_ms": (
        "histogram",
        "runtime/service_invocation/res_recv_latency_ms",
    ),
}
# Prometheus' own series for each target
PROMETHEUS_METRICS = {"up": "gauge"}


# ---- promtool


def promtool_path() -> Path:
    version = (DEPLOY / "promtool.version").read_text().strip()
    bin_dir = Path(os.environ.get("KUSTOMIZE_BIN_DIR", Path.home() / ".cache" / "power-usage" / "bin"))
    path = bin_dir / "promtool"
    hint = "`make setup-deploy` installs it (deploy/install-promtool.sh)"
    assert os.access(path, os.X_OK), f"promtool {version} not found at {path}: {hint}"
    built = subprocess.run(["go", "version", "-m", str(path)], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"^\s*mod\s+github\.com/prometheus/prometheus\s+(\S+)", built, re.M)
    assert found and found.group(1) == version, (
        f"{path} was built from prometheus {found and found.group(1)!r}, deploy/promtool.version pins {version}: {hint}"
    )
    return path


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool_path()), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


# ---- Prometheus Operator CRDs


def validate_operator(resource: dict[str, Any]) -> list[str]:
    """Problems of a monitoring.coreos.com resource against its CRD's schema (closed as support.closed does)."""
    group, _, version = str(resource.get("apiVersion", "")).partition("/")
    schema = operator_schemas().get((group, version, resource.get("kind")))
    if schema is None:
        return [
            f"no Prometheus Operator CRD in {OPERATOR_CRDS} serves {resource.get('apiVersion')} {resource.get('kind')}"
        ]
    problems = []
    for error in sorted(jsonschema.Draft7Validator(schema).iter_errors(resource), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(part) for part in error.absolute_path)
        problems.append(f"{path or '(resource)'}: {error.message}")
    return problems


class _CrdLoader(yaml.SafeLoader):
    """PyYAML reads a bare ``=`` as YAML 1.1's "value" type, which it cannot build; the CRDs have it in enums
    (a relabeling's action ``=``, a matcher's type): a string, as for the API server (YAML 1.2)."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


@functools.cache
def operator_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    hint = "`make setup-deploy` installs them (scripts/install-prometheus-operator-crds.sh)"
    assert (OPERATOR_CRDS / "SOURCE").is_file(), f"the Prometheus Operator CRDs are not in {OPERATOR_CRDS}: {hint}"
    assert f"module {OPERATOR_MODULE}" in (OPERATOR_CRDS / "SOURCE").read_text().splitlines(), (
        f"{OPERATOR_CRDS} does not hold the CRDs of {OPERATOR_MODULE}: {hint}"
    )
    schemas = {}
    for path in sorted(OPERATOR_CRDS.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=_CrdLoader):  # noqa: S506 - a SafeLoader
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    schemas[(spec["group"], version["name"], spec["names"]["kind"])] = closed(
                        version["schema"]["openAPIV3Schema"]
                    )
    return schemas


# ---- metric names


@functools.cache
def service_metrics() -> dict[str, str]:
    """name -> type (counter, gauge, histogram) of every metric the tables of docs/metrics.md list."""
    rows = re.findall(
        r"^\| `([a-z_:][a-z0-9_:]*)` \| (counter|gauge|histogram) \|", (ROOT / "docs" / "metrics.md").read_text(), re.M
    )
    assert rows, "docs/metrics.md lists no metric"
    return dict(rows)


def known_metrics() -> dict[str, str]:
    """Every series name the dashboard and the rules may read -> counter, gauge, or bucket/sum/count."""
    families = service_metrics() | {name: kind for name, (kind, _) in DAPR_METRICS.items()} | PROMETHEUS_METRICS
    names: dict[str, str] = {}
    for name, kind in families.items():
        if kind == "histogram":
            names |= {f"{name}_bucket": "bucket", f"{name}_sum": "counter", f"{name}_count": "counter"}
        else:
            names[name] = kind
    return names


KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")
_RATED = re.compile(r"\b(?:rate|irate|increase)\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def _bare(expr: str) -> str:
    """``expr`` without strings, label matchers, ranges and grouping clauses: what is left of its names are
    metric names, function names (before a parenthesis) and keywords."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return _GROUPING.sub("", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    return {name for name in _IDENTIFIER.findall(_bare(expr)) if name not in KEYWORDS and not name.startswith("__")}


def rated_names(expr: str) -> set[str]:
    """The metric names ``expr`` takes the rate or increase of."""
    return set(_RATED.findall(_bare(expr)))


# ---- the dashboard


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel but rows, also those inside a collapsed row."""
    panels = []
    for panel in dashboard()["panels"]:
        panels += panel.get("panels") or [] if panel["type"] == "row" else [panel]
    return panels


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard's panels."""
    return [(panel["title"], target["expr"]) for panel in dashboard_panels() for target in panel["targets"]]


# what Grafana substitutes before a query reaches Prometheus, as it would
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$namespace": "default"}


def as_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the test does not know in {expr!r}"
    return expr
