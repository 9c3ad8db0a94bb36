#!/usr/bin/env bash
# Obtain the pinned Dapr runtime (daprd) and install it where `dapr init --slim` puts it.
#
# 1. Already installed at the pinned version: nothing to do.
# 2. Official release archive, when it can be downloaded.
# 3. Otherwise build it from the Go module proxy (scripts/dapr-module.sh says how).
#    `allcomponents` matches the official build and includes the sqlite name resolver.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="${DAPR_RUNTIME_VERSION:-$(cat "$here/dapr.version")}"
dest_dir="${DAPR_BIN_DIR:-$HOME/.dapr/bin}"
daprd="$dest_dir/daprd"
say() { printf '[install-daprd] %s\n' "$*" >&2; }

if [ -x "$daprd" ] && [ "$("$daprd" --version 2>/dev/null)" = "$version" ]; then
  say "daprd $version already at $daprd"
  exit 0
fi
mkdir -p "$dest_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

os="$(go env GOOS 2>/dev/null || uname -s | tr '[:upper:]' '[:lower:]')"
arch="$(go env GOARCH 2>/dev/null || echo amd64)"
release="https://github.com/dapr/dapr/releases/download/v${version}/daprd_${os}_${arch}.tar.gz"
if curl -fsSL --connect-timeout 5 --max-time 300 -o "$work/daprd.tgz" "$release" 2>/dev/null; then
  tar -xzf "$work/daprd.tgz" -C "$work" daprd
  install -m 0755 "$work/daprd" "$daprd"
  say "installed official release daprd $version at $daprd"
  exit 0
fi

command -v go >/dev/null || { say "the official release is unreachable and Go is not installed: cannot obtain daprd"; exit 1; }
say "official release unreachable; building daprd $version from the Go module proxy (about 5 min on 2 cores)"
. "$here/scripts/dapr-module.sh"
dapr_wrapper_module "$version" "$work/wrapper"
cd "$work/wrapper"

tags=allcomponents
pkg="$DAPR_MODULE/cmd/daprd"
say "step 1/2: downloading Go modules"
total="$(GOFLAGS=-mod=mod go list -tags "$tags" -deps "$pkg" | wc -l)"
say "step 2/2: compiling $total packages (progress every 100)"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath -tags "$tags" -ldflags "$(dapr_ldflags "$version")" -o "$work/daprd" "$pkg" 2>&1 |
  progress_filter install-daprd "$total"
[ -x "$work/daprd" ] || { say "build failed"; exit 1; }
install -m 0755 "$work/daprd" "$daprd"
say "installed daprd $("$daprd" --version) at $daprd"
