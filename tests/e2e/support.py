"""What the end-to-end and fault tiers share: a run file of part of dapr.yaml, and polling with a deadline."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
import yaml

from devstack.stack import RunningApp, Stack

ROOT = Path(__file__).resolve().parents[2]
# who may publish on each pub/sub (its topic scopes): a test publishes as that app, through its sidecar
PUBLISHERS = {"redis-stream": "tenants-gen", "rabbit-stream": "poweruse-gen"}
TOPIC_PUBLISHERS = {"tenants": "tenants-gen", "poweruse": "poweruse-gen"}  # on kafka-stream, both may publish


def publisher_stack(
    run_dir: Path,
    app_ids: Iterable[str],
    overrides: dict[str, dict[str, str]],
    joiner_replicas: int = 1,
    streams_on: str = "redis+rabbitmq",
) -> Stack:
    """A Stack of ``app_ids`` from dapr.yaml plus the generators' sidecars without the generators: the test
    publishes what it needs through them, with their identities, as the topic scopes require."""
    run_file = run_file_of((*app_ids, *PUBLISHERS.values()), run_dir)
    return Stack(
        run_file,
        run_dir / "run",
        overrides,
        quiet=True,
        sidecars_only=tuple(PUBLISHERS.values()),
        joiner_replicas=joiner_replicas,
        streams_on=streams_on,
    )


def no_redis_refusals(stack: Stack) -> None:
    """Redis refused none of the components' commands (its users are of least privilege: redis-users.acl)."""
    refusals = redis_command(stack, "ACL", "LOG")
    assert refusals.strip() == "", f"Redis refused commands of a component:\n{refusals[:2000]}"


def publish_url(stack: Stack, pubsub: str, topic: str, bulk: bool = False) -> tuple[str, dict[str, str]]:
    """The publish endpoint of the sidecar allowed to publish on ``pubsub``, and the headers it needs."""
    sidecar = stack.apps[PUBLISHERS.get(pubsub) or TOPIC_PUBLISHERS[topic]]
    path = f"/v1.0-alpha1/publish/bulk/{pubsub}/{topic}" if bulk else f"/v1.0/publish/{pubsub}/{topic}"
    return sidecar.sidecar_url + path, sidecar.dapr_headers


def publish_bulk(
    stack: Stack, pubsub: str, topic: str, events: list[dict], ids: list[str] | None = None, key: str | None = None
) -> None:
    """``events`` through the publisher's sidecar, in bulk publishes of 100; each must be taken (204).
    With ``ids``, each goes as a CloudEvent of that id (daprd keeps the id of a CloudEvent it is given);
    with ``key``, each is keyed by its value of that field (Kafka's ``partitionKey``)."""
    url, headers = publish_url(stack, pubsub, topic, bulk=True)

    def entry(n: int, event: dict) -> dict:
        keyed = {"metadata": {"partitionKey": str(event[key])}} if key else {}
        if ids is None:
            return {"entryId": str(n), "event": event, "contentType": "application/json", **keyed}
        cloudevent = {"specversion": "1.0", "id": ids[n], "source": "tests", "type": "com.dapr.event.sent"}
        cloudevent |= {"datacontenttype": "application/json", "data": event}
        return {"entryId": str(n), "event": cloudevent, "contentType": "application/cloudevents+json", **keyed}

    with httpx.Client(timeout=30, headers=headers) as client:
        for start in range(0, len(events), 100):
            entries = [entry(start + n, event) for n, event in enumerate(events[start : start + 100])]
            answer = client.post(url, json=entries)
            assert answer.status_code == 204, answer.text


def redis_command(stack: Stack, *args: str, user: str | None = None) -> str:
    """``redis-cli`` against the stack's Redis, as its default user or as ``user`` (pubsub, state); the
    password goes in the environment, not on the command line."""
    assert stack.redis is not None
    password = stack.redis.secrets[f"REDIS_{user.upper()}_PASSWORD"] if user else stack.redis.admin_password
    env = {**os.environ, "REDISCLI_AUTH": password} if password else None
    login = ["--user", user] if user else []
    return subprocess.run(
        ["redis-cli", "-h", stack.redis.host, "-p", str(stack.redis.port), *login, "--raw", *args],
        capture_output=True,
        text=True,
        timeout=10,
        env=env,
    ).stdout


def redis_stream(stack: Stack, key: str) -> list[str]:
    """The JSON documents of a Redis stream's entries (the field values that are JSON objects)."""
    return [line for line in redis_command(stack, "XRANGE", key, "-", "+").splitlines() if line.startswith("{")]


def run_file_of(app_ids: Iterable[str], run_dir: Path) -> Path:
    """A copy of dapr.yaml in ``run_dir`` with only these apps (its paths made absolute)."""
    keep = set(app_ids)
    spec = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    spec["common"] = {key: str(ROOT / value) for key, value in spec["common"].items()}
    spec["apps"] = [app for app in spec["apps"] if app["appID"] in keep]
    for app in spec["apps"]:
        app["appDirPath"] = str(ROOT / app["appDirPath"])
    path = run_dir / "dapr.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def death_of(running: RunningApp) -> str | None:
    """How an app or its sidecar ended (a sidecar's Go panic line first), None while both run."""
    if death := running.app.death():
        return death
    if death := running.sidecar.death():
        log = running.sidecar.log_path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in log if line.startswith("panic:")][:1] + [death])
    return None


def poll(condition, timeout: float, what: str, stack: Stack, down: Iterable[str] = ()):
    """``condition``'s first true value within ``timeout``; fails at once when an app or a sidecar dies,
    but those of ``down`` (taken away by the test itself)."""
    taken_away = set(down)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        for app_id, running in stack.apps.items():
            if app_id not in taken_away and (death := death_of(running)):
                pytest.fail(death)
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout:.0f}s")
