# Shared by the cluster scripts: pins, cache paths, progress lines, Go builds with a package count.
# shellcheck shell=bash
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.env
. "$repo/scripts/cluster/versions.env"
DAPR_VERSION="${DAPR_RUNTIME_VERSION:-$(cat "$repo/dapr.version")}"
. "$repo/scripts/go-build.sh"
CLUSTER_CACHE="${CLUSTER_CACHE:-$HOME/.cache/power-usage/cluster}"

say() { printf '[%s] %s\n' "${SCRIPT_NAME:-cluster}" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ensure_debian_packages PACKAGE...: install those of Debian's packages that are missing (a fresh
# machine has none of them), refreshing the package lists only when the first try fails
ensure_debian_packages() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } ||
    die "could not install Debian packages: ${missing[*]}"
}

# stamp_ok DIR VERSION: the build in DIR is complete and of VERSION.
stamp_ok() { [ -f "$1/.built" ] && [ "$(cat "$1/.built")" = "$2" ]; }

# build_needed DIR VERSION WHAT: exit 0 (nothing to do) when DIR holds WHAT built at VERSION; else make
# sure Go is there to build it
build_needed() {
  if stamp_ok "$1" "$2"; then
    say "$3 $2 already built in $1"
    exit 0
  fi
  command -v go >/dev/null || die "Go is needed to build $3 $2"
}
