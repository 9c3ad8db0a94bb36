"""deploy/overlays/monitoring, checked for real: the alert rules by promtool (check rules, and unit tests
where each alert fires on failing series and stays silent on healthy ones), every query of the Grafana
dashboard parsed by promtool, the apps' scrape config by promtool check config, every metric they read one
the services (docs/metrics.md) or daprd (its source at the pinned Dapr) export, the overlay rendered by
kustomize and its objects validated against the Kubernetes and the Prometheus Operator CRD schemas."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.monitoring import (
    APP_SCRAPE_CONFIG,
    DAPR_METRICS,
    DASHBOARD,
    MONITORING,
    OPERATOR_GROUP,
    RULES,
    RULES_TEST,
    as_promql,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    known_metrics,
    metric_names,
    promtool,
    rated_names,
    validate_operator,
)
from tests.deploy.support import DAPR_MODULE, DEPLOY, annotations, by_kind, dapr_apps, kustomize_build, validate
from tests.deploy.test_security import NEEDED, PODS, PORTS, reachable

APPS = ("billable-proc", "join-tenants-poweruse", "tenants-gen", "poweruse-gen")
ROWS = ["Billing flow", "Lag", "Drops", "Windows", "Generators", "Dapr sidecars"]


@pytest.fixture(scope="module")
def monitoring() -> list[dict[str, Any]]:
    return kustomize_build(MONITORING)


def rule_groups() -> dict[str, Any]:
    [rule] = yaml.safe_load_all(RULES.read_text())
    return rule["spec"]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in rule_groups()["groups"] for r in group["rules"] if "alert" in r}


def write_rules(directory: Path, groups: dict[str, Any]) -> Path:
    """The PrometheusRule's spec as the rule file Prometheus gets from the operator, and the unit tests beside it."""
    (directory / "rules.yml").write_text(yaml.safe_dump(groups, sort_keys=False))
    shutil.copy(RULES_TEST, directory / "rules-test.yml")
    return directory / "rules.yml"


