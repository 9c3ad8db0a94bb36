"""One pipeline, three descriptions: Kubernetes (deploy/), the local Dapr resources (components/) and the
multi-app run file (dapr.yaml) must agree on app ids, ports, pub/subs, topics and routes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from joiner.config import InvokeTarget, config_from_yaml, load_config
from tests.deploy.support import (
    REPLICA_COPIES,
    REPLICA_ONLY,
    ROOT,
    SERVICES,
    annotations,
    by_kind,
    container,
    dapr_apps,
    env,
    load_documents,
)

LOCAL = [doc for path in sorted((ROOT / "components").glob("*.yaml")) for doc in load_documents(path)]
RUN_FILE = yaml.safe_load((ROOT / "dapr.yaml").read_text())
RUN_APPS = {app["appID"]: app for app in RUN_FILE["apps"]}
# set per environment, compared separately (JOINER_MAX_WINDOW_BYTES is sized to the pod's memory limit)
K8S_ONLY_ENV = {"APP_HOST", "APP_PORT", "JOINER_CONFIG", "JOINER_MAX_WINDOW_BYTES"}


def _pubsubs(resources):
    return {n: c for n, c in by_kind(resources, "Component").items() if c["spec"]["type"].startswith("pubsub.")}


def test_the_same_apps_everywhere(base):
    assert set(dapr_apps(base)) == set(RUN_APPS)


@pytest.mark.parametrize("app_id", sorted(RUN_APPS))
def test_each_app_has_the_same_settings_as_in_dapr_yaml(base, app_id):
    k8s = {k: v for k, v in env(container(dapr_apps(base)[app_id])).items() if k not in K8S_ONLY_ENV}
    local = {k: str(v) for k, v in (RUN_APPS[app_id].get("env") or {}).items() if k not in K8S_ONLY_ENV}
    assert k8s == local  # topics (STREAM_TOPIC), pub/subs (CLUSTER_STREAM), routes (PROC_SERVICE_ROUTE), messages


@pytest.mark.parametrize("app_id", sorted(RUN_APPS))
def test_each_app_runs_the_module_dapr_yaml_runs_and_listens_where_its_image_does(base, app_id):
    deployment = dapr_apps(base)[app_id]
    image = container(deployment)["image"].rpartition(":")[0]
    service = image.rpartition("/")[2]
    assert service in SERVICES
    dockerfile = (ROOT / "services" / service / "Dockerfile").read_text()
    module = RUN_APPS[app_id]["command"][2]  # ["python", "-m", <module>]
    assert f'CMD ["python", "-m", "{module}"]' in dockerfile
    assert Path(RUN_APPS[app_id]["appDirPath"]).name == service
    exposed = re.findall(r"^EXPOSE (\d+)$", dockerfile, re.M)
    assert exposed == [annotations(deployment)["dapr.io/app-port"]]
    assert re.search(rf"APP_PORT={exposed[0]}\b", dockerfile)


def test_the_same_pubsubs_with_the_same_settings(base):
    k8s, local = _pubsubs(base), _pubsubs(LOCAL)
    assert set(k8s) == set(local) | set(REPLICA_COPIES)
    for name, component in k8s.items():
        mine = local[REPLICA_COPIES.get(name, name)]
        copy = name in REPLICA_COPIES
        assert component["spec"]["type"] == mine["spec"]["type"]
        assert component["scopes"] == (["join-tenants-poweruse"] if copy else mine["scopes"])
        k8s_items = {item["name"]: item for item in component["spec"]["metadata"]}
        for item in mine["spec"]["metadata"]:
            assert item["name"] in k8s_items, f"{name}: {item['name']} is set locally, not on Kubernetes"
            if "value" in item and not (item["name"] in REPLICA_ONLY and (copy or name in REPLICA_COPIES.values())):
                assert k8s_items[item["name"]] == item, f"{name}: {item['name']}"
        if copy:
            assert k8s_items["consumerID"]["value"] == "{podName}", name


def test_the_joiner_replicas_subscribe_to_the_tenants_through_their_copy_only(base):
    pubsubs = _pubsubs(base)
    scopes = {item["name"]: item.get("value") for item in pubsubs["redis-stream"]["spec"]["metadata"]}
    assert "join-tenants-poweruse=;" in scopes["subscriptionScopes"]  # not through redis-stream itself
    assert by_kind(base, "Subscription")["tenants"]["spec"]["pubsubname"] == "redis-stream-joiner"


def test_the_same_subscriptions_and_resiliency(base):
    for kind in ("Subscription", "Resiliency"):
        k8s, local = by_kind(base, kind), by_kind(LOCAL, kind)
        assert set(k8s) == set(local), kind
        for name, resource in k8s.items():
            strip = lambda r: {k: v for k, v in r.items() if k != "metadata"}  # kustomize adds labels  # noqa: E731
            theirs = strip(resource)
            pubsub = theirs.get("spec", {}).get("pubsubname")
            if pubsub in REPLICA_COPIES:
                theirs["spec"] = theirs["spec"] | {"pubsubname": REPLICA_COPIES[pubsub]}
            assert theirs == strip(local[name]), f"{kind}/{name}"


def test_the_same_joiner_configuration(base):
    (config_map,) = by_kind(base, "ConfigMap").values()
    on_k8s = config_from_yaml(config_map["data"]["joiner.yaml"], origin="deploy ConfigMap")
    joiner = RUN_APPS["join-tenants-poweruse"]
    local = load_config({"JOINER_CONFIG": str(ROOT / joiner["appDirPath"] / joiner["env"]["JOINER_CONFIG"])})
    assert on_k8s == local


def test_streams_flow_from_the_generators_through_the_subscriptions_to_the_joiner_and_billable_proc(base):
    (config_map,) = by_kind(base, "ConfigMap").values()
    config = config_from_yaml(config_map["data"]["joiner.yaml"])
    apps = dapr_apps(base)
    subscriptions = by_kind(base, "Subscription")
    pubsubs = _pubsubs(base)
    publishers = {}
    for app_id, deployment in apps.items():
        variables = env(container(deployment))
        if "STREAM_TOPIC" in variables:
            publishers[variables["STREAM_TOPIC"]] = (app_id, variables["CLUSTER_STREAM"])
    for source in config.sources:
        (subscription,) = [s for s in subscriptions.values() if s["spec"]["topic"] == source.topic]
        generator, pubsub = publishers[source.topic]
        reads_through = subscription["spec"]["pubsubname"]
        assert REPLICA_COPIES.get(reads_through, reads_through) == pubsub
        assert subscription["spec"]["routes"]["default"] == source.route
        assert subscription["scopes"] == ["join-tenants-poweruse"]
        assert sorted(pubsubs[pubsub]["scopes"]) == sorted([generator, "join-tenants-poweruse"])
    (target,) = config.targets
    assert isinstance(target, InvokeTarget)
    assert target.app_id in apps
    assert env(container(apps[target.app_id]))["PROC_SERVICE_ROUTE"] == target.method


def test_the_joiners_calls_fit_what_billable_proc_accepts_everywhere(base):
    """MAX_CALL_BYTES (the joiner's calls) and billable-proc's MAX_BODY_BYTES are agreed in one place: both
    default to streaming_runtime.settings.DEFAULT_MAX_BODY_BYTES; wherever either is set, the calls fit."""
    from joiner.app import JoinerSettings
    from message_proc.app import ProcessorSettings

    apps = dapr_apps(base)
    environments = {
        "dapr.yaml": (
            {k: str(v) for k, v in (RUN_APPS[a].get("env") or {}).items()}
            for a in ("join-tenants-poweruse", "billable-proc")
        ),
        "deploy/": (env(container(apps[a])) for a in ("join-tenants-poweruse", "billable-proc")),
    }
    for where, (joiner_env, proc_env) in environments.items():
        calls = JoinerSettings(**{k: v for k, v in joiner_env.items() if k == "MAX_CALL_BYTES"}).max_call_bytes
        accepted = ProcessorSettings(**{k: v for k, v in proc_env.items() if k == "MAX_BODY_BYTES"}).max_body_bytes
        assert calls <= accepted, where
