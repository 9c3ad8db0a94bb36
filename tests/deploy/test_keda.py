"""deploy/overlays/keda, checked: the overlay rendered by kustomize (over the dev overlay's generated secrets
too), its ScaledObject and TriggerAuthentication validated against the CRDs of the pinned KEDA
(deploy/keda.version, scripts/install-keda-crds.sh; closed schemas: an unknown field is an error), and what
makes the autoscaling right: it scales the joiner's StatefulSet, never below the replicas it has, on the
queue Dapr makes for the joiner's RabbitMQ subscription, with the URL of the Secret that subscription uses.
Each check is shown to fail on a manifest broken the way it guards against."""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from tests.deploy.support import (
    DEPLOY,
    KEDA_CRDS,
    KEDA_GROUP,
    KEDA_MODULE,
    by_kind,
    copy_deploy_with_dev_secrets,
    keda_schemas,
    kustomize_build,
    load_keda_schemas,
    validate,
    validate_keda,
)

KEDA = DEPLOY / "overlays" / "keda"
JOINER = "join-tenants-poweruse"  # the joiner's Dapr app id
OWN_OBJECTS = {
    ("ScaledObject", JOINER),
    ("TriggerAuthentication", "rabbitmq-credentials"),
    ("NetworkPolicy", "power-usage-keda-operator"),
}
MIN_SCALE_DOWN_WINDOW = 300  # seconds: removing a replica strands its windows (docs/scaling.md)


@pytest.fixture(scope="module")
def keda() -> list[dict[str, Any]]:
    """The overlay as a user builds it from the repository (no Secret: the base names them, see its README)."""
    return kustomize_build(KEDA)


@pytest.fixture(scope="module")
def keda_dev(tmp_path_factory) -> list[dict[str, Any]]:
    """The dev overlay over the keda overlay instead of the base: the same objects plus the generated Secrets."""
    deploy = copy_deploy_with_dev_secrets(tmp_path_factory.mktemp("keda"))
    kustomization = deploy / "overlays" / "dev" / "kustomization.yaml"
    dev = yaml.safe_load(kustomization.read_text())
    assert dev["resources"] == ["../../base"], dev["resources"]
    dev["resources"] = ["../keda"]
    kustomization.write_text(yaml.safe_dump(dev, sort_keys=False))
    return kustomize_build(deploy / "overlays" / "dev")


# ---- what the checks look at


