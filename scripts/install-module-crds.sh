#!/usr/bin/env bash
# Obtain CustomResourceDefinitions from a Go module, for the manifest tests' schema checks:
#   install-module-crds.sh MODULE VERSION PATH DEST
# copies the *.yaml files of directory PATH of MODULE@VERSION (VERSION as the module proxy spells it, with
# its leading v) into DEST, beside a SOURCE file naming module, checksum and path; nothing to do when DEST's
# SOURCE already names MODULE@VERSION. `go mod download` fetches the module from the Go module proxy and
# checks it against the Go checksum database (a module already in the Go module cache is not fetched again).
# The callers (install-dapr-crds.sh, install-prometheus-operator-crds.sh, install-keda-crds.sh) set how
# it speaks, in the environment:
#   CRDS_TAG       the prefix of its messages (default: install-module-crds)
#   CRDS_LABEL     what the CRDs are called in the last message (default: MODULE VERSION)
#   CRDS_SIZE      a note after the download message, e.g. "(about 20 MB)" (default: none)
#   CRDS_LIST=1    name the files copied in the last message
set -euo pipefail

[ "$#" -eq 4 ] || { echo "usage: $0 MODULE VERSION PATH DEST" >&2; exit 2; }
module="$1" version="$2" path="$3" dest="$4"
tag="${CRDS_TAG:-install-module-crds}"
label="${CRDS_LABEL:-$module $version}"
say() { printf '[%s] %s\n' "$tag" "$*" >&2; }

if [ -f "$dest/SOURCE" ] && grep -qx "module $module@$version" "$dest/SOURCE"; then
  exit 0
fi
command -v go >/dev/null || { say "Go is not installed: cannot download $module@$version for its CRDs"; exit 1; }
say "downloading $module@$version from the Go module proxy for its CRDs${CRDS_SIZE:+ $CRDS_SIZE}"
info="$(go mod download -json "$module@$version")" || { say "go mod download $module@$version failed:"; printf '%s\n' "$info" >&2; exit 1; }
read -r src sum < <(printf '%s' "$info" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["Dir"], d["Sum"])')
crds="$src/$path"
ls "$crds"/*.yaml >/dev/null 2>&1 || { say "no CRDs in $crds"; exit 1; }

# into a sibling first, then renamed: a run cut short never leaves a half-filled directory behind
mkdir -p "$(dirname "$dest")"
staging="$(mktemp -d "$dest.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
cp "$crds"/*.yaml "$staging/"
chmod 0644 "$staging"/*.yaml
printf 'module %s@%s\nsum %s\npath %s\n' "$module" "$version" "$sum" "$path" >"$staging/SOURCE"
chmod 0755 "$staging"
rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
if [ "${CRDS_LIST:-}" = 1 ]; then
  say "installed the $label CRDs ($(cd "$dest" && echo *.yaml)) at $dest"
else
  say "installed the $label CRDs at $dest"
fi
