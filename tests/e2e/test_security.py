"""Secure as shipped, on the real runtime: what each sidecar and app refuses in the stack of dapr.yaml.

* accessControl (components/config.yaml, mTLS from the stack's sentry): only the joiner may POST to
  billable-proc's /billables; billable-proc may GET /stats (its dashboard shows the joiner's), and nothing
  else may invoke the joiner or the generators.
* Topic scopes (components/*-stream.yaml): each app publishes only its own topics.
* Tokens: daprd refuses an API call without the run's DAPR_API_TOKEN; each app refuses every route but its
  probes without APP_API_TOKEN (so nothing that bypasses the sidecar gets in).
* Secrets: the secrets API returns nothing of the local store (scopes deny it; the store reads POWER_USAGE_*
  variables only).
"""

from __future__ import annotations

import httpx
import pytest

from devstack.stack import RunningApp, Stack, data_received
from tests.e2e.support import poll, redis_command

pytestmark = pytest.mark.e2e

JOINER = "join-tenants-poweruse"
DENIED = "access control policy has denied access"


def invoke(
    caller: RunningApp, target: str, method: str, verb: str = "POST", body: bytes = b"not json"
) -> httpx.Response:
    return caller.call_sidecar(
        verb, f"/v1.0/invoke/{target}/method/{method}", content=body, headers={"content-type": "application/json"}
    )


def test_billable_proc_takes_the_joiners_post_and_refuses_every_other_caller(stack: Stack):
    # the joiner's POST reaches the app, which refuses a body that is not JSON (400: nothing billed)
    allowed = invoke(stack.apps[JOINER], "billable-proc", "billables")
    assert allowed.status_code == 400 and DENIED not in allowed.text, allowed.text
    # (billable-proc's own sidecar calls its app directly: no caller identity, no policy; it takes the token)
    for caller in ("tenants-gen", "poweruse-gen"):
        refused = invoke(stack.apps[caller], "billable-proc", "billables")
        assert refused.status_code == 403 and DENIED in refused.text, (caller, refused.status_code, refused.text)
    # the joiner may POST, and only POST, and only /billables
    for verb, method in (("GET", "billables"), ("PUT", "billables"), ("POST", "stats")):
        refused = invoke(stack.apps[JOINER], "billable-proc", method, verb)
        assert refused.status_code == 403 and DENIED in refused.text, (verb, method, refused.text)


# what billable-proc may ask of the others: GET /stats (the Configuration is every app's, so the generators'
# too; on Kubernetes the NetworkPolicies let it reach the joiner's sidecar only)
ALLOWED = {("billable-proc", "GET", "stats")}


@pytest.mark.parametrize("target", [JOINER, "tenants-gen", "poweruse-gen"])
def test_nothing_may_invoke_the_joiner_or_the_generators_but_billable_procs_get_of_stats(stack: Stack, target: str):
    for caller in stack.apps:
        if caller == target:
            continue  # a sidecar calls its own app directly, no identity to check
        for verb, method in (
            ("POST", "tenants"),
            ("POST", "poweruse"),
            ("GET", "stats"),
            ("POST", "stats"),
            ("GET", "deadletters"),
            ("POST", "deadletters/resend"),
            ("GET", "metrics"),
        ):
            if (caller, verb, method) in ALLOWED:
                continue
            refused = invoke(stack.apps[caller], target, method, verb)
            assert refused.status_code == 403 and DENIED in refused.text, (caller, target, method, refused.text)


def test_billable_proc_reads_the_joiners_stats_through_dapr(stack: Stack):
    answer = invoke(stack.apps["billable-proc"], JOINER, "stats", "GET", b"")
    assert answer.status_code == 200, answer.text
    assert "windows_closed" in answer.json() and "accepted" in answer.json()


@pytest.mark.parametrize(
    "publisher,pubsub,topic",
    [
        ("tenants-gen", "redis-stream", "billables"),  # another app's topic
        ("tenants-gen", "redis-stream", "tenants-deadletter"),  # the joiner's dead letters
        ("tenants-gen", "redis-stream", "anything-else"),  # not an allowed topic
        ("poweruse-gen", "rabbit-stream", "poweruse-deadletter"),
        (JOINER, "redis-stream", "tenants"),  # the joiner cannot inject tenants
        (JOINER, "rabbit-stream", "poweruse"),  # ...nor readings
        ("billable-proc", "redis-stream", "tenants"),  # the component is not even scoped to it
    ],
)
def test_a_publish_outside_the_apps_topic_scopes_is_refused(stack: Stack, publisher: str, pubsub: str, topic: str):
    answer = stack.apps[publisher].call_sidecar(
        "POST", f"/v1.0/publish/{pubsub}/{topic}", json={"tenant_id": "scope-probe", "customer_id": 1}
    )
    # 403: the topic is outside the app's scopes; 404: the component is not scoped to the app at all
    assert (answer.status_code, answer.json()["errorCode"]) in (
        (403, "ERR_PUBSUB_FORBIDDEN"),
        (404, "ERR_PUBSUB_NOT_FOUND"),
    ), answer.text


def test_the_generators_publish_their_own_topics(stack: Stack):
    """The refusals above are the scopes', not a broken publish: each generator's own topic is taken."""
    for publisher, pubsub, topic in (
        ("tenants-gen", "redis-stream", "tenants"),
        ("poweruse-gen", "rabbit-stream", "poweruse"),
    ):
        answer = stack.apps[publisher].call_sidecar(
            "POST", f"/v1.0/publish/{pubsub}/{topic}", json={"tenant_id": "dc:scope:probe", "customer_id": 1}
        )
        assert answer.status_code == 204, (publisher, answer.text)