def check(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"promtool failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


# ---- the alert rules


def test_the_alert_rules_pass_promtool_check_rules(tmp_path):
    rules = write_rules(tmp_path, rule_groups())
    output = check(promtool("check", "rules", "--lint=all", "--lint-fatal", rules))
    assert f"SUCCESS: {len(alerts())} rules found" in output


def test_the_alert_rules_pass_their_unit_tests(tmp_path):
    write_rules(tmp_path, rule_groups())
    assert "SUCCESS" in check(promtool("test", "rules", "rules-test.yml", cwd=tmp_path))


def test_every_alert_is_unit_tested_firing_and_silent():
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        healthy = [s for s in case["input_series"] if 'namespace="healthy"' in s["series"]]
        assert healthy, f"{case['name']}: no healthy series to stay silent on"
        for expectation in case["alert_rule_test"]:
            fired = expectation["exp_alerts"]
            assert all(alert["exp_labels"].get("namespace") != "healthy" for alert in fired), case["name"]
            tested.setdefault(expectation["alertname"], set()).add(bool(fired))
    assert tested == {name: {True, False} for name in alerts()}


@pytest.mark.parametrize(
    ("alert", "threshold", "broken"),
    [
        ("PowerUsageDeliveriesFailing", "> 0", "> 1"),
        ("PowerUsageNoWindowClosed", "== 0", "< 0"),
    ],
)
def test_the_unit_tests_fail_on_a_broken_rule(tmp_path, alert, threshold, broken):
    """The unit tests are not a formality: a rule whose threshold is off fails them."""
    groups = copy.deepcopy(rule_groups())
    [rule] = [r for group in groups["groups"] for r in group["rules"] if r.get("alert") == alert]
    assert rule["expr"].rstrip().endswith(threshold)
    rule["expr"] = rule["expr"].rstrip().removesuffix(threshold) + broken
    write_rules(tmp_path, groups)
    done = promtool("test", "rules", "rules-test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert alert in done.stdout + done.stderr


def test_the_stalled_window_alert_looks_back_three_windows_of_the_joiner():
    """The documented parameter: the range of PowerUsageNoWindowClosed is 3 times the joiner's window."""
    [joiner] = yaml.safe_load_all((DEPLOY / "base" / "apps" / "joiner.yaml").read_text())
    window = joiner["spec"]["window"]
    assert re.fullmatch(r"\d+s", window), window
    [lookback] = re.findall(r"\[(\d+)s\]", alerts()["PowerUsageNoWindowClosed"]["expr"])
    assert int(lookback) == 3 * int(window[:-1])
    assert f"3 windows of {window}" in alerts()["PowerUsageNoWindowClosed"]["annotations"]["description"]


def test_every_alert_has_a_severity_a_summary_and_a_description():
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


# ---- the dashboard


def test_every_dashboard_query_parses_as_promql(tmp_path):
    """Each panel's query, its Grafana variables substituted, as a recording rule checked by promtool."""
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(expr)} for i, (_, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(exprs)} rules found" in check(promtool("check", "rules", path))


def test_the_query_check_refuses_a_broken_query(tmp_path):
    path = tmp_path / "broken.yml"
    broken = {"record": "dashboard:broken", "expr": "sum by (stream (rate(joiner_late_total[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [broken]}]}))
    done = promtool("check", "rules", path)
    assert done.returncode != 0 and "dashboard:broken" not in done.stdout


def test_the_dashboard_has_its_rows_and_imports_anywhere():
    board = dashboard()
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows == ROWS
    [source] = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for panel in dashboard_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert "__inputs" not in board  # nothing to map at import: the variable picks the data source


def test_the_dashboard_shows_what_the_pipeline_is_watched_by():
    used = set().union(*(metric_names(expr) for _, expr in dashboard_exprs()))
    wanted = {
        "billable_proc_kwh_total",
        "joiner_rows_emitted_total",
        "billable_proc_window_delay_seconds_bucket",
        "joiner_delivery_latency_seconds_bucket",
        "joiner_dropped_total",
        "joiner_late_total",
        "joiner_dead_lettered_total",
        "joiner_duplicates_total",
        "joiner_windows_closed_total",
        "joiner_buffered_bytes",
        "message_gen_published_total",
        "message_gen_publish_failures_total",
        "dapr_component_pubsub_ingress_count",
        "dapr_runtime_service_invocation_req_sent_total",
    }
    assert wanted <= used, sorted(wanted - used)


def test_the_dashboard_config_map_is_the_dashboard_for_grafanas_sidecar(monitoring):
    config_map = by_kind(monitoring, "ConfigMap")["power-usage-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["power-usage.json"]) == json.loads(DASHBOARD.read_text())


# ---- metric names


def _queries() -> list[tuple[str, str]]:
    """(where, expr) of every PromQL expression: the dashboard's queries, its variables', the rules'."""
    queries = [(f"panel {title!r}", expr) for title, expr in dashboard_exprs()]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            [metric] = re.findall(r"label_values\((\w+),", variable["definition"])
            queries.append((f"variable {variable['name']!r}", metric))
    queries += [(f"alert {name}", rule["expr"]) for name, rule in alerts().items()]
    return queries


def test_every_metric_read_is_one_the_services_or_daprd_export():
    known = known_metrics()
    unknown = {f"{where}: {name}" for where, expr in _queries() for name in metric_names(expr) if name not in known}
    assert unknown == set()


def test_counters_are_read_as_rates_and_gauges_as_they_are():
    known = known_metrics()
    for where, expr in _queries():
        names, rated = metric_names(expr), rated_names(expr)
        for name in names:
            if known.get(name) in ("counter", "bucket") and where.startswith(("panel", "alert")):
                assert name in rated, f"{where}: {name} is a counter, read without rate() or increase()"
            if known.get(name) == "gauge":
                assert name not in rated, f"{where}: {name} is a gauge, read with rate() or increase()"


def test_the_metric_name_extraction():
    expr = (
        'histogram_quantile(0.99, sum by (le, target) (rate(joiner_delivery_latency_seconds_bucket{stream="a b"}[5m])))'
        " / on (namespace) group_left sum without (pod) (joiner_outbox offset 5m) > bool 1e3 and up"
    )
    assert metric_names(expr) == {"joiner_delivery_latency_seconds_bucket", "joiner_outbox", "up"}
    assert rated_names(expr) == {"joiner_delivery_latency_seconds_bucket"}


def test_the_dapr_metrics_are_those_of_the_pinned_daprd():
    """Each daprd metric read is the Prometheus name of an OpenCensus view daprd's source registers."""
    done = subprocess.run(["go", "mod", "download", "-json", DAPR_MODULE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"go mod download {DAPR_MODULE} failed:\n{done.stdout}{done.stderr}"
    source = Path(json.loads(done.stdout)["Dir"]) / "pkg" / "diagnostics"
    code = "".join(p.read_text() for p in sorted(source.glob("*.go")) if not p.name.endswith("_test.go"))
    for name, (kind, view) in DAPR_METRICS.items():
        assert name == "dapr_" + view.replace("/", "_"), name
        assert f'"{view}"' in code, f"{view} is not a metric of {DAPR_MODULE}"
        aggregation = "latencyDistribution" if kind == "histogram" else "view.Count()"
        assert re.search(
            rf"NewMeasureView\([^\n]*\b{aggregation_measure(code, view)}\b[^\n]*{re.escape(aggregation)}", code
        ), f"{view}: not a {kind} in {DAPR_MODULE}"


def aggregation_measure(code: str, view: str) -> str:
    """The Go field holding the measure named ``view`` (``pubsubIngressCount: stats.Int64("component/...``)."""
    [field] = re.findall(rf"(\w+):\s*stats\.(?:Int64|Float64)\(\s*\"{re.escape(view)}\"", code)
    return field


# ---- the overlay and the base


def test_the_overlay_renders_to_valid_kubernetes_and_prometheus_operator_resources(monitoring):
    kinds = {(r["kind"], r["metadata"]["name"]) for r in monitoring}
    assert kinds == {
        ("PodMonitor", "power-usage-daprd"),
        ("PrometheusRule", "power-usage"),
        ("NetworkPolicy", "power-usage-prometheus-scrape"),
        ("ConfigMap", "power-usage-dashboard"),
        ("Secret", "power-usage-scrape-config"),
    }
    operator = [r for r in monitoring if r["apiVersion"].partition("/")[0] == OPERATOR_GROUP]
    assert [p for r in operator for p in validate_operator(r)] == []
    assert validate([r for r in monitoring if r not in operator]) == []


def test_the_operator_schema_check_refuses_a_broken_resource(monitoring):
    monitor = copy.deepcopy(by_kind(monitoring, "PodMonitor")["power-usage-daprd"])
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = monitor["spec"]["podMetricsEndpoints"][0].pop("interval")
    assert any("intervall" in p for p in validate_operator(monitor))
    rule = copy.deepcopy(by_kind(monitoring, "PrometheusRule")["power-usage"])
    rule["spec"]["groups"][0]["rules"][0]["for"] = 5
    assert validate_operator(rule) != []


def test_each_app_pod_is_annotated_for_its_scrapes(base):
    for app_id in APPS:
        notes = annotations(dapr_apps(base)[app_id])
        assert notes["prometheus.io/scrape"] == "true", app_id
        assert notes["prometheus.io/port"] == notes["dapr.io/app-port"], app_id
        assert notes["prometheus.io/path"] == "/metrics", app_id
        assert (notes["dapr.io/enable-metrics"], notes["dapr.io/metrics-port"]) == ("true", "9090"), app_id


def test_the_pod_monitor_scrapes_the_sidecars_of_the_apps_only(monitoring, base):
    monitor = by_kind(monitoring, "PodMonitor")["power-usage-daprd"]
    [expression] = monitor["spec"]["selector"]["matchExpressions"]
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in dapr_apps(base).values()}
    assert (expression["key"], expression["operator"]) == ("app", "In")
    assert sorted(expression["values"]) == sorted(label["app"] for label in labels.values())
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "dapr-metrics"  # the daprd container's port name (dapr/dapr pkg/injector)


def test_the_apps_scrape_config_passes_promtool_and_sends_the_app_token(tmp_path):
    jobs = yaml.safe_load(APP_SCRAPE_CONFIG.read_text())
    [job] = jobs
    [header] = job["http_headers"]["dapr-api-token"]["files"]
    assert header == "/etc/prometheus/secrets/app-api-token/token"  # spec.secrets: [app-api-token]
    assert "values" not in job["http_headers"]["dapr-api-token"]  # never the token itself
    # promtool reads the header file: point it at a stand-in
    token = tmp_path / "token"
    token.write_text("test-token\n")
    job = copy.deepcopy(job)
    job["http_headers"]["dapr-api-token"]["files"] = [str(token)]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    check(promtool("check", "config", config))
    keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keep[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "true"
    assert keep[("__meta_kubernetes_pod_container_port_name",)] == "http"


def test_the_overlay_lets_prometheus_scrape_the_apps_and_nothing_more(monitoring, base):
    [policy] = by_kind(monitoring, "NetworkPolicy").values()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("TCP", 8080), ("TCP", 9090)}
    [peer] = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert sorted(policy["spec"]["podSelector"]["matchExpressions"][0]["values"]) == sorted(APPS)
    # inside the pipeline's namespace, the base's policies with it still allow exactly what it needs
    policies = list(by_kind(base, "NetworkPolicy").values()) + [policy]
    allowed = {(s, t, port) for s in PODS for t in PODS if s != t for port in PORTS if reachable(policies, s, t, port)}
    assert allowed == NEEDED
