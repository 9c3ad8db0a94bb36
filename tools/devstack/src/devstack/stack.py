"""The whole suite on one host: brokers, then for each app of dapr.yaml the app and its daprd."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from devstack.brokers import (
    Broker,
    configured_rabbitmq,
    configured_redis,
    private_file,
    start_rabbitmq,
    start_redis,
)
from devstack.daprd import ensure_daprd
from devstack.kafka import start_kafka
from devstack.processes import Process, StackError, free_port, wait_until
from devstack.resources import KAFKA_PUBSUB, broadcast_tables, kafka_streams
from devstack.runfile import AppSpec, RunFile, read_run_file
from devstack.sentry import Sentry, start_sentry

# the local secret store (components/local-env.yaml) reads only variables with this prefix
SECRET_PREFIX = "POWER_USAGE_"
JOINER_APP_ID = "join-tenants-poweruse"  # the app that may run as several replicas (joiner_replicas)


# on Kafka (streams_on="kafka"): the generators publish to kafka-stream keyed by tenant_id, and the joiner's
# replicas own their partitions' keys, so no stream is broadcast and its dead letters go to Kafka too
KAFKA_ENV = {
    "tenants-gen": {"CLUSTER_STREAM": KAFKA_PUBSUB, "MESSAGE_PARTITION_KEY": "tenant_id"},
    "poweruse-gen": {"CLUSTER_STREAM": KAFKA_PUBSUB, "MESSAGE_PARTITION_KEY": "tenant_id"},
    JOINER_APP_ID: {
        "JOINER_BROADCAST": "none",
        "JOINER_DEAD_LETTER_TO_STREAM": f"poweruse={KAFKA_PUBSUB}/poweruse-deadletter",
    },
}


def say(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


@dataclass
class RunningApp:
    spec: AppSpec
    app_port: int
    http_port: int
    grpc_port: int
    app: Process  # never started for a sidecar alone (a publisher's identity for a test)
    sidecar: Process
    app_token: str
    dapr_token: str

    @property
    def app_headers(self) -> dict[str, str]:
        """What the app's sidecar sends it: the app API token."""
        return {"dapr-api-token": self.app_token}

    @property
    def dapr_headers(self) -> dict[str, str]:
        """What the app sends its sidecar: the Dapr API token."""
        return {"dapr-api-token": self.dapr_token}

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> httpx.Response:
        """GET on the app itself, as its sidecar would call it (with the app token)."""
        return httpx.get(f"http://127.0.0.1:{self.app_port}{path}", headers=self.app_headers, timeout=5)

    def call_sidecar(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A call to this app's sidecar, as the app makes it (with the Dapr API token)."""
        headers = {**self.dapr_headers, **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"{self.sidecar_url}{path}", headers=headers, timeout=kwargs.pop("timeout", 10), **kwargs
        )

    def log_text(self) -> str:
        return self.app.log_path.read_text(errors="replace") if self.app.log_path.exists() else ""

    def stop(self) -> None:
        self.app.stop()
        self.sidecar.stop()


class Stack:
    """Context manager; ``env_overrides`` maps app id -> extra env (e.g. a short window for tests);
    ``sidecars_only``: apps of the run file whose sidecar runs without the app (a test publishes through it,
    with that app's identity and topic scopes).

    Secure as shipped: a sentry for mTLS (the Configuration's accessControl checks callers), a Dapr API
    token and an app API token generated for the run (or taken from ``DAPR_API_TOKEN``/``APP_API_TOKEN``),
    brokers with generated credentials, every listener on 127.0.0.1, the run's files private (0700).

    ``joiner_replicas`` > 1: the joiner (app id ``join-tenants-poweruse``) runs as that many replicas, each
    its own app and daprd under the same app id, named ``join-tenants-poweruse-<n>`` (their key in
    :attr:`apps`, their ``JOINER_REPLICA``, and their daprd's ``POD_NAME``), with the Redis pub/sub's
    ``consumerID`` set to ``{podName}`` in a copy of the resources: the tenants reach every replica, the
    readings (one RabbitMQ queue per app id) are shared among them (docs/scaling.md)."""

    def __init__(
        self,
        run_file: Path,
        run_dir: Path,
        env_overrides: dict[str, dict[str, str]] | None = None,
        quiet: bool = False,
        resources: Path | None = None,
        sidecars_only: tuple[str, ...] = (),
        joiner_replicas: int = 1,
        streams_on: str = "redis+rabbitmq",
    ) -> None:
        if joiner_replicas < 1:
            raise StackError(f"joiner replicas: {joiner_replicas}, expected 1 or more")
        if streams_on not in ("redis+rabbitmq", "kafka"):
            raise StackError(f"streams on {streams_on!r}: expected redis+rabbitmq or kafka")
        self.joiner_replicas = joiner_replicas
        self.streams_on = streams_on  # kafka: both streams on one Kafka pub/sub (devstack.resources.kafka_streams)
        self.run_file: RunFile = read_run_file(run_file)
        self.resources = resources or self.run_file.resources_path  # another folder of Dapr resources
        self.run_dir = run_dir.resolve()
        self.env_overrides = env_overrides or {}
        self.quiet = quiet
        self.sidecars_only = set(sidecars_only)
        self.apps: dict[str, RunningApp] = {}
        self.sentry: Sentry | None = None
        self.dapr_token = os.environ.get("DAPR_API_TOKEN") or secrets.token_urlsafe(32)
        self.app_token = os.environ.get("APP_API_TOKEN") or secrets.token_urlsafe(32)
        self.brokers: list[Broker] = []
        self.redis: Broker | None = None
        self.rabbitmq: Broker | None = None
        self.kafka: Broker | None = None
        self.daprd_version = ""
        self._app_launch: dict[str, tuple[list[str], dict[str, str]]] = {}  # to restart an app

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _say(self, message: str) -> None:
        if not self.quiet:
            say(message)

    def start(self) -> None:
        clear_previous_run(self.run_dir)
        daprd, self.daprd_version = ensure_daprd()
        self._say(f"daprd {self.daprd_version} ({daprd})")
        # brokers configured in the environment are used as they are; otherwise private ones
        self.redis = configured_redis() or start_redis(self.run_dir)
        self.brokers.append(self.redis)
        self._say(f"redis on {self.redis.host}:{self.redis.port}{'' if self.redis.process else ' (REDIS_HOST)'}")
        if self.streams_on == "kafka":  # Redis still keeps the state stores
            self.kafka = start_kafka(self.run_dir)
            self.brokers.append(self.kafka)
            self._say(f"kafka on {self.kafka.url} (both streams)")
            self.resources = kafka_streams(self.resources, self.run_dir / "resources-kafka", self.kafka.url)
        else:
            self.rabbitmq = configured_rabbitmq() or start_rabbitmq(self.run_dir)
            self.brokers.append(self.rabbitmq)
            self._say(
                f"rabbitmq on {self.rabbitmq.host}:{self.rabbitmq.port}"
                f"{'' if self.rabbitmq.process else ' (RABBITMQ_URL)'}"
            )
        # for a person who wants to call a route or a sidecar by hand: `source <run dir>/tokens.env`
        private_file(self.run_dir / "tokens.env", f"DAPR_API_TOKEN={self.dapr_token}\nAPP_API_TOKEN={self.app_token}\n")
        self.sentry = start_sentry(self.run_dir)
        self._say(f"sentry on {self.sentry.address} (mTLS between sidecars)")
        config = self._render_config()
        if self.joiner_replicas > 1:
            self.resources = broadcast_tables(self.resources, self.run_dir / "resources")
        # as `dapr run` does, sidecars get the environment it runs in (dapr.yaml's env is the apps'):
        # the brokers' addresses are what a user exports before `dapr run -f .`
        sidecar_env = {
            **os.environ,
            "DAPR_HOST_IP": "127.0.0.1",  # no non-loopback address needed
            **{SECRET_PREFIX + name: value for broker in self.brokers for name, value in broker.secrets.items()},
            "DAPR_TRUST_ANCHORS": self.sentry.trust_anchors(),
            "DAPR_API_TOKEN": self.dapr_token,
            "APP_API_TOKEN": self.app_token,
        }
        # dapr.yaml lists receivers before senders, so nothing is published before it can be delivered
        self._launch = (daprd, config, sidecar_env)  # what add_replica starts another replica with
        for spec in self.run_file.apps:
            for instance in self.instances_of(spec.app_id):
                self.apps[instance] = self._start_app(spec, daprd, config, sidecar_env, instance)

    def add_replica(self) -> str:
        """Start one more joiner replica (the next name: a new identity, so a new Redis consumer group, which
        reads the tenants stream from its start); returns its name once it and its daprd answer."""
        if self.joiner_replicas == 1:
            raise StackError("add_replica needs a stack started with joiner_replicas > 1")
        [spec] = [spec for spec in self.run_file.apps if spec.app_id == JOINER_APP_ID]
        name = f"{JOINER_APP_ID}-{self.joiner_replicas}"
        self.joiner_replicas += 1
        daprd, config, sidecar_env = self._launch
        self.apps[name] = self._start_app(spec, daprd, config, sidecar_env, name)
        return name

    def instances_of(self, app_id: str) -> list[str]:
        """The names an app runs under: its app id, or each joiner replica's name."""
        if app_id != JOINER_APP_ID or self.joiner_replicas == 1:
            return [app_id]
        return [f"{app_id}-{n}" for n in range(self.joiner_replicas)]

    def _render_config(self) -> Path:
        """dapr.yaml's Configuration, with a name-resolution database private to this run."""
        document = yaml.safe_load(self.run_file.config_path.read_text())
        resolution = document.setdefault("spec", {}).setdefault("nameResolution", {})
        if resolution.get("component") == "sqlite":
            resolution.setdefault("configuration", {})["connectionString"] = str(self.run_dir / "nr.db")
        point_tracing(document, os.environ)
        path = self.run_dir / "config.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    def _start_app(
        self, spec: AppSpec, daprd: Path, config: Path, sidecar_env: dict[str, str], instance: str | None = None
    ) -> RunningApp:
        assert self.sentry is not None
        name = instance or spec.app_id
        replica = {"JOINER_REPLICA": name} if name != spec.app_id else {}
        if self.joiner_replicas > 1:  # what the Redis pub/sub's consumerID {podName} reads (as on Kubernetes)
            sidecar_env = {**sidecar_env, "POD_NAME": name}
        alone = spec.app_id in self.sidecars_only
        app_port, http_port, grpc_port = free_port(), free_port(), free_port()
        internal_port, metrics_port = free_port(), free_port()
        command = [sys.executable if part == "python" else part for part in spec.command]
        app_env = {
            **os.environ,
            **self.run_file.common_env,
            **spec.env,
            **(KAFKA_ENV.get(spec.app_id, {}) if self.streams_on == "kafka" else {}),
            **self.env_overrides.get(spec.app_id, {}),
            **self.env_overrides.get(name, {}),
            **replica,
            "APP_ID": spec.app_id,
            "APP_PORT": str(app_port),
            "DAPR_HTTP_PORT": str(http_port),
            "DAPR_GRPC_PORT": str(grpc_port),
            "DAPR_API_TOKEN": self.dapr_token,
            "APP_API_TOKEN": self.app_token,
            "PYTHONUNBUFFERED": "1",
        }
        logs = self.run_dir / "logs"
        app = Process(name, command, logs / f"{name}.log", env=app_env, cwd=spec.app_dir)
        if not alone:
            app.start()
        self._app_launch[name] = (command, app_env)
        app_flags = [] if alone else ["--app-port", str(app_port), "--app-protocol", "http"]
        sidecar = Process(
            f"daprd[{name}]",
            [
                str(daprd),
                "--app-id",
                spec.app_id,
                *app_flags,
                "--app-channel-address",
                "127.0.0.1",
                "--enable-mtls",
                "--sentry-address",
                self.sentry.address,
                # every listener of the sidecar on loopback: the API, the internal (sidecar to sidecar, plaintext
                # without a control plane) gRPC port and metrics, which otherwise take every interface
                "--dapr-listen-addresses",
                "127.0.0.1",
                "--dapr-internal-grpc-listen-address",
                "127.0.0.1",
                "--metrics-listen-address",
                "127.0.0.1",
                "--dapr-http-port",
                str(http_port),
                "--dapr-grpc-port",
                str(grpc_port),
                "--dapr-internal-grpc-port",
                str(internal_port),
                "--metrics-port",
                str(metrics_port),
                "--resources-path",
                str(self.resources),
                "--config",
                str(config),
                "--log-level",
                "info",
            ],
            logs / f"daprd-{name}.log",
            env=sidecar_env,
            cwd=self.run_dir,
        ).start()
        running = RunningApp(spec, app_port, http_port, grpc_port, app, sidecar, self.app_token, self.dapr_token)
        self.apps[name] = running

        def dead() -> str | None:
            return app.death() or sidecar.death()

        wait_until(lambda: _healthy(http_port), 90, f"{name} and its sidecar", interval=0.2, alive=dead)
        self._say(f"{name}: {'no app' if alone else f'app on :{app_port}'}, daprd http :{http_port} grpc :{grpc_port}")
        return running

    def restart_app(self, app_id: str) -> None:
        """Stop one app as an orchestrator would (SIGTERM, its shutdown runs) and start it again, same
        port and env, its sidecar left running; returns once the app answers again."""
        self.stop_app(app_id)
        self.start_app(app_id)

    def stop_app(self, app_id: str) -> None:
        """Stop one app (SIGTERM, its shutdown runs), its sidecar left running: an outage of that app."""
        self.apps[app_id].app.stop(timeout=30)

    def kill_sidecar(self, app_id: str) -> None:
        """SIGKILL one app's daprd (the app left running): its sidecar crashed."""
        self.apps[app_id].sidecar.kill()

    def start_sidecar(self, app_id: str) -> None:
        """Start a killed daprd again, same ports; returns once it reports healthy."""
        running = self.apps[app_id]
        running.sidecar.start()
        wait_until(
            lambda: _healthy(running.http_port),
            90,
            f"daprd[{app_id}] restarted",
            interval=0.2,
            alive=lambda: running.app.death() or running.sidecar.death(),
        )

    def kill_replica(self, name: str, sidecar: bool = False) -> None:
        """SIGKILL one joiner replica's app (and, ``sidecar``, its daprd too): a crash of that replica."""
        self.kill_app(name)
        if sidecar:
            self.kill_sidecar(name)

    def restart_replica(self, name: str) -> None:
        """Start a killed replica again with the same identity (name, ports, env, so its state-store keys and
        its consumer group); its daprd too if it was killed. Returns once both answer."""
        running = self.apps[name]
        sidecar_down = running.sidecar.death() is not None
        if sidecar_down:
            running.sidecar.start()  # healthy only once its app answers: waited for below
        self.start_app(name)
        if sidecar_down:
            wait_until(
                lambda: _healthy(running.http_port),
                90,
                f"daprd[{name}] restarted",
                interval=0.2,
                alive=lambda: running.app.death() or running.sidecar.death(),
            )

    def kill_app(self, app_id: str) -> None:
        """SIGKILL one app (no shutdown runs: a crash, an OOM kill), its sidecar left running."""
        self.apps[app_id].app.kill()

    def start_app(self, app_id: str) -> None:
        """Start a stopped app again, same port and env; returns once it answers."""
        running = self.apps[app_id]
        command, env = self._app_launch[app_id]
        running.app = Process(app_id, command, running.app.log_path, env=env, cwd=running.spec.app_dir).start()

        def dead() -> str | None:
            return running.app.death() or running.sidecar.death()

        wait_until(lambda: _answers(running), 90, f"{app_id} restarted", interval=0.2, alive=dead)
        self._say(f"{app_id}: restarted")

    def stop(self) -> None:
        for running in reversed(list(self.apps.values())):
            running.stop()
        if self.sentry is not None:
            self.sentry.stop()
            self.sentry = None
        for broker in reversed(self.brokers):
            broker.stop()
        self.apps.clear()
        self.brokers.clear()


