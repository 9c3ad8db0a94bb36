#!/usr/bin/env bash
# Rebuild what changed (images.sh) and load the images into the running local cluster's containerd;
# then `scripts/cluster/kubectl rollout restart deployment <app>` runs the new one (`make k8s-load`).
set -euo pipefail
SCRIPT_NAME=k8s-load
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/env.sh"
[ -S "$CONTAINERD_SOCK" ] || die "the local cluster is not running (make k8s-up)"
bash "$(dirname "$0")/images.sh"
import_images
say "images loaded into the cluster's containerd"
