#!/usr/bin/env bash
# Obtain the pinned Dapr runtime and install it where `dapr init --slim` puts it (~/.dapr/bin):
# daprd, and sentry (the certificate authority that gives local sidecars mTLS, and with it the
# identities that the Configuration's accessControl checks).
#
# 1. Installed by this script at the pinned version, bytes unchanged (scripts/install-record.sh):
#    nothing to do.
# 2. Official release archives, when they can be downloaded, checked against Dapr's published sha256.
# 3. Otherwise built from the Go module proxy (scripts/dapr-module.sh says how); go.sum pins every
#    module's checksum. `allcomponents` matches the official build and includes the sqlite name resolver.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="${DAPR_RUNTIME_VERSION:-$(cat "$here/dapr.version")}"
dest_dir="${DAPR_BIN_DIR:-$HOME/.dapr/bin}"
binaries=(daprd sentry)
say() { printf '[install-daprd] %s\n' "$*" >&2; }
. "$here/scripts/install-record.sh"

missing=()
for b in "${binaries[@]}"; do trusted "$dest_dir/$b" "$version" || missing+=("$b"); done
if [ "${#missing[@]}" -eq 0 ]; then
  say "daprd and sentry $version already in $dest_dir (checksums match their install records)"
  exit 0
fi
mkdir -p "$dest_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

os="$(go env GOOS 2>/dev/null || uname -s | tr '[:upper:]' '[:lower:]')"
arch="$(go env GOARCH 2>/dev/null || echo amd64)"
releases="https://github.com/dapr/dapr/releases/download/v${version}"
from_release=()
for b in "${missing[@]}"; do
  if download_verified "$releases/${b}_${os}_${arch}.tar.gz" "$work/$b.tgz"; then
    tar -xzf "$work/$b.tgz" -C "$work" "$b"
    install_recorded "$work/$b" "$dest_dir/$b" "$version" release
    say "installed official release $b $version at $dest_dir/$b (sha256 checked)"
    from_release+=("$b")
  fi
done
to_build=()
for b in "${missing[@]}"; do [[ " ${from_release[*]} " == *" $b "* ]] || to_build+=("$b"); done
[ "${#to_build[@]}" -eq 0 ] && exit 0

command -v go >/dev/null || { say "the official release is unreachable and Go is not installed: cannot obtain ${to_build[*]}"; exit 1; }
say "official release unreachable; building ${to_build[*]} $version from the Go module proxy (about 5 min on 2 cores)"
. "$here/scripts/dapr-module.sh"
dapr_wrapper_module "$version" "$work/wrapper"
cd "$work/wrapper"

tags=allcomponents
pkgs=()
for b in "${to_build[@]}"; do pkgs+=("$DAPR_MODULE/cmd/$b"); done
say "step 1/2: downloading Go modules"
total="$(GOFLAGS=-mod=mod go list -tags "$tags" -deps "${pkgs[@]}" | sort -u | wc -l)"
say "step 2/2: compiling $total packages (progress every 100)"
mkdir -p "$work/bin"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath -tags "$tags" -ldflags "$(dapr_ldflags "$version")" -o "$work/bin/" "${pkgs[@]}" 2>&1 |
  progress_filter install-daprd "$total"
for b in "${to_build[@]}"; do
  [ -x "$work/bin/$b" ] || { say "build of $b failed"; exit 1; }
  install_recorded "$work/bin/$b" "$dest_dir/$b" "$version" "build from the Go module proxy"
  say "installed $b $version at $dest_dir/$b"
done
