#!/usr/bin/env bash
# Obtain KEDA's CustomResourceDefinitions (ScaledObject, TriggerAuthentication...) at the version pinned in
# deploy/keda.version, for the schema checks of deploy/overlays/keda.
#
# They are config/crd/bases/ of the github.com/kedacore/keda/v2 module (the CRDs KEDA's release and Helm
# chart install), which `go mod download` fetches from the Go module proxy and checks against the Go
# checksum database. Copied to $KEDA_CRDS_DIR (default ~/.cache/power-usage/keda-crds/<version>); nothing
# to do when they are there (scripts/install-module-crds.sh does the work).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="$(cat "$here/deploy/keda.version")"
dest="${KEDA_CRDS_DIR:-$HOME/.cache/power-usage/keda-crds/$version}"
CRDS_TAG=install-keda-crds CRDS_LABEL="KEDA $version" \
  exec bash "$here/scripts/install-module-crds.sh" github.com/kedacore/keda/v2 "$version" config/crd/bases "$dest"
