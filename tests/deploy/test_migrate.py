"""`python -m streaming_migrate`: the original project's manifests carried over to this project's resources.

On the power-usage example in the original format (tests/data/original-power-usage.yaml) the result must be what deploy/ holds for the
same pipeline; on tests/data/original-manifests-small.yaml every conversion, and with
tests/data/original-manifests-odd.yaml every warning, is checked. Every result must pass the validation
deploy/ passes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from joiner.config import InvokeTarget, PublishTarget, config_from_yaml
from streaming_migrate import migrate_text
from streaming_runtime.errors import ConfigError
from tests.deploy.conftest import SMALL_ORIGINAL
from tests.deploy.support import (
    ORIGINAL_MANIFESTS,
    REPLICA_COPIES,
    ROOT,
    annotations,
    by_kind,
    container,
    dapr_apps,
    env,
    validate,
)

SMALL_WARNINGS = [
    "Channel/click-channel: kind Channel (streaming.vivien.io/v1alpha1) is not known to this tool: not converted",
    "ClusterStream/logs: protocol 'kafka' is not supported (redis, rabbitmq): no Component written",
    "ClusterStream/orders-mq: field metadata.annotations is not known to this tool: not carried over",
    "ClusterStream/orders-mq: property 'exchangeFlavor' is not a pubsub.rabbitmq setting this tool knows: passed through unchanged",
    "Joiner/join-clicks-orders: field spec.parallelism is not known to this tool: not carried over",
    "Secret/orders-mq-secret: Secrets are not copied (they hold passwords): create it in the cluster with kubectl create secret",
    "ServiceMonitor/clicks-gen: kind ServiceMonitor (monitoring.coreos.com/v1) is not known to this tool: not converted",
    "Stream/app-logs: clusterStream 'logs' has no Component: nothing delivers this Subscription",
    "Stream/app-logs: no Joiner reads it: its Subscription has no scopes (every app with the route gets the events)",
    "Stream/audit: no Joiner reads it: its Subscription has no scopes (every app with the route gets the events)",
    "Stream/clicks: field spec.recipients is not known to this tool: not carried over",
]


# ---- the original power-usage example


def test_the_original_example_converts_without_a_warning_into_valid_resources(migrated_power_usage):
    assert migrated_power_usage.warnings == []
    assert validate(migrated_power_usage.resources) == []
    # what the written YAML reads back to is what was checked
    assert [d for d in yaml.safe_load_all(migrated_power_usage.to_yaml()) if d] == migrated_power_usage.resources


def test_the_rabbitmq_password_becomes_a_secret_reference_and_a_note(migrated_power_usage):
    component = by_kind(migrated_power_usage.resources, "Component")["rabbit-stream"]
    items = {item["name"]: item for item in component["spec"]["metadata"]}
    assert items["connectionString"] == {
        "name": "connectionString",
        "secretKeyRef": {"name": "rabbit-stream-credentials", "key": "connectionString"},
    }
    assert "host" not in items and "auth" not in component
    assert (
        "ClusterStream/rabbit-stream: the password is not written; the Component reads it from the Secret "
        "rabbit-stream-credentials. Create it first: kubectl create secret generic rabbit-stream-credentials -n default "
        "--from-literal=connectionString='amqp://admin:<password>@rabbitmq.default.svc.cluster.local:5672'"
    ) in migrated_power_usage.notes
    assert "@dm1n" in ORIGINAL_MANIFESTS.read_text()
    assert "@dm1n" not in migrated_power_usage.to_yaml()


def test_the_example_carries_over_to_what_deploy_holds(migrated_power_usage, base):
    migrated, deployed = dapr_apps(migrated_power_usage.resources), dapr_apps(base)
    assert set(migrated) == set(deployed)
    for app_id, deployment in migrated.items():
        ours = deployed[app_id]
        mine, theirs = container(deployment), container(ours)
        # MESSAGE_DELAY: deploy/ writes the default (1s) out; JOINER_STATE_STORE, JOINER_JOURNAL,
        # PROC_STATE_STORE: deploy/ adds the handover of open windows, the journal and the durable record of
        # billed calls, which the original does not have (nor their state store components)
        skip = {"JOINER_CONFIG", "MESSAGE_DELAY", "JOINER_STATE_STORE", "JOINER_JOURNAL", "PROC_STATE_STORE"}
        assert {k: v for k, v in env(mine).items() if k not in skip} == {
            k: v for k, v in env(theirs).items() if k not in skip
        }, app_id
        for key in ("ports", "readinessProbe", "livenessProbe", "resources", "securityContext"):
            assert mine[key] == theirs[key], f"{app_id}: {key}"
        assert mine["image"].rpartition(":")[0] == theirs["image"].rpartition(":")[0], app_id
        pod, our_pod = deployment["spec"]["template"]["spec"], ours["spec"]["template"]["spec"]
        assert pod["securityContext"] == our_pod["securityContext"], app_id
        assert {k: v for k, v in annotations(deployment).items() if k != "dapr.io/config"} == {
            k: v for k, v in annotations(ours).items() if k != "dapr.io/config"
        }, app_id
        if ours["kind"] == "StatefulSet":
            # deploy/'s joiner is replicas with a state store (claims need it: docs/scaling.md); the original
            # has none, so its migration stays one joiner whose windows live in memory, replaced, not rolled
            assert deployment["spec"]["strategy"] == {"type": "Recreate"} and deployment["spec"]["replicas"] == 1
        else:
            assert deployment["spec"].get("strategy") == ours["spec"].get("strategy"), app_id


def test_the_example_keeps_its_streams_subscriptions_and_joiner(migrated_power_usage, base):
    resources = migrated_power_usage.resources
    for name, subscription in by_kind(base, "Subscription").items():
        # bulk delivery is tuning deploy/ chose for the busy stream; the original manifests do not say. A bulk
        # Subscription goes without deadLetterTopic (the joiner dead-letters that stream itself, see deploy/)
        ours = {k: v for k, v in subscription["spec"].items() if k != "bulkSubscribe"}
        ours["pubsubname"] = REPLICA_COPIES.get(ours["pubsubname"], ours["pubsubname"])
        if "bulkSubscribe" in subscription["spec"]:
            ours["deadLetterTopic"] = f"{ours['topic']}-deadletter"
        assert by_kind(resources, "Subscription")[name]["spec"] == ours
        assert by_kind(resources, "Subscription")[name]["scopes"] == subscription["scopes"]
    migrated_components = by_kind(resources, "Component")
    for name, component in by_kind(base, "Component").items():
        if not component["spec"]["type"].startswith("pubsub.") or name in REPLICA_COPIES:
            continue  # the joiner's state store and its replicas' copy are this project's; the original has neither
        assert migrated_components[name]["spec"]["type"] == component["spec"]["type"]
        assert migrated_components[name]["scopes"] == sorted(component["scopes"])
        plain = {
            i["name"]: i["value"]
            for i in component["spec"]["metadata"]
            if "value" in i and not (name in REPLICA_COPIES.values() and i["name"] == "subscriptionScopes")
        }
        migrated_plain = {
            i["name"]: i["value"]
            for i in migrated_components[name]["spec"]["metadata"]
            if "value" in i and not (name in REPLICA_COPIES.values() and i["name"] == "subscriptionScopes")
        }
        assert {k: v for k, v in migrated_plain.items() if k != "redisHost"} == {
            k: v for k, v in plain.items() if k != "redisHost"
        }
    (ours,) = by_kind(base, "ConfigMap").values()
    theirs = by_kind(resources, "ConfigMap")["join-tenants-poweruse"]
    assert _stripped(config_from_yaml(theirs["data"]["joiner.yaml"])) == _stripped(
        config_from_yaml(ours["data"]["joiner.yaml"])
    )
    resiliency = by_kind(resources, "Resiliency")["streaming-runtime"]
    assert resiliency["spec"] == by_kind(base, "Resiliency")["power-usage"]["spec"] | {
        "targets": {
            "components": {
                "rabbit-stream": {"inbound": {"retry": "delivery"}},
                "redis-stream": {"inbound": {"retry": "delivery"}},
            }
        }
    }


def _stripped(config):
    """The original ends `where` with `|-`, deploy/ with `|`: a trailing newline is no difference. deploy/'s
    joiner dead-letters its bulk stream itself; the migration's streams are not bulk, daprd does it there."""
    return config.model_copy(
        update={"where": config.where.strip(), "select": config.select.strip(), "dead_letters": {}}
    )


