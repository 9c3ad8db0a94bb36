#!/usr/bin/env bash
# Obtain the pinned promtool (deploy/promtool.version, a Go module version of github.com/prometheus/prometheus:
# v0.316.0 is Prometheus 3.16.0) for the monitoring tests: `go install` from the Go module proxy into
# $KUSTOMIZE_BIN_DIR (default ~/.cache/power-usage/bin, next to kustomize). Built with `remove_all_sd`, which
# leaves out the cloud service discoveries (AWS, Azure, GCE...) that `check rules`, `test rules` and
# `check config` never use: a few minutes cold instead of many. Nothing to do when the pinned version is there.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(cat "$here/promtool.version")"
module="github.com/prometheus/prometheus"
dest_dir="${KUSTOMIZE_BIN_DIR:-$HOME/.cache/power-usage/bin}"
promtool="$dest_dir/promtool"
say() { printf '[install-promtool] %s\n' "$*" >&2; }
# the module version the binary was built from, as Go recorded it (promtool --version is empty without
# the release's ldflags)
built_from() { go version -m "$promtool" 2>/dev/null | awk -v m="$module" '$1 == "mod" && $2 == m { print $3 }'; }

command -v go >/dev/null || { say "Go is not installed: cannot build promtool ($module $version)"; exit 1; }
if [ -x "$promtool" ] && [ "$(built_from)" = "$version" ]; then
  exit 0
fi
say "building promtool ($module $version) from the Go module proxy into $dest_dir"
mkdir -p "$dest_dir"
GOBIN="$dest_dir" GOFLAGS=-buildvcs=false go install -tags remove_all_sd "$module/cmd/promtool@$version"
found="$(built_from)"
[ "$found" = "$version" ] || { say "$promtool was built from $module ${found:-(unknown)}, expected $version"; exit 1; }
say "installed promtool ($module $found) at $promtool"
