"""Dapr's certificate authority (``sentry``) for a local run: sidecars get workload certificates from it,
so sidecar-to-sidecar calls are mTLS and each caller has an identity (``spiffe://public/ns/default/<app
id>``) that the Configuration's ``accessControl`` can allow or deny. Without it daprd knows no caller, and
a deny-by-default policy refuses every call.

Its issuer credentials are generated at first start in a directory only the owner can read. Self-hosted
sentry signs a certificate for any app id it is asked for (Dapr's ``insecure`` validator): the identities
hold against apps that are configured wrongly, not against a local user who runs a sidecar of their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from devstack.daprd import ensure_sentry
from devstack.processes import Process, StackError, free_port, port_open, wait_until

TRUST_DOMAIN = "localhost"  # of the control plane; daprd's --control-plane-trust-domain defaults to it

SENTRY_CONFIGURATION = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: sentry
spec:
  mtls:
    enabled: true
    workloadCertTTL: 24h
    allowedClockSkew: 15m
"""


@dataclass
class Sentry:
    process: Process
    port: int
    healthz_port: int
    credentials: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def trust_anchors(self) -> str:
        """The root certificate sidecars trust (their ``DAPR_TRUST_ANCHORS``)."""
        return (self.credentials / "ca.crt").read_text()

    def stop(self) -> None:
        self.process.stop()


def start_sentry(run_dir: Path, port: int | None = None) -> Sentry:
    """Sentry on ``port`` (a free one when None) of 127.0.0.1, its state under ``run_dir/sentry``."""
    binary, _ = ensure_sentry()
    home = run_dir / "sentry"
    credentials = home / "credentials"
    credentials.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    os.chmod(credentials, 0o700)
    (home / "config.yaml").write_text(SENTRY_CONFIGURATION)
    port = port or free_port()
    healthz_port = free_port()
    process = Process(
        "sentry",
        [
            str(binary),
            "--issuer-credentials",
            str(credentials),
            "--trust-domain",
            TRUST_DOMAIN,
            "--port",
            str(port),
            "--listen-address",
            "127.0.0.1",
            # sentry 1.18 ignores --healthz-listen-address and --metrics-listen-address (all interfaces):
            # metrics are switched off; the health port, which answers only "ok", cannot be moved
            "--healthz-port",
            str(healthz_port),
            "--enable-metrics=false",
            "--config",
            str(home / "config.yaml"),
            "--log-level",
            "info",
        ],
        run_dir / "logs" / "sentry.log",
    ).start()
    try:
        wait_until(
            lambda: port_open(port) and (credentials / "ca.crt").exists(),
            30,
            "sentry",
            interval=0.1,
            alive=process.death,
        )
    except StackError:
        process.stop()
        raise
    return Sentry(process, port, healthz_port, credentials)