def test_every_app_finds_its_configuration_in_its_namespace(migrated_power_usage, migrated_small):
    for migration in (migrated_power_usage, migrated_small):
        configurations = {
            (c["metadata"].get("namespace"), c["metadata"]["name"])
            for c in migration.resources
            if c["kind"] == "Configuration"
        }
        for deployment in dapr_apps(migration.resources).values():
            assert (
                deployment["metadata"].get("namespace"),
                annotations(deployment)["dapr.io/config"],
            ) in configurations


ODD_WARNINGS = [
    "ClusterStream/(no name): has no metadata.name: not converted",
    "ClusterStream/broken-props: spec.properties is not a mapping: no Component written",
    "Deployment/meters-gen: field container command is not known to this tool: not carried over",
    "Deployment/meters-gen: field pod spec.nodeSelector is not known to this tool: not carried over",
    "Deployment/meters-gen: publishes to 'lab-kafka', which has no Component",
    "Deployment/with-a-helper: has 2 containers, expected one: copied unchanged",
    "Joiner/join-meters-sites: port 'http' is not a port number: 8080 used",
    "Joiner/join-meters-sites: publishes its rows to 'nowhere/rows', but 'nowhere' has no Component",
    "Joiner/join-meters-sites: reads stream 'sites', which no Stream of the input defines: no Subscription delivers it",
    "Joiner/join-meters-sites: sends its rows to 'site-proc/rows', but no app 'site-proc' is in the input",
    "Joiner/join-meters-sites: the joiner would not start with this configuration: stream.where does not parse: "
    "The symbol = cannot be used as a unary operator (JSONata S0211) at line 1, column 15: near 'meters.site === sites.id'",
    "Processor/imageless-proc: spec.container has no image: Deployment written with this project's message-proc",
    "Stream/flat: spec is not a mapping: not converted",
    "document 1: not a Kubernetes resource (no kind): not converted",
]


