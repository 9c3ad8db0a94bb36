"""Carry the original project's manifests (streaming-runtime-go) over to this project's Dapr resources.

``python -m streaming_migrate manifests-all.yaml [-o out.yaml]`` reads the original CRDs and writes:

=======================================  ===========================================================
original                                 written
=======================================  ===========================================================
ClusterStream ``protocol: redis``        Component ``pubsub.redis``: ``properties`` become metadata
ClusterStream ``protocol: rabbitmq``     Component ``pubsub.rabbitmq``: ``host`` becomes ``connectionString``
Stream                                   Subscription (dapr.io/v2alpha1): ``route`` -> ``routes.default``,
                                         dead letters to ``<topic>-deadletter``, scoped to its Joiners
Joiner                                   ConfigMap (its ``joiner.yaml``) + Deployment of this joiner
Processor                                Deployment (this project's message-proc in place of the original's)
Deployment with ``dapr.io/enabled``      the same app on this project's image (the generators), env kept
=======================================  ===========================================================

plus the Configuration and Resiliency the Deployments and Components rely on. A password (the user
info of a RabbitMQ URL, ``redisPassword``...) is never written: it becomes a ``secretKeyRef`` to a
Secret ``<component>-credentials`` and a note says how to create that Secret. Other Kubernetes
resources of a known kind are copied unchanged (Secrets never are); an unknown kind or field gives a
warning and is not carried over.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from joiner.config import config_from_yaml
from streaming_runtime.errors import ConfigError

ORIGINAL_GROUP = "streaming.vivien.io"
ORIGINAL_IMAGES = {  # the original example's images and this project's service that replaces each
    "ghcr.io/vladimirvivien/streaming-runtime-examples/message-gen": "message-gen",
    "ghcr.io/vladimirvivien/streaming-runtime-examples/message-proc": "message-proc",
}
APP_PORT = 8080
CONFIG_NAME = "streaming-runtime"
# the Secrets (key `token`) the sidecars and the apps require of each other, as in deploy/base
API_TOKEN_SECRET, APP_TOKEN_SECRET = "dapr-api-token", "app-api-token"
TRUST_DOMAIN = "public"  # the apps' (Dapr's default): what accessControl policies name
JOINER_CONFIG_DIR = "/etc/joiner"
JOINER_MEMORY_LIMIT, JOINER_WINDOW_BYTES = "512Mi", "96Mi"  # as deploy/base/apps/join-tenants-poweruse.yaml

# Kubernetes kinds copied through unchanged when they are not Dapr apps
PASS_THROUGH_KINDS = {
    "Service",
    "ConfigMap",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ServiceAccount",
    "Namespace",
    "PersistentVolumeClaim",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "Ingress",
}

# pub/sub metadata this tool knows, per component type; `secret` ones are never written as values
PUBSUB: dict[str, dict[str, Any]] = {
    "redis": {
        "type": "pubsub.redis",
        "rename": {},
        "known": {
            "redisHost",
            "redisPassword",
            "redisUsername",
            "redisDB",
            "redisType",
            "consumerID",
            "enableTLS",
            "clientCert",
            "clientKey",
            "caCert",
            "redeliverInterval",
            "processingTimeout",
            "queueDepth",
            "concurrency",
            "maxLenApprox",
            "streamTTL",
            "maxRetries",
            "maxRetryBackoff",
            "failover",
            "sentinelMasterName",
            "sentinelPassword",
            "dialTimeout",
            "readTimeout",
            "writeTimeout",
            "poolSize",
            "minIdleConns",
            "idleCheckFrequency",
            "idleTimeout",
            "poolTimeout",
        },
        "secret": {"redisPassword", "sentinelPassword", "clientKey"},
        # set explicitly by this project (components/pubsub-redis.yaml) where the original sets nothing
        "defaults": {"processingTimeout": "60s", "redeliverInterval": "15s", "maxLenApprox": "100000"},
    },
    "rabbitmq": {
        "type": "pubsub.rabbitmq",
        "rename": {"host": "connectionString"},
        "known": {
            "connectionString",
            "protocol",
            "hostname",
            "username",
            "password",
            "consumerID",
            "durable",
            "deletedWhenUnused",
            "autoAck",
            "deliveryMode",
            "requeueInFailure",
            "prefetchCount",
            "reconnectWait",
            "concurrencyMode",
            "publisherConfirm",
            "enableDeadLetter",
            "maxLen",
            "maxLenBytes",
            "exchangeKind",
            "clientName",
            "heartBeat",
            "saslExternal",
            "caCert",
            "clientCert",
            "clientKey",
            "ttlInSeconds",
            "singleActiveConsumer",
        },
        "secret": {"password", "clientKey"},
        "defaults": {
            "durable": "true",
            "deletedWhenUnused": "false",
            "deliveryMode": "2",
            "requeueInFailure": "true",
            "prefetchCount": "100",
            "publisherConfirm": "true",
        },
    },
}

KNOWN_SPEC_FIELDS = {
    "ClusterStream": {"protocol", "properties"},
    "Stream": {"clusterStream", "topic", "route"},
    "Joiner": {"servicePort", "window", "stream"},
    "Processor": {"replicas", "servicePort", "serviceRoute", "container"},
}
KNOWN_JOINER_STREAM_FIELDS = {"from", "to", "select", "where", "filter"}
MIGRATED_DEDUP = {"ttl": "10m", "maxEntries": 200000}
KNOWN_RESOURCE_FIELDS = {"apiVersion", "kind", "metadata", "spec"}
# annotations are not carried: an exported resource's last-applied-configuration can hold a password
KNOWN_METADATA_FIELDS = {"name", "namespace", "labels"}
KNOWN_CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "env", "envFrom", "resources"}


@dataclass
class Migration:
    """What the conversion wrote, and what a person must read: warnings (something was not carried
    over) and notes (something to do before applying, or a substitution that was made)."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        header = ["# Written by `python -m streaming_migrate` from the original project's manifests."]
        header += [f"# NOTE: {line}" for line in self.notes]
        header += [f"# WARNING: {line}" for line in self.warnings]
        body = "---\n".join(
            yaml.dump(resource, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
            for resource in self.resources
        )
        return "\n".join(header) + "\n" + body


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (expressions, MESSAGE_EXPR, joiner.yaml) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def migrate_text(text: str, registry: str = "power-usage", tag: str = "dev") -> Migration:
    """Convert a multi-document YAML text; raises ConfigError if it is not YAML or holds no resource."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not documents:
        raise ConfigError("no resource in the input")
    return _Converter(registry, tag).run(documents)


class _Converter:
    def __init__(self, registry: str, tag: str) -> None:
        self.registry = registry.rstrip("/")
        self.tag = tag
        self.out = Migration()
        self.cluster_streams: dict[str, dict] = {}
        self.streams: dict[str, dict] = {}
        self.joiners: list[dict] = []
        self.processors: list[dict] = []
        self.apps: list[dict] = []  # Deployments with dapr.io/enabled
        self.others: list[dict] = []
        self.component_names: set[str] = set()
        self.topics: dict[str, dict[str, tuple[set[str], set[str]]]] = {}

    # ---- reading
    def run(self, documents: list[Any]) -> Migration:
        for index, document in enumerate(documents):
            self.sort(index, document)
        readers = self.readers_of_streams()
        publishers = self.publishers_of_components(readers)
        self.topics = self.topics_of_components(readers)
        components = [c for c in (self.component(cs, publishers) for cs in self.cluster_streams.values()) if c]
        self.component_names = {c["metadata"]["name"] for c in components}
        subscriptions = [self.subscription(s, readers) for s in self.streams.values()]
        deployments: list[dict] = []
        for joiner in self.joiners:
            deployments += self.joiner(joiner)
        deployments += [self.processor(p) for p in self.processors]
        deployments += [self.app(d) for d in self.apps]
        self.check_references(deployments)
        if deployments:
            self.note(
                f"the apps and their sidecars require API tokens of each other: create the Secrets first: "
                f'kubectl create secret generic {API_TOKEN_SECRET} --from-literal=token="$(openssl rand -hex 32)" && '
                f'kubectl create secret generic {APP_TOKEN_SECRET} --from-literal=token="$(openssl rand -hex 32)"'
            )
        self.out.resources = (
            self.configurations(deployments)
            + components
            + subscriptions
            + self.resiliencies(components)
            + deployments
            + self.others
        )
        return self.out

    def sort(self, index: int, document: Any) -> None:
        if not isinstance(document, dict) or "kind" not in document:
            self.warn(f"document {index + 1}", "not a Kubernetes resource (no kind): not converted")
            return
        kind, api_version = document["kind"], str(document.get("apiVersion", ""))
        metadata = document.get("metadata") or {}
        label = f"{kind}/{metadata.get('name') or '(no name)'}"
        if not metadata.get("name"):
            self.warn(label, "has no metadata.name: not converted")
            return
        if api_version.split("/")[0] == ORIGINAL_GROUP:
            if kind not in KNOWN_SPEC_FIELDS:
                self.warn(label, f"kind {kind} ({api_version}) is not known to this tool: not converted")
                return
            self.check_fields(label, document, KNOWN_RESOURCE_FIELDS, "")
            self.check_fields(label, metadata, KNOWN_METADATA_FIELDS, "metadata.")
            spec = document.get("spec") or {}
            if not isinstance(spec, dict):
                self.warn(label, "spec is not a mapping: not converted")
                return
            self.check_fields(label, spec, KNOWN_SPEC_FIELDS[kind], "spec.")
            if kind == "ClusterStream":
                self.cluster_streams[metadata["name"]] = document
            elif kind == "Stream":
                self.streams[metadata["name"]] = document
            elif kind == "Joiner":
                self.joiners.append(document)
            else:
                self.processors.append(document)
        elif kind == "Secret":
            self.warn(
                label,
                "Secrets are not copied (they hold passwords): create it in the cluster with kubectl create secret",
            )
        elif kind == "Deployment" and _dapr_app(document):
            self.check_fields(label, metadata, KNOWN_METADATA_FIELDS, "metadata.")
            self.apps.append(document)
        elif kind in PASS_THROUGH_KINDS:
            self.others.append(copy.deepcopy(document))
            self.note(f"{label} copied unchanged")
        else:
            self.warn(label, f"kind {kind} ({api_version}) is not known to this tool: not converted")

    def readers_of_streams(self) -> dict[str, list[str]]:
        """Stream name -> the app ids of the Joiners that read it."""
        readers: dict[str, list[str]] = {}
        for joiner in self.joiners:
            for entry in ((joiner.get("spec") or {}).get("stream") or {}).get("from") or []:
                name = entry.get("name") if isinstance(entry, dict) else entry
                if isinstance(name, str):
                    readers.setdefault(name, []).append(joiner["metadata"]["name"])
        return readers

    def publishers_of_components(self, readers: dict[str, list[str]]) -> dict[str, list[str]]:
        """ClusterStream name -> the app ids that publish to it or read one of its Streams."""
        users: dict[str, list[str]] = {}

        def add(component: str, app_id: str) -> None:
            if app_id not in users.setdefault(component, []):
                users[component].append(app_id)

        for app in self.apps:
            for container in _containers(app):
                for variable in container.get("env") or []:
                    if variable.get("name") == "CLUSTER_STREAM" and "value" in variable:
                        add(str(variable["value"]), _app_id(app))
        for name, stream in self.streams.items():
            for app_id in readers.get(name, []):
                add(str((stream.get("spec") or {}).get("clusterStream")), app_id)
        for joiner in self.joiners:
            for target in ((joiner.get("spec") or {}).get("stream") or {}).get("to") or []:
                if isinstance(target, dict) and "stream" in target:
                    add(str(target["stream"]).partition("/")[0], joiner["metadata"]["name"])
        return users

    def topics_of_components(self, readers: dict[str, list[str]]) -> dict[str, dict[str, tuple[set[str], set[str]]]]:
        """ClusterStream name -> app id -> (topics it publishes, topics it subscribes): the generators'
        STREAM_TOPIC, the Joiners' streams (and their dead letters, which the reader's sidecar publishes) and
        the Joiners' target streams. What the Components' topic scopes allow, and nothing more."""
        uses: dict[str, dict[str, tuple[set[str], set[str]]]] = {}

        def use(component: str, app_id: str) -> tuple[set[str], set[str]]:
            return uses.setdefault(component, {}).setdefault(app_id, (set(), set()))

        for app in self.apps:
            for container in _containers(app):
                values = {v.get("name"): v.get("value") for v in container.get("env") or [] if "value" in v}
                if values.get("CLUSTER_STREAM") and values.get("STREAM_TOPIC"):
                    use(str(values["CLUSTER_STREAM"]), _app_id(app))[0].add(str(values["STREAM_TOPIC"]))
        for name, stream in self.streams.items():
            spec = stream.get("spec") or {}
            topic = str(spec.get("topic") or name)
            for app_id in readers.get(name, []):
                published, subscribed = use(str(spec.get("clusterStream")), app_id)
                subscribed.add(topic)
                published.add(f"{topic}-deadletter")
        for joiner in self.joiners:
            for target in ((joiner.get("spec") or {}).get("stream") or {}).get("to") or []:
                if isinstance(target, dict) and "stream" in target:
                    component, _, topic = str(target["stream"]).partition("/")
                    use(component, joiner["metadata"]["name"])[0].add(topic)
        return uses

    # ---- Dapr resources
    def component(self, cluster_stream: dict, users: dict[str, list[str]]) -> dict | None:
        name = cluster_stream["metadata"]["name"]
        label = f"ClusterStream/{name}"
        spec = cluster_stream.get("spec") or {}
        protocol = spec.get("protocol")
        if protocol not in PUBSUB:
            self.warn(label, f"protocol {protocol!r} is not supported (redis, rabbitmq): no Component written")
            return None
        kind = PUBSUB[protocol]
        properties = spec.get("properties") or {}
        if not isinstance(properties, dict):
            self.warn(label, "spec.properties is not a mapping: no Component written")
            return None
        secret = f"{name}-credentials"
        metadata: list[dict] = []
        secret_values: list[tuple[str, str]] = []  # (key, what to put there, password hidden)
        for key, value in properties.items():
            target = kind["rename"].get(key, key)
            value = "" if value is None else str(value)
            if target not in kind["known"]:
                self.warn(
                    label, f"property {key!r} is not a {kind['type']} setting this tool knows: passed through unchanged"
                )
            if target in kind["secret"] or _url_password(value) is not None:
                if value == "":
                    continue  # an empty password: no authentication, nothing to carry
                metadata.append({"name": target, "secretKeyRef": {"name": secret, "key": target}})
                secret_values.append((target, _hide_password(value) if target not in kind["secret"] else "<password>"))
                continue
            metadata.append({"name": target, "value": value})
        present = {item["name"] for item in metadata}
        metadata += [{"name": k, "value": v} for k, v in kind["defaults"].items() if k not in present]
        if secret_values:
            literals = " ".join(f"--from-literal={key}='{shown}'" for key, shown in secret_values)
            self.note(
                f"{label}: the password is not written; the Component reads it from the Secret {secret}. "
                f"Create it first: kubectl create secret generic {secret}{_namespace_flag(cluster_stream)} {literals}"
            )
        metadata += _topic_scopes(self.topics.get(name, {}))
        component = _resource("dapr.io/v1alpha1", "Component", name, cluster_stream)
        component["spec"] = {"type": kind["type"], "version": "v1", "metadata": metadata}
        if users.get(name):
            component["scopes"] = sorted(users[name])
        return component

    def subscription(self, stream: dict, readers: dict[str, list[str]]) -> dict:
        name = stream["metadata"]["name"]
        spec = stream.get("spec") or {}
        topic = str(spec.get("topic") or name)
        if spec.get("clusterStream") not in self.component_names:
            self.warn(
                f"Stream/{name}",
                f"clusterStream {spec.get('clusterStream')!r} has no Component: nothing delivers this Subscription",
            )
        subscription = _resource("dapr.io/v2alpha1", "Subscription", name, stream)
        subscription["spec"] = {
            "pubsubname": str(spec.get("clusterStream")),
            "topic": topic,
            "routes": {"default": "/" + str(spec.get("route") or name).lstrip("/")},
            "deadLetterTopic": f"{topic}-deadletter",
        }
        if readers.get(name):
            subscription["scopes"] = sorted(set(readers[name]))
        else:
            self.warn(
                f"Stream/{name}",
                "no Joiner reads it: its Subscription has no scopes (every app with the route gets the events)",
            )
        return subscription

    def configurations(self, deployments: list[dict]) -> list[dict]:
        namespaces = sorted({_namespace(d) or "" for d in deployments if d["kind"] == "Deployment" and _dapr_app(d)})
        out = []
        for namespace in namespaces:
            configuration: dict[str, Any] = {
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Configuration",
                "metadata": {"name": CONFIG_NAME},
            }
            if namespace:
                configuration["metadata"]["namespace"] = namespace
            configuration["spec"] = {
                "metric": {"enabled": True},
                "accessControl": self.access_control(namespace or "default"),
                "secrets": {"scopes": [{"storeName": "kubernetes", "defaultAccess": "deny"}]},
            }
            out.append(configuration)
        return out

    def access_control(self, namespace: str) -> dict:
        """Deny by default; each Joiner may POST to the routes of its component targets (``app/route``),
        and each target may GET the Joiner's /stats (billable-proc's dashboard shows them); nothing else is
        invoked in the pipeline."""
        operations: dict[str, set[tuple[str, str]]] = {}  # app id -> (route, verb)
        for joiner in self.joiners:
            if (_namespace(joiner) or "default") != namespace:
                continue
            for target in ((joiner.get("spec") or {}).get("stream") or {}).get("to") or []:
                if isinstance(target, dict) and "component" in target:
                    app, _, route = str(target["component"]).partition("/")
                    operations.setdefault(joiner["metadata"]["name"], set()).add(("/" + route.lstrip("/"), "POST"))
                    operations.setdefault(app, set()).add(("/stats", "GET"))
        policies = [
            {
                "appId": app_id,
                "defaultAction": "deny",
                "trustDomain": TRUST_DOMAIN,
                "namespace": namespace,
                "operations": [
                    {"name": route, "httpVerb": [verb], "action": "allow"} for route, verb in sorted(routes)
                ],
            }
            for app_id, routes in sorted(operations.items())
        ]
        return {"defaultAction": "deny", "trustDomain": TRUST_DOMAIN, "policies": policies}

    def resiliencies(self, components: list[dict]) -> list[dict]:
        by_namespace: dict[str, list[str]] = {}
        for component in components:
            by_namespace.setdefault(_namespace(component) or "", []).append(component["metadata"]["name"])
        out = []
        for namespace, names in sorted(by_namespace.items()):
            resiliency: dict[str, Any] = {
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Resiliency",
                "metadata": {"name": CONFIG_NAME},
            }
            if namespace:
                resiliency["metadata"]["namespace"] = namespace
            resiliency["spec"] = {
                "policies": {
                    "retries": {"delivery": {"policy": "exponential", "maxInterval": "10s", "maxRetries": 10}}
                },
                "targets": {"components": {name: {"inbound": {"retry": "delivery"}} for name in names}},
            }
            out.append(resiliency)
        return out

    # ---- apps
    def joiner(self, joiner: dict) -> list[dict]:
        name = joiner["metadata"]["name"]
        label = f"Joiner/{name}"
        spec = copy.deepcopy({k: v for k, v in (joiner.get("spec") or {}).items() if k in KNOWN_SPEC_FIELDS["Joiner"]})
        stream = spec.get("stream") or {}
        if isinstance(stream, dict):
            self.check_fields(label, stream, KNOWN_JOINER_STREAM_FIELDS, "spec.stream.")
            spec["stream"] = stream = {k: v for k, v in stream.items() if k in KNOWN_JOINER_STREAM_FIELDS}
            stream["from"] = [self.joiner_source(label, entry) for entry in stream.get("from") or []]
        # what deploy/ does: redeliveries and the generators' retries (same CloudEvent id) are billed once
        spec.setdefault("dedup", dict(MIGRATED_DEDUP))
        self.note(
            f"{label}: dedup of redelivered events added (ttl {MIGRATED_DEDUP['ttl']}), as in this project's deploy/"
        )
        document = {"apiVersion": joiner["apiVersion"], "kind": "Joiner", "metadata": {"name": name}, "spec": spec}
        text = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
        try:
            # what the joiner checks at start-up, in one step: the settings, the expressions, the plan
            config_from_yaml(text, origin=label)
        except ConfigError as error:
            self.warn(label, f"the joiner would not start with this configuration: {error}")
        port = _port(spec.get("servicePort"), label, self)
        config_map = _resource("v1", "ConfigMap", name, joiner)
        config_map["data"] = {"joiner.yaml": text}
        env = [
            {"name": "JOINER_CONFIG", "value": f"{JOINER_CONFIG_DIR}/joiner.yaml"},
            # window buffers in bytes, well under the memory limit (as deploy/base sets them)
            {"name": "JOINER_MAX_WINDOW_BYTES", "value": JOINER_WINDOW_BYTES},
        ]
        deployment = self.deployment(
            joiner,
            name,
            self.image("joiner"),
            port,
            env,
            replicas=1,
            memory_limit=JOINER_MEMORY_LIMIT,
            strategy="Recreate",
            config_map=name,
            readiness_path="/readyz",
        )
        return [config_map, deployment]

    def joiner_source(self, label: str, entry: Any) -> Any:
        """The Stream's route where it is not the joiner's default (/<name>)."""
        if not isinstance(entry, str):
            return entry
        stream = self.streams.get(entry)
        if stream is None:
            self.warn(
                label, f"reads stream {entry!r}, which no Stream of the input defines: no Subscription delivers it"
            )
            return entry
        spec = stream.get("spec") or {}
        route = "/" + str(spec.get("route") or entry).lstrip("/")
        topic = str(spec.get("topic") or entry)
        if route == f"/{entry}" and topic == entry:
            return entry
        return {"name": entry, "pubsub": str(spec.get("clusterStream")), "topic": topic, "route": route}

    def processor(self, processor: dict) -> dict:
        name = processor["metadata"]["name"]
        label = f"Processor/{name}"
        spec = processor.get("spec") or {}
        container = spec.get("container") or {}
        if not isinstance(container, dict) or not container.get("image"):
            self.warn(label, "spec.container has no image: Deployment written with this project's message-proc")
            container = {}
        port = _port(spec.get("servicePort"), label, self)
        route = str(spec.get("serviceRoute") or "").strip("/")
        env = [{"name": "PROC_SERVICE_ROUTE", "value": route}] if route else []
        replicas = spec.get("replicas", 1)
        # no container given: this project's message-proc; the original's image: its replacement
        service = ORIGINAL_IMAGES.get(_image_repository(container["image"])) if container else "message-proc"
        if service is None:
            self.note(
                f"{label} runs its own image {container['image']}: it must listen on port {port} and serve "
                f"/{route}; no probes were added"
            )
            return self.foreign_deployment(processor, name, container, port, env, replicas)
        self.check_fields(label, container, KNOWN_CONTAINER_FIELDS, "spec.container.")
        return self.deployment(
            processor,
            name,
            self.image(service),
            port,
            env + list(container.get("env") or []),
            replicas=replicas,
            container_name=container.get("name") or name,
            extra=container,
            image_note=container.get("image"),
        )

    def app(self, original: dict) -> dict:
        name = original["metadata"]["name"]
        label = f"Deployment/{name}"
        containers = _containers(original)
        if len(containers) != 1:
            self.warn(label, f"has {len(containers)} containers, expected one: copied unchanged")
            return copy.deepcopy(original)
        container = containers[0]
        service = ORIGINAL_IMAGES.get(_image_repository(container.get("image", "")))
        if service is None:
            self.note(f"{label} runs its own image {container.get('image')}: copied unchanged")
            return copy.deepcopy(original)
        self.check_fields(label, container, KNOWN_CONTAINER_FIELDS, "container ")
        pod_spec = (original.get("spec") or {}).get("template", {}).get("spec") or {}
        self.check_fields(label, pod_spec, {"containers"}, "pod spec.")
        annotations = _annotations(original)
        port = _port(annotations.get("dapr.io/app-port"), label, self)
        return self.deployment(
            original,
            _app_id(original),
            self.image(service),
            port,
            list(container.get("env") or []),
            replicas=(original.get("spec") or {}).get("replicas", 1),
            container_name=container.get("name") or name,
            extra=container,
            image_note=container.get("image"),
            deployment_name=name,
            annotations={k: v for k, v in annotations.items() if not k.startswith("dapr.io/")},
        )

    def deployment(
        self,
        source: dict,
        app_id: str,
        image: str,
        port: int,
        env: list[dict],
        *,
        replicas: Any = 1,
        memory_limit: str = "256Mi",
        strategy: str | None = None,
        config_map: str | None = None,
        container_name: str | None = None,
        extra: dict | None = None,
        image_note: str | None = None,
        deployment_name: str | None = None,
        annotations: dict | None = None,
        readiness_path: str = "/healthz",
    ) -> dict:
        """This project's app Deployment: the shape of deploy/base/apps/*.yaml."""
        name = deployment_name or app_id
        if image_note:
            self.note(
                f"{source['kind']}/{source['metadata']['name']}: image {image_note} replaced by {image} (this project's service, same variables)"
            )
        variables = [{"name": "APP_HOST", "value": "0.0.0.0"}, *_token_env(), {"name": "APP_PORT", "value": str(port)}]
        variables += [v for v in env if v.get("name") not in {"APP_HOST", "APP_PORT", *TOKEN_VARIABLES}]
        container: dict[str, Any] = {
            "name": container_name or name,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "env": variables,
        }
        if extra and extra.get("envFrom"):
            container["envFrom"] = copy.deepcopy(extra["envFrom"])
        container["ports"] = [{"name": "http", "containerPort": port}]
        probe = {"httpGet": {"path": "/healthz", "port": "http"}}
        container["readinessProbe"] = {"httpGet": {"path": readiness_path, "port": "http"}, "periodSeconds": 10}
        container["livenessProbe"] = {**copy.deepcopy(probe), "initialDelaySeconds": 10, "periodSeconds": 20}
        container["resources"] = copy.deepcopy((extra or {}).get("resources")) or {
            "requests": {"cpu": "50m", "memory": "96Mi"},
            "limits": {"cpu": "500m", "memory": memory_limit},
        }
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        pod: dict[str, Any] = {
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,  # the app never calls the Kubernetes API
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
        }
        if config_map:
            container["volumeMounts"] = [{"name": "joiner-config", "mountPath": JOINER_CONFIG_DIR, "readOnly": True}]
            pod["volumes"] = [{"name": "joiner-config", "configMap": {"name": config_map}}]
        deployment = _resource("apps/v1", "Deployment", name, source)
        deployment["metadata"]["labels"] = deployment["metadata"].get("labels", {}) | {"app": name}
        spec: dict[str, Any] = {"replicas": replicas}
        if strategy:
            spec["strategy"] = {"type": strategy}
        spec["selector"] = {"matchLabels": {"app": name}}
        spec["template"] = {
            "metadata": {
                "labels": {"app": name},
                "annotations": {**(annotations or {}), **_dapr_annotations(app_id, port)},
            },
            "spec": pod,
        }
        deployment["spec"] = spec
        return deployment

    def foreign_deployment(
        self, source: dict, name: str, container: dict, port: int, env: list[dict], replicas: Any
    ) -> dict:
        container = copy.deepcopy(container)
        container.setdefault("name", name)
        kept = [v for v in container.get("env") or [] if v.get("name") not in {"PROC_SERVICE_ROUTE", *TOKEN_VARIABLES}]
        container["env"] = env + _token_env() + kept
        deployment = _resource("apps/v1", "Deployment", name, source)
        deployment["metadata"]["labels"] = deployment["metadata"].get("labels", {}) | {"app": name}
        deployment["spec"] = {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                # no app health check: whether this image serves /healthz is not known
                "metadata": {"labels": {"app": name}, "annotations": _dapr_annotations(name, port, health_check=False)},
                "spec": {"containers": [container]},
            },
        }
        return deployment

    def check_references(self, deployments: list[dict]) -> None:
        """Apps that invoke or publish to something the output does not have."""
        app_ids = {_app_id(d) for d in deployments if d["kind"] == "Deployment" and _dapr_app(d)}
        for joiner in self.joiners:
            label = f"Joiner/{joiner['metadata']['name']}"
            for target in ((joiner.get("spec") or {}).get("stream") or {}).get("to") or []:
                if isinstance(target, dict) and "component" in target:
                    app_id = str(target["component"]).partition("/")[0]
                    if app_id not in app_ids:
                        self.warn(
                            label, f"sends its rows to {target['component']!r}, but no app {app_id!r} is in the input"
                        )
                if isinstance(target, dict) and "stream" in target:
                    pubsub = str(target["stream"]).partition("/")[0]
                    if pubsub not in self.component_names:
                        self.warn(label, f"publishes its rows to {target['stream']!r}, but {pubsub!r} has no Component")
        for app in self.apps:
            for container in _containers(app):
                for variable in container.get("env") or []:
                    if (
                        variable.get("name") == "CLUSTER_STREAM"
                        and str(variable.get("value")) not in self.component_names
                    ):
                        self.warn(
                            f"Deployment/{app['metadata']['name']}",
                            f"publishes to {variable.get('value')!r}, which has no Component",
                        )

    # ---- helpers
    def image(self, service: str) -> str:
        return f"{self.registry}/{service}:{self.tag}"

    def check_fields(self, label: str, mapping: dict, known: set[str], prefix: str) -> None:
        for key in mapping:
            if key not in known:
                self.warn(label, f"field {prefix}{key} is not known to this tool: not carried over")

    def warn(self, label: str, message: str) -> None:
        self.out.warnings.append(f"{label}: {message}")

    def note(self, message: str) -> None:
        self.out.notes.append(message)