def point_tracing(document: dict, environ: Mapping[str, str]) -> None:
    """The sidecars' spans to the collector the apps' are sent to, when the environment names one
    (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``): daprd reads its endpoint from
    the Configuration, not from the environment, when the Configuration has one. Without either, or with
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``, the sidecars do not trace, as the joiner
    does not."""
    tracing = document.get("spec", {}).get("tracing")
    if not isinstance(tracing, dict):
        return
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or (
        environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none"
    ):
        tracing["samplingRate"] = "0"
        return
    url = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""
    ).strip()
    if not url:  # no collector named: a dead exporter would log every 5 s and cost every run's sidecars
        tracing["samplingRate"] = "0"
        return
    parsed = urlsplit(url if "://" in url else f"http://{url}")
    tracing["otel"] = {"endpointAddress": parsed.netloc, "isSecure": parsed.scheme == "https", "protocol": "http"}


def _healthy(http_port: int) -> bool:
    """daprd answers 204 on /v1.0/healthz once its components are up and the app answers."""
    try:
        return httpx.get(f"http://127.0.0.1:{http_port}/v1.0/healthz", timeout=1).status_code == 204
    except httpx.HTTPError:
        return False


def clear_previous_run(run_dir: Path) -> None:
    """Remove what an earlier run left in ``run_dir`` (`make run` reuses .devstack/last-run): its logs
    would be read as this run's, and `make run` would print its billable rows again. Only the stack's
    own files go; anything else in the directory stays."""
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o700)  # the name-resolution database, sentry's keys and the brokers' passwords are here
    for leftover in ("logs", "redis", "rabbitmq", "sentry"):
        shutil.rmtree(run_dir / leftover, ignore_errors=True)
    for leftover in ("nr.db", "config.yaml", "tokens.env"):
        (run_dir / leftover).unlink(missing_ok=True)


def _answers(running: RunningApp) -> bool:
    try:
        return running.get("/healthz").is_success
    except httpx.HTTPError:
        return False


def data_received(log_text: str) -> list[list]:
    """The JSON arrays billable-proc logged as ``Data received: [...]``, in order."""
    batches = []
    for line in log_text.splitlines():
        _, marker, payload = line.partition("Data received: ")
        if marker:
            batches.append(json.loads(payload))
    return batches
