"""Secure as deployed, on the real cluster: what daprd, the apps and the brokers refuse (deploy/base).

The local cluster's network plugin (the bridge CNI plugin) does not enforce NetworkPolicies: the policies
are applied and accepted here, and what they would stop is stopped a second time by the app token, which
these tests check. Their effect is not tested on this cluster.
"""

from __future__ import annotations

import json

import pytest

from tests.k8s.cluster import APPS, Cluster, poll

JOINER = "join-tenants-poweruse"
DENIED = "access control policy has denied access"
SIDECAR = "http://127.0.0.1:3500"


def pod_ips(cluster: Cluster, app: str) -> list[str]:
    return [pod["status"]["podIP"] for pod in cluster.live_pods(app)]


def test_billable_proc_takes_the_joiners_post_and_refuses_every_other_caller(pipeline: Cluster):
    invoke = f"{SIDECAR}/v1.0/invoke/billable-proc/method/billables"
    status, body = pipeline.http_from(JOINER, "POST", invoke, "not json")
    assert status == 400 and DENIED not in body, (status, body)  # reached the app, which billed nothing
    for caller in ("tenants-gen", "poweruse-gen"):
        status, body = pipeline.http_from(caller, "POST", invoke, "not json")
        assert status == 403 and DENIED in body, (caller, status, body)
    status, body = pipeline.http_from(JOINER, "GET", invoke)
    assert status == 403 and DENIED in body, (status, body)


@pytest.mark.parametrize("target", [JOINER, "tenants-gen", "poweruse-gen"])
def test_nothing_may_invoke_the_joiner_or_the_generators(pipeline: Cluster, target: str):
    caller = "billable-proc"
    status, body = pipeline.http_from(caller, "POST", f"{SIDECAR}/v1.0/invoke/{target}/method/poweruse", "[]")
    assert status == 403 and DENIED in body, (target, status, body)


def test_billable_proc_may_get_the_joiners_stats_and_nothing_else_of_it(pipeline: Cluster):
    """Its dashboard shows the joiner's /stats: the one call accessControl allows billable-proc."""
    stats = f"{SIDECAR}/v1.0/invoke/{JOINER}/method/stats"
    status, body = pipeline.http_from("billable-proc", "GET", stats)
    assert status == 200 and "windows_closed" in body, (status, body)
    for verb, method in (("POST", "stats"), ("POST", "deadletters/resend"), ("GET", "deadletters")):
        url = f"{SIDECAR}/v1.0/invoke/{JOINER}/method/{method}"
        status, body = pipeline.http_from("billable-proc", verb, url, "{}" if verb == "POST" else "")
        assert status == 403 and DENIED in body, (verb, method, status, body)


def test_a_publish_outside_the_apps_topic_scopes_is_refused(pipeline: Cluster):
    for publisher, pubsub, topic, expected in (
        ("tenants-gen", "redis-stream", "billables", 403),
        ("tenants-gen", "redis-stream", "tenants-deadletter", 403),
        (JOINER, "redis-stream", "tenants", 403),
        (JOINER, "rabbit-stream", "poweruse", 403),
        ("tenants-gen", "rabbit-stream", "poweruse", 404),  # the component is not scoped to it
    ):
        status, body = pipeline.http_from(publisher, "POST", f"{SIDECAR}/v1.0/publish/{pubsub}/{topic}", "{}")
        assert status == expected, (publisher, pubsub, topic, status, body)


def test_the_apps_refuse_what_does_not_come_through_their_sidecar(pipeline: Cluster):
    """A pod that POSTs rows to billable-proc or readings to the joiner by pod IP gets 401."""
    for target, route in (
        ("billable-proc", "/billables"),
        (JOINER, "/poweruse"),
        (JOINER, "/stats"),
        ("tenants-gen", "/stats"),
    ):
        for ip in pod_ips(pipeline, target):  # each of the joiner's replicas
            status, body = pipeline.http_from(
                "poweruse-gen", "POST" if route != "/stats" else "GET", f"http://{ip}:8080{route}", "[]", token=None
            )
            assert status == 401, (target, ip, route, status, body)
    [billable_proc] = pod_ips(pipeline, "billable-proc")
    status, _ = pipeline.http_from("poweruse-gen", "GET", f"http://{billable_proc}:8080/healthz", token=None)
    assert status == 200  # the probes' route stays open


def test_every_sidecar_api_needs_the_dapr_token_and_no_secret_can_be_read(pipeline: Cluster):
    for app in APPS:
        status, _ = pipeline.http_from(app, "GET", f"{SIDECAR}/v1.0/metadata", token=None)
        assert status == 401, app
        # no secret store in the sidecar at all (dapr.io/disable-builtin-k8s-secret-store)
        status, body = pipeline.http_from(app, "GET", f"{SIDECAR}/v1.0/secrets/kubernetes/redis-credentials")
        assert (status, json.loads(body)["errorCode"]) == (500, "ERR_SECRET_STORES_NOT_CONFIGURED"), (app, status, body)


def test_app_pods_mount_no_service_account_token(pipeline: Cluster):
    for app, pod in pipeline.every_app_pod():
        assert pod["spec"]["automountServiceAccountToken"] is False
        [container] = [c for c in pod["spec"]["containers"] if c["name"] == app]
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert not any("serviceaccount" in path for path in mounts), (app, mounts)


def test_the_brokers_users_have_what_the_components_need_and_no_more(pipeline: Cluster):
    # Redis refused none of the components' commands (its users are those of redis-users.acl), once
    # windows went through (the joiner's journal and checkpoints, billable-proc's record of billed calls)
    poll(lambda: "Data received" in pipeline.logs("billable-proc"), 120, "rows billed")
    refusals = pipeline.kubectl("exec", "statefulset/redis", "--", "redis-cli", "ACL", "LOG")
    assert refusals.strip() == "", refusals
    users = pipeline.kubectl("exec", "statefulset/redis", "--", "redis-cli", "ACL", "USERS").split()
    assert users == ["default", "pubsub", "state"]
    # RabbitMQ: one user, no administrator tag, rights on its vhost only; no guest
    listed = pipeline.kubectl("exec", "statefulset/rabbitmq", "--", "rabbitmqctl", "-q", "list_users")
    assert [line.split() for line in listed.strip().splitlines()[-1:]] == [["power-usage", "[]"]], listed
    vhosts = pipeline.kubectl("exec", "statefulset/rabbitmq", "--", "rabbitmqctl", "-q", "list_vhosts").split()
    assert "power-usage" in vhosts
    rights = pipeline.kubectl(
        "exec", "statefulset/rabbitmq", "--", "rabbitmqctl", "-q", "list_user_permissions", "power-usage"
    )
    assert [
        line.split()[0] for line in rights.strip().splitlines() if line.strip() and not line.startswith("vhost")
    ] == ["power-usage"], rights


def test_the_network_policies_are_applied(pipeline: Cluster):
    names = {p["metadata"]["name"] for p in pipeline.json("get", "networkpolicies")["items"]}
    assert names == {"power-usage-default-deny", *APPS, "redis", "rabbitmq"}