def app_routes(running: RunningApp) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves: its OpenAPI document, its docs pages, the joiner's
    stream routes (plain Starlette routes, not in the document)."""
    document = running.get("/openapi.json")
    assert document.status_code == 200, document.text
    routes = [(verb.upper(), path) for path, verbs in document.json()["paths"].items() for verb in verbs]
    routes += [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")]
    if running.spec.app_id == JOINER:
        routes += [("POST", "/tenants"), ("POST", "/poweruse")]
    if running.spec.app_id == "billable-proc":
        routes += [("GET", "/dashboard"), ("GET", "/dashboard/static/dashboard.js")]
    return routes


# billable-proc's dashboard: read-only, open as the probes are (a browser has no token to send)
OPEN = {"/healthz", "/readyz"}
DASHBOARD = {"/dashboard", "/dashboard/data", "/dashboard/events", "/dashboard/static/dashboard.js"}


@pytest.mark.parametrize("app_id", ["billable-proc", JOINER, "tenants-gen", "poweruse-gen"])
def test_every_route_but_the_probes_and_the_dashboard_needs_the_app_token(stack: Stack, app_id: str):
    running = stack.apps[app_id]
    base = f"http://127.0.0.1:{running.app_port}"
    routes = app_routes(running)
    assert len(routes) >= 5, routes
    for method, path in routes:
        if path == "/dashboard/events":
            continue  # a stream that does not end: its refusal is below
        for headers in ({}, {"dapr-api-token": "wrong"}):
            answer = httpx.request(method, base + path, headers=headers, content=b"[]", timeout=5)
            if path in OPEN or (app_id == "billable-proc" and path in DASHBOARD):
                assert answer.status_code != 401, (method, path)
            else:
                assert answer.status_code == 401, (app_id, method, path, headers, answer.status_code)
    if app_id == "billable-proc":
        with httpx.stream("GET", base + "/dashboard/events", timeout=5) as events:
            assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
        # open for reading only: no other verb does anything there
        for path in DASHBOARD:
            assert httpx.post(base + path, content=b"[]", timeout=5).status_code == 405, path
    else:
        assert httpx.get(base + "/dashboard", timeout=5).status_code == 401


def test_every_sidecar_api_needs_the_dapr_token(stack: Stack):
    for running in stack.apps.values():
        for path in (
            "/v1.0/metadata",
            f"/v1.0/invoke/{running.spec.app_id}/method/stats",
            "/v1.0/publish/redis-stream/tenants",
            "/v1.0/secrets/local-env/bulk",
        ):
            answer = (
                httpx.post(running.sidecar_url + path, json={}, timeout=5)
                if "publish" in path
                else httpx.get(running.sidecar_url + path, timeout=5)
            )
            assert answer.status_code == 401, (running.spec.app_id, path, answer.status_code, answer.text)
        assert httpx.get(running.sidecar_url + "/v1.0/healthz", timeout=5).status_code == 204


def test_the_secrets_api_gives_no_secret_of_the_local_store(stack: Stack):
    for running in stack.apps.values():
        bulk = running.call_sidecar("GET", "/v1.0/secrets/local-env/bulk")
        assert bulk.status_code in (200, 403), bulk.text
        assert bulk.status_code == 403 or bulk.json() == {}, (running.spec.app_id, bulk.text[:300])
        for name in ("REDIS_HOST", "RABBITMQ_URL", "REDIS_PASSWORD", "PATH", "HOME"):
            one = running.call_sidecar("GET", f"/v1.0/secrets/local-env/{name}")
            assert one.status_code == 403, (running.spec.app_id, name, one.status_code, one.text[:300])


def redis_as(stack: Stack, user: str, *command: str) -> str:
    return redis_command(stack, *command, user=user).strip()


def test_the_redis_users_of_the_components_have_what_they_need_and_no_more(stack: Stack):
    # the pipeline ran on them (the other tests of this stack): Redis refused none of the components' commands
    # (once windows went through: the joiner's journal and checkpoints, billable-proc's record of billed calls)
    poll(lambda: data_received(stack.apps["billable-proc"].log_text()), 120, "rows billed", stack)
    assert stack.apps["billable-proc"].get("/stats").json()["calls"] > 0
    refusals = redis_command(stack, "ACL", "LOG")
    assert refusals.strip() == "", refusals
    assert redis_command(stack, "AUTH", "default", "wrong").startswith("WRONGPASS")
    # the pub/sub's user: its topics' streams only, no keyspace-wide or administrative command
    assert redis_as(stack, "pubsub", "XLEN", "tenants").isdigit()
    for command in (
        ("GET", "billable-proc||x"),
        ("XLEN", "other-topic"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "dir"),
        ("KEYS", "*"),
    ):
        assert redis_as(stack, "pubsub", *command).startswith("NOPERM"), command
    # the state stores' user: their apps' keys only, and no stream command
    assert not redis_as(stack, "state", "HGETALL", "billable-proc||none").startswith("NOPERM")
    for command in (
        ("XLEN", "tenants"),
        ("HGETALL", "tenants-gen||x"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "dir"),
        ("KEYS", "*"),
    ):
        assert redis_as(stack, "state", *command).startswith("NOPERM"), command