def effective_target(scaled_object: dict[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name) of the scale target, with KEDA's defaults (apps/v1 Deployment)."""
    ref = scaled_object["spec"]["scaleTargetRef"]
    return ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment"), ref["name"]


def app_id(workload: dict[str, Any]) -> str | None:
    return (workload["spec"]["template"]["metadata"].get("annotations") or {}).get("dapr.io/app-id")


def rabbitmq_subscription(resources: list[dict[str, Any]], app: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The app's one Subscription on a pubsub.rabbitmq Component, and that Component."""
    components = by_kind(resources, "Component")
    found = [
        (subscription, components[subscription["spec"]["pubsubname"]])
        for subscription in by_kind(resources, "Subscription").values()
        if app in (subscription.get("scopes") or [app])
        and subscription["spec"]["pubsubname"] in components
        and components[subscription["spec"]["pubsubname"]]["spec"]["type"] == "pubsub.rabbitmq"
    ]
    assert len(found) == 1, f"{app}: expected one Subscription on a RabbitMQ pub/sub, found {len(found)}"
    return found[0]


def metadata(component: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in component["spec"].get("metadata") or []}


def dapr_queue(resources: list[dict[str, Any]], app: str) -> str:
    """The queue Dapr's pubsub.rabbitmq (components-contrib, Subscribe) consumes for the app's subscription:
    the subscription's queueName, else <consumerID>-<topic>, consumerID defaulting to the app id."""
    subscription, component = rabbitmq_subscription(resources, app)
    named = (subscription["spec"].get("metadata") or {}).get("queueName")
    if named:
        return str(named)
    consumer = metadata(component).get("consumerID", {}).get("value", app)
    assert "{" not in consumer, f"consumerID {consumer!r} is a template: the replicas would not share one queue"
    return f"{consumer}-{subscription['spec']['topic']}"


@functools.cache
def rabbitmq_scaler_parameters() -> dict[str, set[str]]:
    """name -> where KEDA's rabbitmq scaler reads it (triggerMetadata, authParams, resolvedEnv), from the
    `keda:"name=..., order=..."` tags of pkg/scalers/rabbitmq_scaler.go in the pinned KEDA module."""
    done = subprocess.run(["go", "mod", "download", "-json", KEDA_MODULE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"go mod download {KEDA_MODULE} failed:\n{done.stdout}{done.stderr}"
    source = (Path(json.loads(done.stdout)["Dir"]) / "pkg" / "scalers" / "rabbitmq_scaler.go").read_text()
    tags = re.findall(r'keda:"name=(\w+),\s*order=([\w;]+)', source)
    assert len(tags) > 10, f"no parameter tags found in {KEDA_MODULE}'s rabbitmq_scaler.go"
    return {name: set(order.split(";")) for name, order in tags}


def secret_value(secret: dict[str, Any], key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


# ---- the checks


def keda_problems(resources: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the autoscaling of the joiner in a build that has the Secrets; [] when nothing."""
    scaled = list(by_kind(resources, "ScaledObject").values())
    if len(scaled) != 1:
        return [f"expected one ScaledObject, found {len(scaled)}"]
    [scaled_object] = scaled
    spec = scaled_object["spec"]
    problems = []

    api_version, kind, name = effective_target(scaled_object)
    targets = [r for r in resources if (r["apiVersion"], r["kind"], r["metadata"]["name"]) == (api_version, kind, name)]
    target = targets[0] if targets else None
    if target is None:
        problems.append(f"scale target {api_version} {kind}/{name} is not in the build")
    elif kind != "StatefulSet" or app_id(target) != JOINER:
        problems.append(f"scale target {kind}/{name} is not the joiner's StatefulSet (app id {JOINER})")

    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if low < 1:
        problems.append(f"minReplicaCount {low}: the joiner must never scale to zero")
    if target is not None and low < target["spec"].get("replicas", 1):
        problems.append(
            f"minReplicaCount {low} is below the StatefulSet's {target['spec'].get('replicas', 1)} replicas"
        )
    if high <= low:
        problems.append(f"maxReplicaCount {high} leaves nothing to scale above minReplicaCount {low}")
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
    window = behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 0)
    if window < MIN_SCALE_DOWN_WINDOW:
        problems.append(f"scaleDown stabilizationWindowSeconds {window} < {MIN_SCALE_DOWN_WINDOW}")

    triggers = [t for t in spec["triggers"] if t["type"] == "rabbitmq"]
    if len(triggers) != 1:
        return [*problems, f"expected one rabbitmq trigger, found {len(triggers)}"]
    [trigger] = triggers
    meta = trigger["metadata"]
    parameters = rabbitmq_scaler_parameters()
    for key in meta:
        if "triggerMetadata" not in parameters.get(key, set()):
            problems.append(f"trigger metadata {key!r} is not a parameter of KEDA's rabbitmq scaler")
    queue = dapr_queue(resources, JOINER)
    if meta.get("queueName") != queue:
        problems.append(f"trigger queueName {meta.get('queueName')!r}, Dapr's queue for {JOINER} is {queue!r}")
    if meta.get("mode") != "QueueLength":
        problems.append(f"trigger mode {meta.get('mode')!r}, not QueueLength")
    if not (meta.get("value", "").isdigit() and int(meta["value"]) > 0):
        problems.append(f"trigger value {meta.get('value')!r} is not a positive number of messages per replica")

    # the TriggerAuthentication, the Secret it reads, and the same Secret and key as the Dapr component's URL
    ref = trigger.get("authenticationRef") or {}
    authentication = by_kind(resources, ref.get("kind", "TriggerAuthentication")).get(ref.get("name", ""))
    if authentication is None:
        return [*problems, f"authenticationRef {ref} names no TriggerAuthentication of the build"]
    hosts = [s for s in authentication["spec"].get("secretTargetRef") or [] if s["parameter"] == "host"]
    if len(hosts) != 1:
        return [*problems, "the TriggerAuthentication gives no (or more than one) host from a Secret"]
    [host] = hosts
    for ref_ in authentication["spec"]["secretTargetRef"]:
        if "authParams" not in parameters.get(ref_["parameter"], set()):
            problems.append(f"parameter {ref_['parameter']!r} is not an auth parameter of KEDA's rabbitmq scaler")
    _, component = rabbitmq_subscription(resources, JOINER)
    url_ref = metadata(component).get("connectionString", {}).get("secretKeyRef")
    if url_ref != {"name": host["name"], "key": host["key"]}:
        problems.append(
            f"the host comes from Secret {host['name']} key {host['key']}, the component's URL from {url_ref}"
        )
    secret = by_kind(resources, "Secret").get(host["name"])
    url = secret_value(secret, host["key"]) if secret else None
    if url is None:
        return [*problems, f"Secret {host['name']} with key {host['key']} is not in the build"]

    parts = urlsplit(url)
    protocol = meta.get("protocol", "auto")
    if protocol not in ("auto", parts.scheme.removesuffix("s")):
        problems.append(f"trigger protocol {protocol}, the URL is {parts.scheme} (no management API to ask)")
    vhost = unquote(parts.path.removeprefix("/")) or "/"
    if meta.get("vhostName", vhost) != vhost:
        problems.append(f"trigger vhostName {meta['vhostName']!r}, the component's URL uses vhost {vhost!r}")
    return problems


# ---- the overlay


def test_the_crds_are_those_of_the_pinned_keda_and_serve_both_kinds():
    assert f"module {KEDA_MODULE}" in (KEDA_CRDS / "SOURCE").read_text().splitlines()
    assert {("keda.sh", "v1alpha1", "ScaledObject"), ("keda.sh", "v1alpha1", "TriggerAuthentication")} <= set(
        keda_schemas()
    )


def test_missing_crds_fail_naming_the_installer(tmp_path):
    with pytest.raises(AssertionError, match=r"scripts/install-keda-crds\.sh"):
        load_keda_schemas(tmp_path)
    (tmp_path / "SOURCE").write_text("module github.com/kedacore/keda/v2@v2.0.0\n")
    with pytest.raises(AssertionError, match=r"scripts/install-keda-crds\.sh"):
        load_keda_schemas(tmp_path)


def test_the_overlay_is_the_base_and_its_own_objects(keda, base):
    names = {(r["kind"], r["metadata"]["name"]) for r in keda}
    assert names - {(r["kind"], r["metadata"]["name"]) for r in base} == OWN_OBJECTS
    assert [r for r in base if r not in keda] == [], "the overlay changes objects of the base"


def test_the_dev_overlay_over_it_adds_its_secrets_only(keda, keda_dev):
    added = {(r["kind"], r["metadata"]["name"]) for r in keda_dev if r not in keda}
    assert {kind for kind, _ in added} <= {"Secret", "Deployment", "StatefulSet"}  # dev's image tags
    assert ("Secret", "rabbitmq-credentials") in added


def test_the_overlay_renders_to_valid_kubernetes_and_keda_resources(keda):
    own = [r for r in keda if r["apiVersion"].partition("/")[0] == KEDA_GROUP]
    assert {(r["kind"], r["metadata"]["name"]) for r in own} == OWN_OBJECTS - {
        ("NetworkPolicy", "power-usage-keda-operator")
    }
    assert [p for r in own for p in validate_keda(r)] == []
    assert validate([r for r in keda if r not in own]) == []


def test_the_autoscaling_is_right(keda_dev):
    assert keda_problems(keda_dev) == []


def test_the_queue_is_derived_from_the_build():
    """Not a constant copied into the test: the component's and the subscription's settings give it."""
    subscription = {
        "kind": "Subscription",
        "metadata": {"name": "readings"},
        "spec": {"pubsubname": "mq", "topic": "readings"},
        "scopes": ["app"],
    }
    component = {"kind": "Component", "metadata": {"name": "mq"}, "spec": {"type": "pubsub.rabbitmq"}}
    assert dapr_queue([subscription, component], "app") == "app-readings"
    component["spec"]["metadata"] = [{"name": "consumerID", "value": "billing"}]
    assert dapr_queue([subscription, component], "app") == "billing-readings"
    subscription["spec"]["metadata"] = {"queueName": "q"}
    assert dapr_queue([subscription, component], "app") == "q"


# ---- each check fails on the manifest it guards against


def scaled(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(resources, "ScaledObject")[JOINER]


def trigger(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return scaled(resources)["spec"]["triggers"][0]


def set_in(getter: Callable[[list[dict[str, Any]]], dict[str, Any]], key: str, value: Any):
    def mutate(resources: list[dict[str, Any]]) -> None:
        getter(resources)[key] = value

    return mutate


def target_ref(resources):
    return scaled(resources)["spec"]["scaleTargetRef"]


def spec(resources):
    return scaled(resources)["spec"]


def trigger_meta(resources):
    return trigger(resources)["metadata"]


def host_ref(resources):
    return by_kind(resources, "TriggerAuthentication")["rabbitmq-credentials"]["spec"]["secretTargetRef"][0]


def scale_down(resources):
    return spec(resources)["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]


def add_ref(parameter: str):
    def mutate(resources: list[dict[str, Any]]) -> None:
        refs = by_kind(resources, "TriggerAuthentication")["rabbitmq-credentials"]["spec"]["secretTargetRef"]
        refs.append({**refs[0], "parameter": parameter})

    return mutate


def component_consumer(resources):
    component = by_kind(resources, "Component")["rabbit-stream"]
    component["spec"]["metadata"].append({"name": "consumerID", "value": "billing"})


def drop_secret(resources):
    resources.remove(by_kind(resources, "Secret")["rabbitmq-credentials"])


def target_defaults_to_deployment(resources):
    del target_ref(resources)["kind"]


BROKEN = [
    ("target kind", set_in(target_ref, "kind", "Deployment"), "is not in the build"),
    ("target kind omitted", target_defaults_to_deployment, "is not in the build"),
    ("target name", set_in(target_ref, "name", "joiner"), "is not in the build"),
    ("target another StatefulSet", set_in(target_ref, "name", "rabbitmq"), "is not the joiner's StatefulSet"),
    ("scale to zero", set_in(spec, "minReplicaCount", 0), "never scale to zero"),
    ("below the StatefulSet", set_in(spec, "minReplicaCount", 2), "below the StatefulSet's 3 replicas"),
    ("max not above min", set_in(spec, "maxReplicaCount", 3), "leaves nothing to scale"),
    ("hasty scale-down", set_in(scale_down, "stabilizationWindowSeconds", 30), "stabilizationWindowSeconds 30"),
    ("queue of the topic", set_in(trigger_meta, "queueName", "poweruse"), "Dapr's queue for"),
    ("component's consumerID", component_consumer, "'billing-poweruse'"),
    ("mode", set_in(trigger_meta, "mode", "MessageRate"), "not QueueLength"),
    ("metadata typo", set_in(trigger_meta, "queueLenght", "5"), "'queueLenght' is not a parameter"),
    ("auth parameter typo", add_ref("hosts"), "'hosts' is not an auth parameter"),
    ("value", set_in(trigger_meta, "value", "0"), "not a positive number"),
    ("protocol", set_in(trigger_meta, "protocol", "http"), "trigger protocol http"),
    ("vhost", set_in(trigger_meta, "vhostName", "/"), "uses vhost 'power-usage'"),
    ("authentication", set_in(lambda r: trigger(r)["authenticationRef"], "name", "rabbitmq"), "no TriggerAuth"),
    ("host parameter", set_in(host_ref, "parameter", "password"), "no (or more than one) host"),
    ("secret key", set_in(host_ref, "key", "rabbitmq.conf"), "the component's URL from"),
    ("secret missing", drop_secret, "is not in the build"),
]


@pytest.mark.parametrize(("what", "mutate", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_each_autoscaling_check_fails_on_a_broken_manifest(keda_dev, what, mutate, expected):
    resources = copy.deepcopy(keda_dev)
    mutate(resources)
    problems = keda_problems(resources)
    assert any(expected in p for p in problems), f"{what}: {problems}"


def _schema_breaks() -> list[tuple[str, str, Callable[[dict[str, Any]], None]]]:
    def unknown_field(r):
        r["spec"]["minReplicas"] = r["spec"].pop("minReplicaCount")

    def value_not_a_string(r):
        r["spec"]["triggers"][0]["metadata"]["value"] = 1000

    def target_field_typo(r):
        r["spec"]["scaleTargetRef"]["knd"] = r["spec"]["scaleTargetRef"].pop("kind")

    def behavior_typo(r):
        hpa = r["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
        hpa["behaviour"] = hpa.pop("behavior")

    def unserved_version(r):
        r["apiVersion"] = "keda.sh/v1beta1"

    def secret_ref_without_key(r):
        del r["spec"]["secretTargetRef"][0]["key"]

    def secret_ref_typo(r):
        r["spec"]["secretRef"] = r["spec"].pop("secretTargetRef")

    return [
        ("ScaledObject", JOINER, unknown_field),
        ("ScaledObject", JOINER, value_not_a_string),
        ("ScaledObject", JOINER, target_field_typo),
        ("ScaledObject", JOINER, behavior_typo),
        ("ScaledObject", JOINER, unserved_version),
        ("TriggerAuthentication", "rabbitmq-credentials", secret_ref_without_key),
        ("TriggerAuthentication", "rabbitmq-credentials", secret_ref_typo),
    ]


@pytest.mark.parametrize(("kind", "name", "mutate"), _schema_breaks(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_keda_schema_check_refuses_a_broken_resource(keda, kind, name, mutate):
    resource = copy.deepcopy(by_kind(keda, kind)[name])
    assert validate_keda(resource) == []
    mutate(resource)
    assert validate_keda(resource) != []


def test_the_operator_may_reach_the_queue_and_nothing_else_opens(keda, base):
    """KEDA's operator reads the depth on RabbitMQ's AMQP port; the base's policies are unchanged."""
    [policy] = [p for p in by_kind(keda, "NetworkPolicy").values() if p not in by_kind(base, "NetworkPolicy").values()]
    rabbitmq = by_kind(keda, "StatefulSet")["rabbitmq"]
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= rabbitmq["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    amqp = {p["port"] for p in by_kind(keda, "Service")["rabbitmq"]["spec"]["ports"] if p["name"] == "amqp"}
    assert {p["port"] for p in rule["ports"]} == amqp
    [peer] = rule["from"]
    assert peer["namespaceSelector"] and peer["podSelector"], "only KEDA's operator pods, of KEDA's namespace"


def test_the_overlay_files_are_the_ones_listed():
    listed = yaml.safe_load((KEDA / "kustomization.yaml").read_text())["resources"]
    assert sorted(p.name for p in Path(KEDA).glob("*.yaml") if p.name != "kustomization.yaml") == sorted(
        r for r in listed if not r.startswith("..")
    )
