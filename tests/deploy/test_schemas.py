"""The manifests against the API schemas: Kubernetes (kubernetes-validate, strict) and the CRDs of the
pinned Dapr runtime (from the github.com/dapr/dapr module at dapr.version). Kustomize output of the base and of every overlay, the local
components/, and the checks' own ability to refuse a wrong resource."""

from __future__ import annotations

import copy
import subprocess

import pytest

from tests.deploy.support import (
    DAPR_CRDS,
    DAPR_MODULE,
    DEPLOY,
    ROOT,
    by_kind,
    dapr_schemas,
    load_documents,
    validate,
    yaml_files,
)


def test_base_renders_to_valid_kubernetes_and_dapr_resources(base):
    assert validate(base) == []


def test_dev_overlay_renders_to_valid_kubernetes_and_dapr_resources(dev):
    assert validate(dev) == []


def test_local_overlay_renders_to_valid_kubernetes_and_dapr_resources(dev_deploy):
    from tests.deploy.support import kustomize_build

    assert validate(kustomize_build(dev_deploy / "overlays" / "local")) == []


def test_every_overlay_is_checked():
    overlays = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if (p / "kustomization.yaml").exists())
    # monitoring: validated against the Prometheus Operator CRDs too, in test_monitoring.py; keda: against
    # KEDA's CRDs, in test_keda.py
    assert overlays == ["dev", "keda", "local", "monitoring"], (
        "a new overlay needs its rendering validated here as well"
    )


@pytest.mark.parametrize("path", yaml_files(ROOT / "components"), ids=lambda p: p.name)
def test_local_components_pass_the_dapr_crd_schemas(path):
    resources = load_documents(path)
    assert resources, f"{path} holds no resource"
    assert validate(resources) == []


def test_the_dapr_crds_are_those_of_the_pinned_runtime_and_serve_every_kind_used():
    assert f"module {DAPR_MODULE}" in (DAPR_CRDS / "SOURCE").read_text().splitlines()
    served = {kind for (_, _, kind) in dapr_schemas()}
    assert {"Component", "Subscription", "Resiliency", "Configuration", "HTTPEndpoint"} <= served
    used = {
        r["kind"]
        for path in yaml_files(DEPLOY) + yaml_files(ROOT / "components")
        for r in load_documents(path)
        if str(r.get("apiVersion", "")).startswith("dapr.io/")
    }
    assert used <= served, f"kinds without a CRD in {DAPR_MODULE}: {sorted(used - served)}"
    copies = subprocess.run(
        ["git", "grep", "-l", "-E", "^kind: CustomResourceDefinition"], cwd=ROOT, capture_output=True, text=True
    )
    assert copies.stdout == "", (
        "the CRDs are read from the Dapr module of the pinned version, not copied into the repository"
    )


def _mutations():
    """(what, resource kind/name, change) that each make a valid resource invalid."""

    def component_typo(r):
        r["spec"]["metadata"][0]["secretKeyRefs"] = r["spec"]["metadata"][0].pop("value")

    def subscription_without_routes(r):
        del r["spec"]["routes"]

    def subscription_v1_route_in_v2(r):
        r["spec"]["route"] = r["spec"].pop("routes")["default"]

    def unknown_dapr_version(r):
        r["apiVersion"] = "dapr.io/v9"

    def resiliency_wrong_type(r):
        r["spec"]["policies"]["retries"]["delivery"]["maxRetries"] = "ten"

    def top_level_typo(r):
        r["scope"] = r.pop("scopes")

    def replicas_not_a_number(r):
        r["spec"]["replicas"] = "one"

    def probe_typo(r):
        container = r["spec"]["template"]["spec"]["containers"][0]
        container["livenesProbe"] = container.pop("livenessProbe")

    def service_port_missing(r):
        del r["spec"]["ports"][0]["port"]

    return [
        ("Component", "redis-stream", component_typo),
        ("Subscription", "tenants", subscription_without_routes),
        ("Subscription", "tenants", subscription_v1_route_in_v2),
        ("Component", "rabbit-stream", unknown_dapr_version),
        ("Resiliency", "power-usage", resiliency_wrong_type),
        ("Component", "rabbit-stream", top_level_typo),
        ("Deployment", "billable-proc", replicas_not_a_number),
        ("StatefulSet", "join-tenants-poweruse", probe_typo),
        ("Service", "redis", service_port_missing),
    ]


@pytest.mark.parametrize(("kind", "name", "mutate"), _mutations(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_validation_refuses_a_broken_resource(base, kind, name, mutate):
    resource = copy.deepcopy(by_kind(base, kind)[name])
    assert validate([resource]) == []
    mutate(resource)
    problems = validate([resource])
    assert len(problems) >= 1
    assert all(p.startswith(f"{kind}/{name}: ") for p in problems)


def test_the_validation_refuses_a_duplicate(base):
    component = by_kind(base, "Component")["redis-stream"]
    assert validate([component, copy.deepcopy(component)]) == ["Component/redis-stream: defined twice"]