def _resource(api_version: str, kind: str, name: str, source: dict) -> dict:
    """A new resource with the source's namespace and labels."""
    metadata: dict[str, Any] = {"name": name}
    namespace = _namespace(source)
    if namespace:
        metadata["namespace"] = namespace
    labels = (source.get("metadata") or {}).get("labels")
    if labels:
        metadata["labels"] = copy.deepcopy(labels)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


TERMINATION_GRACE_SECONDS = 45  # dapr.io/block-shutdown-duration (30s) plus daprd's own graceful 5s


def _dapr_annotations(app_id: str, port: int, health_check: bool = True) -> dict[str, str]:
    annotations = {
        "dapr.io/enabled": "true",
        "dapr.io/app-id": app_id,
        "dapr.io/app-port": str(port),
        "dapr.io/app-protocol": "http",
        "dapr.io/config": CONFIG_NAME,
        "dapr.io/api-token-secret": API_TOKEN_SECRET,
        "dapr.io/app-token-secret": APP_TOKEN_SECRET,
        # the operator resolves secretKeyRefs; the sidecar's own store would need the service-account token
        "dapr.io/disable-builtin-k8s-secret-store": "true",
    }
    if health_check:
        annotations["dapr.io/enable-app-health-check"] = "true"
        annotations["dapr.io/app-health-check-path"] = "/healthz"
        # both containers get SIGTERM together: daprd stays until the app's health check fails (the app has
        # drained and gone) or 30s have passed, instead of leaving under the app's last calls
        annotations["dapr.io/block-shutdown-duration"] = "30s"
        annotations["dapr.io/app-health-probe-interval"] = "1"
        annotations["dapr.io/app-health-threshold"] = "2"
    annotations |= {
        "dapr.io/sidecar-cpu-request": "50m",
        "dapr.io/sidecar-memory-request": "64Mi",
        "dapr.io/sidecar-cpu-limit": "500m",
        "dapr.io/sidecar-memory-limit": "256Mi",
        # daprd's metrics, as deploy/ has them (deploy/overlays/monitoring scrapes them)
        "dapr.io/enable-metrics": "true",
        "dapr.io/metrics-port": "9090",
    }
    if health_check:  # this project's images, which serve /metrics (behind the app token)
        annotations |= {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
    return annotations


TOKEN_VARIABLES = ("DAPR_API_TOKEN", "APP_API_TOKEN")


def _token_env() -> list[dict]:
    """The app's copy of the tokens its sidecar holds (the injector gives them to daprd only)."""
    return [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}
        for variable, secret in zip(TOKEN_VARIABLES, (API_TOKEN_SECRET, APP_TOKEN_SECRET))
    ]