# ---- the small file: every conversion and every warning


def test_the_small_file_gives_exactly_its_warnings_and_valid_resources(migrated_small):
    assert sorted(migrated_small.warnings) == SMALL_WARNINGS
    assert validate(migrated_small.resources) == []


def test_the_small_file_converts_each_kind(migrated_small):
    resources = migrated_small.resources
    assert {(r["kind"], r["metadata"]["name"]) for r in resources} == {
        ("Configuration", "streaming-runtime"),
        ("Resiliency", "streaming-runtime"),
        ("Component", "events"),
        ("Component", "orders-mq"),
        ("Subscription", "clicks"),
        ("Subscription", "orders"),
        ("Subscription", "audit"),
        ("Subscription", "app-logs"),
        ("ConfigMap", "join-clicks-orders"),
        ("Deployment", "join-clicks-orders"),
        ("Deployment", "order-proc"),
        ("Deployment", "custom-proc"),
        ("Deployment", "clicks-gen"),
        ("Service", "events-redis"),
    }
    assert all(r["metadata"].get("namespace") == "shop" for r in resources)
    events = by_kind(resources, "Component")["events"]
    assert events["spec"]["type"] == "pubsub.redis"
    assert events["scopes"] == ["clicks-gen", "join-clicks-orders"]  # publisher, reader and target of the joiner
    items = {i["name"]: i for i in events["spec"]["metadata"]}
    assert items["redisPassword"] == {
        "name": "redisPassword",
        "secretKeyRef": {"name": "events-credentials", "key": "redisPassword"},
    }
    assert items["maxLenApprox"]["value"] == "5000"  # the original's value wins over this project's default
    assert items["processingTimeout"]["value"] == "60s"
    orders = by_kind(resources, "Component")["orders-mq"]
    assert orders["spec"]["type"] == "pubsub.rabbitmq"
    assert {i["name"]: i.get("value") for i in orders["spec"]["metadata"]}["exchangeFlavor"] == "fanout"
    clicks = by_kind(resources, "Subscription")["clicks"]
    assert clicks["spec"] == {
        "pubsubname": "events",
        "topic": "clicks",
        "routes": {"default": "/click-events"},
        "deadLetterTopic": "clicks-deadletter",
    }
    assert clicks["scopes"] == ["join-clicks-orders"]
    assert "scopes" not in by_kind(resources, "Subscription")["audit"]


def test_the_small_files_joiner_gets_the_streams_routes_and_its_targets(migrated_small):
    config_map = by_kind(migrated_small.resources, "ConfigMap")["join-clicks-orders"]
    config = config_from_yaml(config_map["data"]["joiner.yaml"])
    assert [(s.name, s.route) for s in config.sources] == [("clicks", "/click-events"), ("orders", "/orders")]
    assert config.window_seconds == 5
    assert config.targets == (
        InvokeTarget(app_id="order-proc", method="matched"),
        PublishTarget(pubsub="events", topic="matches"),
    )
    assert "parallelism" not in config_map["data"]["joiner.yaml"]
    deployment = dapr_apps(migrated_small.resources)["join-clicks-orders"]
    for resource in (config_map, deployment):
        assert resource["metadata"]["labels"]["team"] == "shop"  # the Joiner's labels are kept


