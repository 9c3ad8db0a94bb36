#!/usr/bin/env bash
# Build Helm at the pinned version from the Go module proxy (Helm's module has no replaces, so a
# plain `go install` does it). It installs Dapr's chart into the local cluster.
set -euo pipefail
SCRIPT_NAME=install-helm
. "$(dirname "$0")/lib.sh"

version="$HELM_VERSION"
dest="$CLUSTER_CACHE/helm/$version"
build_needed "$dest" "$version" "Helm"
say "building helm.sh/helm/v3 v$version (about 2 min on 2 cores, once per version)"
mkdir -p "$dest/bin"
GOBIN="$dest/bin" CGO_ENABLED=0 go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$version" "helm.sh/helm/v3/cmd/helm@v$version" 2>&1 |
  grep -v '^go: downloading' || true
[ -x "$dest/bin/helm" ] || die "build failed"
echo "$version" >"$dest/.built"
say "helm $("$dest/bin/helm" version --short) in $dest/bin"
