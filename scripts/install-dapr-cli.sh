#!/usr/bin/env bash
# Obtain the pinned Dapr CLI (`dapr`, for `dapr run -f .`) and install it beside daprd in ~/.dapr/bin.
#
# 1. Installed by this script at the pinned version, bytes unchanged (scripts/install-record.sh):
#    nothing to do.
# 2. Official release archive, when it can be downloaded, checked against Dapr's published sha256.
# 3. Otherwise build it from the Go module proxy: a throw-away wrapper module with the CLI's own
#    go.mod and go.sum builds github.com/dapr/cli (`go install ...@tag` needs the module's version
#    list, which the proxy reachable here refuses). The CLI links dapr/dapr 1.16.2, which wants
#    components-contrib v1.16.3; the proxy refuses that one, so the wrapper takes v1.16.1, the
#    nearest it serves (the CLI only uses its component registry types).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="${DAPR_CLI_VERSION:-$(cat "$here/dapr-cli.version")}"
dest_dir="${DAPR_BIN_DIR:-$HOME/.dapr/bin}"
cli="$dest_dir/dapr"
say() { printf '[install-dapr-cli] %s\n' "$*" >&2; }
. "$here/scripts/install-record.sh"

installed() { "$cli" --version 2>/dev/null | sed -n 's/^CLI version: *\([^ ]*\).*/\1/p'; }
if trusted "$cli" "$version"; then
  say "dapr CLI $version already at $cli (checksum matches its install record)"
  exit 0
fi
mkdir -p "$dest_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

os="$(go env GOOS 2>/dev/null || uname -s | tr '[:upper:]' '[:lower:]')"
arch="$(go env GOARCH 2>/dev/null || echo amd64)"
release="https://github.com/dapr/cli/releases/download/v${version}/dapr_${os}_${arch}.tar.gz"
if download_verified "$release" "$work/dapr.tgz"; then
  tar -xzf "$work/dapr.tgz" -C "$work" dapr
  install_recorded "$work/dapr" "$cli" "$version" release
  say "installed official release dapr CLI $version at $cli (sha256 checked)"
  exit 0
fi

command -v go >/dev/null || { say "the official release is unreachable and Go is not installed: cannot obtain the dapr CLI"; exit 1; }
say "official release unreachable; building the dapr CLI $version from the Go module proxy (about 2 min on 2 cores)"
module="github.com/dapr/cli"
go mod download -json "$module@v$version" >"$work/module.json"
src="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/module.json")"

mkdir -p "$work/wrapper"
sed 's#^module .*#module dapr-cli-build#' "$src/go.mod" >"$work/wrapper/go.mod"
cp "$src/go.sum" "$work/wrapper/go.sum"
chmod u+w "$work/wrapper/go.mod" "$work/wrapper/go.sum"
cd "$work/wrapper"
go mod edit -require="$module@v$version"
go mod edit -replace=github.com/dapr/components-contrib=github.com/dapr/components-contrib@v1.16.1
ldflags="-s -w -X main.version=$version -X main.apiVersion=1.0"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$work/dapr" "$module"
[ -x "$work/dapr" ] || { say "build failed"; exit 1; }
install_recorded "$work/dapr" "$cli" "$version" "build from the Go module proxy"
say "installed dapr CLI $(installed) at $cli"
