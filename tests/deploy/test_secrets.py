"""No password in plain text: not in any manifest of deploy/, not in components/, not in what kustomize
renders from the base, not in what the migration writes. The original example had one (`@dm1n`)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.support import DEPLOY, ORIGINAL_MANIFESTS, ROOT, by_kind, workloads, yaml_files

ORIGINAL_PASSWORDS = ("@dm1n", "PfobN4Ttfq")  # the original example's manifests and its README
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@'\"]*:(?!<password>@)[^\s/'\"]+@", re.I)  # user:password@
SECRET_NAME = re.compile(r"pass|secret|token|connectionstring|clientkey", re.I)

MANIFESTS = yaml_files(DEPLOY) + yaml_files(ROOT / "components")


def plain_text_problems(text: str, resources: list[dict]) -> list[str]:
    """Where a password could be written in plain text; [] when nowhere."""
    problems = [f"contains the original's password {p!r}" for p in ORIGINAL_PASSWORDS if p in text]
    problems += [f"URL with a password: {m.group(0)}" for m in URL_WITH_PASSWORD.finditer(text)]
    for component in by_kind(resources, "Component").values():
        for item in component["spec"].get("metadata") or []:
            if SECRET_NAME.search(item["name"]) and "value" in item:
                problems.append(
                    f"Component/{component['metadata']['name']}: {item['name']} has a value, not a secretKeyRef"
                )
    for workload in workloads(resources):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env") or []:
                if SECRET_NAME.search(variable["name"]) and "value" in variable:
                    problems.append(
                        f"{workload['metadata']['name']}: env {variable['name']} has a value, not a secretKeyRef"
                    )
    for secret in by_kind(resources, "Secret").values():
        problems.append(f"Secret/{secret['metadata']['name']} is written out")
    return problems


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_manifest_or_component_holds_a_password(path):
    text = path.read_text()
    assert plain_text_problems(text, [d for d in yaml.safe_load_all(text) if d]) == []


def test_the_rendered_base_holds_no_password(base):
    assert plain_text_problems(yaml.safe_dump_all(base), base) == []


def test_the_check_finds_the_original_examples_password():
    text = ORIGINAL_MANIFESTS.read_text()
    problems = plain_text_problems(text, [d for d in yaml.safe_load_all(text) if d])
    assert "contains the original's password '@dm1n'" in problems
    assert any(p.startswith("URL with a password: amqp://admin:@dm1n@") for p in problems)


def test_the_check_finds_a_password_in_a_component_value_an_env_value_and_a_secret():
    resources = [
        {
            "kind": "Component",
            "metadata": {"name": "c"},
            "spec": {"metadata": [{"name": "redisPassword", "value": "x"}]},
        },
        {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "template": {"spec": {"containers": [{"env": [{"name": "RABBITMQ_DEFAULT_PASS", "value": "x"}]}]}}
            },
        },
        {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "x"}},
    ]
    assert plain_text_problems("", resources) == [
        "Component/c: redisPassword has a value, not a secretKeyRef",
        "d: env RABBITMQ_DEFAULT_PASS has a value, not a secretKeyRef",
        "Secret/s is written out",
    ]


def test_the_migration_writes_no_password(migrated_power_usage, migrated_small):
    for migration, passwords in (
        (migrated_power_usage, ["@dm1n"]),
        (migrated_small, ["s3cr3t-redis", "0rd3r-pw", "stored-in-a-secret"]),
    ):
        text = migration.to_yaml()
        assert plain_text_problems(text, migration.resources) == []
        for password in passwords:
            assert password not in text
            assert not any(password in line for line in migration.notes + migration.warnings)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("amqp://admin:@dm1n@rabbitmq:5672", True),
        ("url=amqp://power-usage:f00@rabbitmq:5672", True),
        ("redis://:pw@redis:6379", True),
        ("amqp://admin:<password>@rabbitmq:5672", False),  # the migration's placeholder
        ("redisHost: redis:6379", False),
    ],
)
def test_the_url_pattern_finds_user_and_password(text, found):
    assert bool(URL_WITH_PASSWORD.search(text)) is found
