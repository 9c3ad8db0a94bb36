#!/usr/bin/env bash
# Build Dapr's control plane at the runtime's pinned version (dapr.version) from the Go module
# proxy: operator, sidecar injector, sentry, placement and scheduler, beside the daprd of
# scripts/install-daprd.sh, into one directory that scripts/cluster/images.sh makes an image of.
# The packages daprd shares with them are already in Go's build cache, so this is minutes.
set -euo pipefail
SCRIPT_NAME=install-dapr-control-plane
. "$(dirname "$0")/lib.sh"
. "$repo/scripts/dapr-module.sh"

version="$DAPR_VERSION"
dest="$CLUSTER_CACHE/dapr/$version"
build_needed "$dest" "$version" "Dapr's control plane"
bash "$repo/scripts/install-daprd.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

dapr_wrapper_module "$version" "$work/wrapper"
cd "$work/wrapper"
commands=(operator injector sentry placement scheduler)
pkgs=()
for c in "${commands[@]}"; do pkgs+=("$DAPR_MODULE/cmd/$c"); done
say "step 1/2: downloading Go modules"
total="$(GOFLAGS=-mod=mod go list -deps "${pkgs[@]}" | sort -u | wc -l)"
say "step 2/2: compiling $total packages for ${commands[*]} (about 5 min on 2 cores, once per version)"
mkdir -p "$work/bin"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath -ldflags "$(dapr_ldflags "$version")" -o "$work/bin/" "${pkgs[@]}" 2>&1 |
  progress_filter "$SCRIPT_NAME" "$total"
for c in "${commands[@]}"; do [ -x "$work/bin/$c" ] || die "build of $c failed"; done
install -m 0755 "${DAPR_BIN_DIR:-$HOME/.dapr/bin}/daprd" "$work/bin/daprd"

rm -rf "$dest" && mkdir -p "$dest"
cp -a "$work/bin" "$dest/bin"
cp -a "$DAPR_SRC/charts/dapr" "$dest/chart" && chmod -R u+w "$dest/chart"
echo "$version" >"$dest/.built"
say "Dapr $version control plane in $dest/bin, its Helm chart in $dest/chart"
