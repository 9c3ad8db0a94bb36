"""What the deploy tests share: kustomize rendering, Kubernetes and Dapr schema validation, lookups.

* Kubernetes kinds are validated against the API schemas of ``K8S_VERSION`` shipped by the
  ``kubernetes-validate`` package, in its strict form (unknown fields are errors).
* Dapr kinds are validated against the ``openAPIV3Schema`` of the CRDs of Dapr's Helm chart at the pinned
  runtime version (``dapr.version``), which ``scripts/install-dapr-crds.sh`` takes from the
  ``github.com/dapr/dapr`` module (``charts/dapr/crds/``) into ``~/.cache/power-usage/dapr-crds/v<version>``.
  The API server prunes fields a CRD does not declare, silently; here every object schema that lists its
  properties is closed, so such a field is an error.
* KEDA kinds (deploy/overlays/keda) likewise, against the CRDs of ``config/crd/bases/`` of the
  ``github.com/kedacore/keda/v2`` module at ``deploy/keda.version``, which ``scripts/install-keda-crds.sh``
  takes into ``~/.cache/power-usage/keda-crds/<version>``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAPR_VERSION = (ROOT / "dapr.version").read_text().strip()
DAPR_MODULE = f"github.com/dapr/dapr@v{DAPR_VERSION}"
DAPR_CRDS = Path(
    os.environ.get("DAPR_CRDS_DIR", Path.home() / ".cache" / "power-usage" / "dapr-crds" / f"v{DAPR_VERSION}")
)
# the power-usage example in the original project's format (the project's own fixture)
ORIGINAL_MANIFESTS = ROOT / "tests" / "data" / "original-power-usage.yaml"
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.37.0"
DAPR_GROUP = "dapr.io"
KEDA_GROUP = "keda.sh"
KEDA_VERSION = (DEPLOY / "keda.version").read_text().strip()
KEDA_MODULE = f"github.com/kedacore/keda/v2@{KEDA_VERSION}"
KEDA_CRDS = Path(os.environ.get("KEDA_CRDS_DIR", Path.home() / ".cache" / "power-usage" / "keda-crds" / KEDA_VERSION))
SERVICES = ("joiner", "message-gen", "message-proc")


# ---- kustomize


def kustomize_path() -> Path:
    version = (DEPLOY / "kustomize.version").read_text().strip()
    bin_dir = Path(os.environ.get("KUSTOMIZE_BIN_DIR", Path.home() / ".cache" / "power-usage" / "bin"))
    path = bin_dir / "kustomize"
    assert os.access(path, os.X_OK), (
        f"kustomize {version} not found at {path}: `make setup` installs it (deploy/install-kustomize.sh)"
    )
    found = subprocess.run([str(path), "version"], capture_output=True, text=True).stdout.strip()
    assert found == version, f"{path} is kustomize {found!r}, deploy/kustomize.version pins {version}: run `make setup`"
    return path


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run([str(kustomize_path()), "build", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kustomize build {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def copy_deploy_with_dev_secrets(destination: Path) -> Path:
    """deploy/ copied to ``destination`` and the dev overlay's secrets generated there (never in the repo)."""
    target = destination / "deploy"
    shutil.copytree(DEPLOY, target, ignore=shutil.ignore_patterns("secrets"))
    done = subprocess.run(
        ["sh", str(target / "overlays" / "dev" / "generate-secrets.sh")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return target


# ---- YAML


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.yaml") if p.name != "kustomization.yaml")


# ---- validation


def validate(resources: Iterable[dict[str, Any]]) -> list[str]:
    """Every problem of every resource, one line each ("Kind/name: problem"); [] when all are valid."""
    problems: list[str] = []
    seen: set[tuple[str, str, str | None]] = set()
    for resource in resources:
        label = f"{resource.get('kind')}/{(resource.get('metadata') or {}).get('name')}"
        key = (str(resource.get("kind")), label, (resource.get("metadata") or {}).get("namespace"))
        if key in seen:
            problems.append(f"{label}: defined twice")
        seen.add(key)
        if str(resource.get("apiVersion", "")).partition("/")[0] == DAPR_GROUP:
            problems += [f"{label}: {p}" for p in validate_dapr(resource)]
        else:
            problems += [f"{label}: {p}" for p in validate_kubernetes(resource)]
    return problems


def validate_kubernetes(resource: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.absolute_path)
        return [f"{path or '(resource)'}: {error.message}"]
    return []


def validate_dapr(resource: dict[str, Any]) -> list[str]:
    return validate_custom(resource, dapr_schemas(), f"Dapr CRD in {DAPR_CRDS}")


def validate_keda(resource: dict[str, Any]) -> list[str]:
    """Every problem of a KEDA resource against the pinned KEDA CRDs (closed, as for Dapr); [] when valid."""
    return validate_custom(resource, keda_schemas(), f"KEDA CRD in {KEDA_CRDS}")


def validate_custom(resource: dict[str, Any], schemas: dict[tuple[str, str, str], Any], what: str) -> list[str]:
    """Every problem of a custom resource against the served CRD schemas it is of; [] when valid."""
    group, _, version = str(resource.get("apiVersion", "")).partition("/")
    schema = schemas.get((group, version, resource.get("kind")))
    if schema is None:
        return [f"no {what} serves {resource.get('apiVersion')} {resource.get('kind')}"]
    problems = []
    if not (resource.get("metadata") or {}).get("name"):
        problems.append("metadata.name is missing")
    for error in sorted(jsonschema.Draft7Validator(schema).iter_errors(resource), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(part) for part in error.absolute_path)
        problems.append(f"{path or '(resource)'}: {error.message}")
    return problems


@functools.cache
def dapr_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> the CRD's openAPIV3Schema, closed (see the module doc)."""
    hint = "`make setup-deploy` installs them (scripts/install-dapr-crds.sh)"
    return load_crd_schemas(DAPR_CRDS, DAPR_MODULE, f"the Dapr {DAPR_VERSION} CRDs", hint)


@functools.cache
def keda_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> the KEDA CRD's openAPIV3Schema, closed."""
    return load_keda_schemas(KEDA_CRDS)


def load_keda_schemas(directory: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    hint = "`make setup-deploy` installs them (scripts/install-keda-crds.sh)"
    return load_crd_schemas(directory, KEDA_MODULE, f"the KEDA {KEDA_VERSION} CRDs", hint)


def load_crd_schemas(directory: Path, module: str, what: str, hint: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The served versions' schemas, closed, of the CRDs an install script put in ``directory`` from ``module``."""
    assert (directory / "SOURCE").is_file(), f"{what} are not in {directory}: {hint}"
    source = (directory / "SOURCE").read_text().splitlines()
    assert f"module {module}" in source, f"{directory} holds CRDs of {source[:1]}, not {module}: {hint}"
    schemas = {}
    for path in sorted(directory.glob("*.yaml")):
        for crd in load_documents(path):
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    schemas[(spec["group"], version["name"], spec["names"]["kind"])] = closed(
                        version["schema"]["openAPIV3Schema"]
                    )
    assert schemas, f"no CustomResourceDefinition found in {directory}: {hint}"
    return schemas


def closed(schema: Any) -> Any:
    """A copy where each object schema with listed properties refuses other properties."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if "properties" in schema:
        # property names are data here, not schemas: keep them, close their schemas
        result["properties"] = {name: closed(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            result["additionalProperties"] = False
    return result


# ---- lookups


# on Kubernetes the joiner runs as replicas, which read the tenants through a copy of redis-stream with a
# consumer group per replica (consumerID {podName}); locally, and in a migration, one joiner reads them through
# redis-stream itself (devstack --joiner-replicas makes the same copy): docs/scaling.md
REPLICA_COPIES = {"redis-stream-joiner": "redis-stream"}
REPLICA_ONLY = {"consumerID", "allowedTopics", "publishingScopes", "subscriptionScopes"}


def by_kind(resources: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r.get("kind") == kind}


def dapr_apps(resources: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """app id -> Deployment (or StatefulSet: the joiner), for those with dapr.io/enabled."""
    apps = {}
    for deployment in workloads(resources):
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        if annotations.get("dapr.io/enabled") == "true":
            apps[annotations["dapr.io/app-id"]] = deployment
    return apps


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: expected one container"
    return containers[0]


def env(container_spec: dict[str, Any]) -> dict[str, str]:
    """Plain env values (valueFrom entries are left out)."""
    return {v["name"]: v["value"] for v in container_spec.get("env") or [] if "value" in v}


def annotations(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"].get("annotations") or {}


def workloads(resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r.get("kind") in ("Deployment", "StatefulSet")]