def test_the_small_files_apps_run_this_projects_images_or_their_own(migrated_small):
    apps = dapr_apps(migrated_small.resources)
    assert container(apps["order-proc"])["image"] == "registry.example.com/pu/message-proc:1.2.3"
    assert env(container(apps["order-proc"]))["PROC_SERVICE_ROUTE"] == "matched"
    assert apps["order-proc"]["spec"]["replicas"] == 2
    generator = env(container(apps["clicks-gen"]))
    assert container(apps["clicks-gen"])["image"] == "registry.example.com/pu/message-gen:1.2.3"
    assert generator["MESSAGE_DELAY"] == "500ms" and generator["CLUSTER_STREAM"] == "events"
    assert container(apps["join-clicks-orders"])["image"] == "registry.example.com/pu/joiner:1.2.3"
    # as deploy/base: ready while delivering, window buffers sized under the memory limit
    assert container(apps["join-clicks-orders"])["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert env(container(apps["join-clicks-orders"]))["JOINER_MAX_WINDOW_BYTES"] == "96Mi"
    custom = apps["custom-proc"]
    assert container(custom)["image"] == "registry.example.com/shop/custom-proc:1.0"
    assert annotations(custom)["dapr.io/app-port"] == "9000"
    assert "dapr.io/enable-app-health-check" not in annotations(custom)  # /healthz is not known to exist there
    assert any(n.startswith("Processor/custom-proc runs its own image") for n in migrated_small.notes)


# ---- the odd file: manifests half-finished or edited by hand


def test_the_odd_file_gives_exactly_its_warnings_and_valid_resources(migrated_odd):
    assert sorted(migrated_odd.warnings) == ODD_WARNINGS
    assert validate(migrated_odd.resources) == []
    assert {(r["kind"], r["metadata"]["name"]) for r in migrated_odd.resources} == {
        ("Component", "lab-mq"),
        ("Subscription", "meters"),
        ("ConfigMap", "join-meters-sites"),
        ("Deployment", "join-meters-sites"),
        ("Deployment", "imageless-proc"),
        ("Deployment", "meters-gen"),
        ("Deployment", "with-a-helper"),
        ("Deployment", "own-app"),
        ("Configuration", "streaming-runtime"),
        ("Resiliency", "streaming-runtime"),
    }


def test_the_odd_files_apps_keep_what_can_be_kept(migrated_odd):
    apps = dapr_apps(migrated_odd.resources)
    assert container(apps["imageless-proc"])["image"] == "power-usage/message-proc:dev"
    generator = container(apps["meters-gen"])
    assert generator["envFrom"] == [{"configMapRef": {"name": "meters-gen-settings"}}]
    assert "command" not in generator
    assert "nodeSelector" not in apps["meters-gen"]["spec"]["template"]["spec"]
    assert annotations(apps["join-meters-sites"])["dapr.io/app-port"] == "8080"
    # copied unchanged: two containers, or an image that is not the original project's
    assert [c["name"] for c in apps["with-a-helper"]["spec"]["template"]["spec"]["containers"]] == ["main", "helper"]
    assert container(apps["own-app"])["image"] == "registry.example.com/lab/own-app:2.0"
    assert (
        "Deployment/own-app runs its own image registry.example.com/lab/own-app:2.0: copied unchanged"
        in migrated_odd.notes
    )
    # a host URL that does not parse holds no password to hide: passed on as it is
    (item,) = by_kind(migrated_odd.resources, "Component")["lab-mq"]["spec"]["metadata"][:1]
    assert item == {"name": "connectionString", "value": "amqp://[not-a-host"}


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no resource in the input"), ("kind: [unclosed\n", "not valid YAML at line 2, column 1")],
)
def test_input_that_is_not_manifests_is_refused(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        migrate_text(text)


# ---- the command


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streaming_migrate", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_command_writes_the_example_and_tells_what_to_do(tmp_path):
    output = tmp_path / "power-usage.yaml"
    done = run(str(ORIGINAL_MANIFESTS), "-o", str(output))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "note: ClusterStream/rabbit-stream: the password is not written" in done.stderr
    assert "kubectl create secret generic rabbit-stream-credentials" in output.read_text()  # as a comment on top
    assert done.stderr.strip().splitlines()[-1] == f"python -m streaming_migrate: 14 resources to {output}, 0 warnings"
    assert validate([d for d in yaml.safe_load_all(output.read_text()) if d]) == []


def test_the_command_prints_warnings_and_strict_fails_on_them():
    done = run(str(SMALL_ORIGINAL))
    assert done.returncode == 0
    assert [line for line in done.stderr.splitlines() if line.startswith("warning: ")] == [
        f"warning: {w}" for w in migrate_text(SMALL_ORIGINAL.read_text()).warnings
    ]
    assert "kind: Subscription" in done.stdout
    strict = run(str(SMALL_ORIGINAL), "--strict")
    assert strict.returncode == 1


def test_the_command_refuses_an_unreadable_input_in_one_line(tmp_path):
    missing = run(str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"python -m streaming_migrate: error: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    done = run(str(broken))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "not valid YAML" in done.stderr
