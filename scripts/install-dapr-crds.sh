#!/usr/bin/env bash
# Obtain the CustomResourceDefinitions of the pinned Dapr runtime (dapr.version) for the manifest tests.
#
# They are the ones Dapr's Helm chart installs: charts/dapr/crds/ of the github.com/dapr/dapr module at
# that version, which `go mod download` fetches from the Go module proxy and checks against the Go checksum
# database (the same module the daprd build uses, so a machine that built daprd has it already). Copied to
# $DAPR_CRDS_DIR (default ~/.cache/power-usage/dapr-crds/v<version>); nothing to do when they are there.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="${DAPR_RUNTIME_VERSION:-$(cat "$here/dapr.version")}"
dest="${DAPR_CRDS_DIR:-$HOME/.cache/power-usage/dapr-crds/v$version}"
module="github.com/dapr/dapr"
say() { printf '[install-dapr-crds] %s\n' "$*" >&2; }

if [ -f "$dest/SOURCE" ] && grep -qx "module $module@v$version" "$dest/SOURCE"; then
  exit 0
fi
command -v go >/dev/null || { say "Go is not installed: cannot download $module@v$version for its CRDs"; exit 1; }
say "downloading $module@v$version from the Go module proxy for its CRDs (about 20 MB)"
info="$(go mod download -json "$module@v$version")" || { say "go mod download $module@v$version failed:"; printf '%s\n' "$info" >&2; exit 1; }
read -r src sum < <(printf '%s' "$info" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["Dir"], d["Sum"])')
crds="$src/charts/dapr/crds"
ls "$crds"/*.yaml >/dev/null 2>&1 || { say "no CRDs in $crds"; exit 1; }

# into a sibling first, then renamed: a run cut short never leaves a half-filled directory behind
mkdir -p "$(dirname "$dest")"
staging="$(mktemp -d "$dest.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
cp "$crds"/*.yaml "$staging/"
chmod 0644 "$staging"/*.yaml
printf 'module %s@v%s\nsum %s\npath charts/dapr/crds\n' "$module" "$version" "$sum" >"$staging/SOURCE"
chmod 0755 "$staging"
rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
say "installed the Dapr $version CRDs ($(cd "$dest" && echo *.yaml)) at $dest"
