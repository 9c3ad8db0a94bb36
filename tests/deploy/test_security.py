"""deploy/base as a security review reads it: who may reach whom under its NetworkPolicies, what each app
pod carries (tokens, no service-account token), what its Configuration allows. The same points are checked
on the running cluster by tests/k8s/test_security.py (all but the policies' effect, which the local
cluster's network plugin does not enforce)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.support import annotations, by_kind, container, dapr_apps

APPS = ("billable-proc", "join-tenants-poweruse", "tenants-gen", "poweruse-gen")
PODS = (*APPS, "redis", "rabbitmq")
# every connection the pipeline makes between its pods, and no other: (from, to, port)
NEEDED = {
    ("join-tenants-poweruse", "billable-proc", 50002),
    ("billable-proc", "join-tenants-poweruse", 50002),  # the dashboard's GET of the joiner's /stats
    ("join-tenants-poweruse", "redis", 6379),
    ("billable-proc", "redis", 6379),
    ("tenants-gen", "redis", 6379),
    ("join-tenants-poweruse", "rabbitmq", 5672),
    ("poweruse-gen", "rabbitmq", 5672),
}
PORTS = {8080, 3500, 3501, 50001, 50002, 9090, 6379, 5672}  # apps, daprd's APIs, internal gRPC, metrics, brokers


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _allows(rules: list[dict], direction: str, peer: str, port: int) -> bool:
    for rule in rules:
        peers = rule.get(direction)
        ports = rule.get("ports")
        peer_ok = peers is None or any(
            "namespaceSelector" not in entry and _selects(entry.get("podSelector") or {}, {"app": peer})
            for entry in peers
        )
        port_ok = ports is None or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)
        if peer_ok and port_ok:
            return True
    return False


def reachable(policies: list[dict], source: str, target: str, port: int) -> bool:
    """Whether NetworkPolicy semantics let ``source``'s pod open ``target``'s ``port`` in one namespace."""

    def side(pod: str, kind: str, direction: str, peer: str) -> bool:
        selecting = [
            p
            for p in policies
            if _selects(p["spec"]["podSelector"], {"app": pod}) and kind in p["spec"].get("policyTypes", [])
        ]
        if not selecting:
            return True  # not isolated
        return any(_allows(p["spec"].get(kind.lower()) or [], direction, peer, port) for p in selecting)

    return side(source, "Egress", "to", target) and side(target, "Ingress", "from", source)


def test_the_network_policies_let_through_exactly_what_the_pipeline_needs(base):
    policies = list(by_kind(base, "NetworkPolicy").values())
    allowed = {(s, t, port) for s in PODS for t in PODS if s != t for port in PORTS if reachable(policies, s, t, port)}
    assert allowed == NEEDED


def test_every_pod_of_the_pipeline_is_isolated_both_ways(base):
    policies = list(by_kind(base, "NetworkPolicy").values())
    for pod in PODS:
        kinds = {
            kind
            for p in policies
            if _selects(p["spec"]["podSelector"], {"app": pod})
            for kind in p["spec"]["policyTypes"]
        }
        assert kinds == {"Ingress", "Egress"}, pod
    # a pod from outside the pipeline (any other app label) reaches nothing of it
    assert not any(reachable(policies, "intruder", target, port) for target in PODS for port in PORTS)


@pytest.mark.parametrize("app_id", APPS)
def test_each_app_pod_requires_the_tokens_and_mounts_no_service_account_token(base, app_id):
    deployment = dapr_apps(base)[app_id]
    assert annotations(deployment)["dapr.io/api-token-secret"] == "dapr-api-token"
    assert annotations(deployment)["dapr.io/app-token-secret"] == "app-api-token"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in container(deployment)["env"]
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert refs["DAPR_API_TOKEN"] == {"name": "dapr-api-token", "key": "token"}
    assert refs["APP_API_TOKEN"] == {"name": "app-api-token", "key": "token"}


def test_the_configuration_allows_only_the_joiners_post_and_billable_procs_get_of_stats(base):
    spec = by_kind(base, "Configuration")["power-usage"]["spec"]
    control = spec["accessControl"]
    assert control["defaultAction"] == "deny"
    assert control["policies"] == [
        {
            "appId": "billable-proc",
            "defaultAction": "deny",
            "trustDomain": "public",
            "namespace": "default",
            "operations": [{"name": "/stats", "httpVerb": ["GET"], "action": "allow"}],
        },
        {
            "appId": "join-tenants-poweruse",
            "defaultAction": "deny",
            "trustDomain": "public",
            "namespace": "default",
            "operations": [{"name": "/billables", "httpVerb": ["POST"], "action": "allow"}],
        },
    ]
    assert spec["secrets"]["scopes"] == [{"storeName": "kubernetes", "defaultAccess": "deny"}]


def test_a_migrated_pipeline_is_secured_as_deploy_is(migrated_power_usage, base):
    migrated = migrated_power_usage.resources
    [configuration] = by_kind(migrated, "Configuration").values()
    assert (
        configuration["spec"]["accessControl"] == by_kind(base, "Configuration")["power-usage"]["spec"]["accessControl"]
    )
    for app_id, deployment in dapr_apps(migrated).items():
        ours = dapr_apps(base)[app_id]
        assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False, app_id
        tokens = [v for v in container(deployment)["env"] if v["name"] in ("DAPR_API_TOKEN", "APP_API_TOKEN")]
        assert tokens == [v for v in container(ours)["env"] if v["name"] in ("DAPR_API_TOKEN", "APP_API_TOKEN")], app_id
    assert any("kubectl create secret generic dapr-api-token" in note for note in migrated_power_usage.notes)
