#!/usr/bin/env bash
# Build Kubernetes' server binaries and kubectl at the pinned version from the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, and the
# pause binary of the sandbox image (C, from the same module).
#
# k8s.io/kubernetes replaces every k8s.io/* module with ./staging/src/..., which a module from the
# proxy does not carry: a throw-away module with kubernetes' own go.mod, each staging replace
# pointed at the proxy's v0.<minor>.<patch> of that module, builds the commands instead. The
# version variables are set as kubernetes' own build does, or the server says v0.0.0-master and
# Helm's kubeVersion checks refuse it.
set -euo pipefail
SCRIPT_NAME=install-kubernetes
. "$(dirname "$0")/lib.sh"

version="$KUBERNETES_VERSION"
dest="$CLUSTER_CACHE/kubernetes/$version"
build_needed "$dest" "$version" "Kubernetes"
command -v gcc >/dev/null || die "gcc is needed to build the pause binary"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say "downloading k8s.io/kubernetes v$version"
src="$(module_info "k8s.io/kubernetes@v$version" Dir)"
staging_version="v0.${version#*.}"
mkdir -p "$work/build"
python3 - "$src/go.mod" "$staging_version" >"$work/build/go.mod" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"^module .*$", "module kubernetes-build", text, count=1, flags=re.M)
# k8s.io/foo => ./staging/src/k8s.io/foo  becomes  k8s.io/foo => k8s.io/foo v0.34.4
text = re.sub(r"(\S+) => \./staging/src/\S+", lambda m: f"{m[1]} => {m[1]} {sys.argv[2]}", text)
print(text)
PY
cp "$src/go.sum" "$work/build/go.sum"
cd "$work/build"
go mod edit -require="k8s.io/kubernetes@v$version"
GOFLAGS=-mod=mod go mod download k8s.io/kubernetes

commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
pkgs=()
for c in "${commands[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
say "step 1/2: downloading Go modules"
total="$(GOFLAGS=-mod=mod go list -deps "${pkgs[@]}" | sort -u | wc -l)"
minor="${version#*.}"; minor="${minor%%.*}"
commit="$(module_info "k8s.io/kubernetes@v$version" Hash)"
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=v$version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitCommit=$commit -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
say "step 2/2: compiling $total packages for ${commands[*]} (10 to 25 min on 2 cores, once per version)"
mkdir -p "$work/bin"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath -ldflags "$ldflags" -o "$work/bin/" "${pkgs[@]}" 2>&1 |
  progress_filter install-kubernetes "$total"
for c in "${commands[@]}"; do [ -x "$work/bin/$c" ] || die "build of $c failed"; done
gcc -Os -static -o "$work/bin/pause" -DVERSION="v$version" "$src/build/pause/linux/pause.c"

rm -rf "$dest" && mkdir -p "$dest"
cp -a "$work/bin" "$dest/bin"
echo "$version" >"$dest/.built"
say "$("$dest/bin/kube-apiserver" --version) in $dest/bin"
