#!/usr/bin/env bash
# Obtain the Prometheus Operator CustomResourceDefinitions (PodMonitor, PrometheusRule...) at the version
# pinned in deploy/prometheus-operator.version, for the schema checks of deploy/overlays/monitoring.
#
# They are example/prometheus-operator-crd/ of the github.com/prometheus-operator/prometheus-operator module,
# which `go mod download` fetches from the Go module proxy and checks against the Go checksum database.
# Copied to $PROMETHEUS_OPERATOR_CRDS_DIR (default ~/.cache/power-usage/prometheus-operator-crds/<version>);
# nothing to do when they are there.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="$(cat "$here/deploy/prometheus-operator.version")"
dest="${PROMETHEUS_OPERATOR_CRDS_DIR:-$HOME/.cache/power-usage/prometheus-operator-crds/$version}"
module="github.com/prometheus-operator/prometheus-operator"
say() { printf '[install-prometheus-operator-crds] %s\n' "$*" >&2; }

if [ -f "$dest/SOURCE" ] && grep -qx "module $module@$version" "$dest/SOURCE"; then
  exit 0
fi
command -v go >/dev/null || { say "Go is not installed: cannot download $module@$version for its CRDs"; exit 1; }
say "downloading $module@$version from the Go module proxy for its CRDs"
info="$(go mod download -json "$module@$version")" || { say "go mod download $module@$version failed:"; printf '%s\n' "$info" >&2; exit 1; }
read -r src sum < <(printf '%s' "$info" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["Dir"], d["Sum"])')
crds="$src/example/prometheus-operator-crd"
ls "$crds"/*.yaml >/dev/null 2>&1 || { say "no CRDs in $crds"; exit 1; }

# into a sibling first, then renamed: a run cut short never leaves a half-filled directory behind
mkdir -p "$(dirname "$dest")"
staging="$(mktemp -d "$dest.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
cp "$crds"/*.yaml "$staging/"
chmod 0644 "$staging"/*.yaml
printf 'module %s@%s\nsum %s\npath example/prometheus-operator-crd\n' "$module" "$version" "$sum" >"$staging/SOURCE"
chmod 0755 "$staging"
rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
say "installed the Prometheus Operator $version CRDs at $dest"
