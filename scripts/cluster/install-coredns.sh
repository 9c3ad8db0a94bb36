#!/usr/bin/env bash
# Build the cluster's DNS server (coredns/main.go: CoreDNS with the plugins a cluster needs) at the
# pinned CoreDNS version, from the Go module proxy.
set -euo pipefail
SCRIPT_NAME=install-coredns
. "$(dirname "$0")/lib.sh"

version="$COREDNS_VERSION"
dest="$CLUSTER_CACHE/coredns/$version"
build_needed "$dest" "$version" "CoreDNS"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

module=github.com/coredns/coredns
src="$(module_info "$module@v$version" Dir)"
sed 's#^module .*#module coredns-build#' "$src/go.mod" >"$work/go.mod"
cp "$src/go.sum" "$work/go.sum"
cp "$repo/scripts/cluster/coredns/main.go" "$work/main.go"
cd "$work"
go mod edit -require="$module@v$version"
GOFLAGS=-mod=mod go mod download "$module"
say "step 1/2: downloading Go modules"
total="$(GOFLAGS=-mod=mod go list -deps . | wc -l)"
say "step 2/2: compiling $total packages (a few minutes on 2 cores, once per version)"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath -ldflags "-s -w -X $module/coremain.GitCommit=v$version" -o "$work/coredns" . 2>&1 |
  progress_filter "$SCRIPT_NAME" "$total"
[ -x "$work/coredns" ] || die "build failed"
rm -rf "$dest" && mkdir -p "$dest/bin"
install -m 0755 "$work/coredns" "$dest/bin/coredns"
echo "$version" >"$dest/.built"
say "$("$dest/bin/coredns" -version | head -1) in $dest/bin"
