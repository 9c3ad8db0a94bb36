#!/usr/bin/env bash
# Obtain the pinned kustomize (deploy/kustomize.version) for the manifest tests: `go install` from the
# Go module proxy into $KUSTOMIZE_BIN_DIR (default ~/.cache/power-usage/bin). About a minute the first
# time; nothing to do when the pinned version is already there.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(cat "$here/kustomize.version")"
dest_dir="${KUSTOMIZE_BIN_DIR:-$HOME/.cache/power-usage/bin}"
kustomize="$dest_dir/kustomize"
say() { printf '[install-kustomize] %s\n' "$*" >&2; }

if [ -x "$kustomize" ] && [ "$("$kustomize" version 2>/dev/null)" = "$version" ]; then
  exit 0
fi
command -v go >/dev/null || { say "Go is not installed: cannot build kustomize $version"; exit 1; }
say "building kustomize $version from the Go module proxy into $dest_dir"
mkdir -p "$dest_dir"
GOBIN="$dest_dir" GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kustomize/kustomize/v5@$version"
found="$("$kustomize" version)"
[ "$found" = "$version" ] || { say "$kustomize reports $found, expected $version"; exit 1; }
say "installed kustomize $found at $kustomize"
