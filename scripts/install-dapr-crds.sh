#!/usr/bin/env bash
# Obtain the CustomResourceDefinitions of the pinned Dapr runtime (dapr.version) for the manifest tests.
#
# They are the ones Dapr's Helm chart installs: charts/dapr/crds/ of the github.com/dapr/dapr module at
# that version, which `go mod download` fetches from the Go module proxy and checks against the Go checksum
# database (the same module the daprd build uses, so a machine that built daprd has it already). Copied to
# $DAPR_CRDS_DIR (default ~/.cache/power-usage/dapr-crds/v<version>); nothing to do when they are there
# (scripts/install-module-crds.sh does the work).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="${DAPR_RUNTIME_VERSION:-$(cat "$here/dapr.version")}"
dest="${DAPR_CRDS_DIR:-$HOME/.cache/power-usage/dapr-crds/v$version}"
CRDS_TAG=install-dapr-crds CRDS_LABEL="Dapr $version" CRDS_SIZE="(about 20 MB)" CRDS_LIST=1 \
  exec bash "$here/scripts/install-module-crds.sh" github.com/dapr/dapr "v$version" charts/dapr/crds "$dest"
