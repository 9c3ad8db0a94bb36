# Sourced by the scripts that build Dapr's commands from the Go module proxy (daprd, the control
# plane). dapr/dapr's go.mod has replace directives, so `go install ...@tag` refuses it; a throw-away
# wrapper module that carries dapr's own go.mod/go.sum (and so its replaces) builds its commands.
# shellcheck shell=bash
. "$(dirname "${BASH_SOURCE[0]}")/go-build.sh"

DAPR_MODULE=github.com/dapr/dapr

# dapr_wrapper_module VERSION DIR: make DIR a module that can build $DAPR_MODULE/cmd/* at VERSION;
# sets DAPR_SRC (the module's directory) and DAPR_COMMIT.
dapr_wrapper_module() {
  local version="$1" dir="$2"
  DAPR_SRC="$(module_info "$DAPR_MODULE@v$version" Dir)"
  DAPR_COMMIT="$(module_info "$DAPR_MODULE@v$version" Hash)"
  mkdir -p "$dir"
  sed 's#^module .*#module dapr-build#' "$DAPR_SRC/go.mod" >"$dir/go.mod"
  cp "$DAPR_SRC/go.sum" "$dir/go.sum"
  (cd "$dir" && go mod edit -require="$DAPR_MODULE@v$version" && go mod download "$DAPR_MODULE") # records dapr's own checksum
}

# dapr_ldflags VERSION: the version variables Dapr's own build sets.
dapr_ldflags() {
  printf -- '-s -w -X %s/pkg/buildinfo.version=%s -X %s/pkg/buildinfo.gitversion=v%s -X %s/pkg/buildinfo.gitcommit=%s' \
    "$DAPR_MODULE" "$1" "$DAPR_MODULE" "$1" "$DAPR_MODULE" "$DAPR_COMMIT"
}