def _topic_scopes(uses: dict[str, tuple[set[str], set[str]]]) -> list[dict]:
    """A pub/sub Component's topic scopes: each app publishes and subscribes only its own topics; every app
    is named (one left out would be allowed every allowed topic)."""
    if not uses:
        return []

    def scopes(index: int) -> str:
        return ";".join(f"{app_id}={','.join(sorted(topics[index]))}" for app_id, topics in sorted(uses.items()))

    allowed = sorted({topic for topics in uses.values() for side in topics for topic in side})
    return [
        {"name": "allowedTopics", "value": ",".join(allowed)},
        {"name": "publishingScopes", "value": scopes(0)},
        {"name": "subscriptionScopes", "value": scopes(1)},
    ]


def _namespace(resource: dict) -> str | None:
    return (resource.get("metadata") or {}).get("namespace")


def _namespace_flag(resource: dict) -> str:
    namespace = _namespace(resource)
    return f" -n {namespace}" if namespace else ""


def _annotations(deployment: dict) -> dict[str, str]:
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return {str(k): str(v) for k, v in (template.get("annotations") or {}).items()}


def _dapr_app(deployment: dict) -> bool:
    return _annotations(deployment).get("dapr.io/enabled") == "true"


def _app_id(deployment: dict) -> str:
    return _annotations(deployment).get("dapr.io/app-id") or deployment["metadata"]["name"]


def _containers(deployment: dict) -> list[dict]:
    return list((((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [])


def _image_repository(image: str) -> str:
    """``registry/path/name`` without ``:tag`` or ``@digest``."""
    image = image.split("@", 1)[0]
    head, _, tail = image.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


def _port(value: Any, label: str, converter: _Converter) -> int:
    if value in (None, ""):
        return APP_PORT
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        converter.warn(label, f"port {value!r} is not a port number: {APP_PORT} used")
        return APP_PORT
    return port


def _url_password(value: str) -> str | None:
    """The password of a URL with user info (``amqp://user:secret@host``), else None."""
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:<password>@{host}"))
