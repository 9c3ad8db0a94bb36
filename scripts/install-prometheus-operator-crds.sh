#!/usr/bin/env bash
# Obtain the Prometheus Operator CustomResourceDefinitions (PodMonitor, PrometheusRule...) at the version
# pinned in deploy/prometheus-operator.version, for the schema checks of deploy/overlays/monitoring.
#
# They are example/prometheus-operator-crd/ of the github.com/prometheus-operator/prometheus-operator module,
# which `go mod download` fetches from the Go module proxy and checks against the Go checksum database.
# Copied to $PROMETHEUS_OPERATOR_CRDS_DIR (default ~/.cache/power-usage/prometheus-operator-crds/<version>);
# nothing to do when they are there (scripts/install-module-crds.sh does the work).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="$(cat "$here/deploy/prometheus-operator.version")"
dest="${PROMETHEUS_OPERATOR_CRDS_DIR:-$HOME/.cache/power-usage/prometheus-operator-crds/$version}"
CRDS_TAG=install-prometheus-operator-crds CRDS_LABEL="Prometheus Operator $version" \
  exec bash "$here/scripts/install-module-crds.sh" github.com/prometheus-operator/prometheus-operator "$version" \
  example/prometheus-operator-crd "$dest"
