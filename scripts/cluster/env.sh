# Where the running local cluster lives; sourced by up.sh, down.sh and kubectl.
# shellcheck shell=bash
CLUSTER_NETNS="${CLUSTER_NETNS:-power-usage-k8s}"       # the network namespace holding the whole cluster
CLUSTER_STATE="${CLUSTER_STATE:-/var/lib/power-usage-k8s}" # every file, mount and socket of a run
# (the pods' cgroups go under /sys/fs/cgroup/*/$CLUSTER_NETNS: two clusters of other names can coexist)
NODE_NAME=power-usage-node
NODE_IP=10.201.0.10          # on the namespace's loopback: the namespace has no other way out
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
CLUSTER_DOMAIN=cluster.local
KUBE_BIN="$CLUSTER_CACHE/kubernetes/$KUBERNETES_VERSION/bin"
KUBECONFIG_ADMIN="$CLUSTER_STATE/pki/admin.kubeconfig"
CONTAINERD_SOCK="$CLUSTER_STATE/containerd/containerd.sock"

# in_netns CMD...: run a command inside the cluster's network namespace. nsenter keeps the host's
# mount namespace (so /sys/fs/cgroup stays visible to runc), which `ip netns exec` would replace.
in_netns() { nsenter --net="/run/netns/$CLUSTER_NETNS" -- "$@"; }

# import_images: every archive of images.sh into the cluster's containerd (the node's only image source)
import_images() {
  local archive
  for archive in "$CLUSTER_CACHE"/images/*.tar; do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --no-unpack "$archive" >/dev/null ||
      die "importing $archive into containerd failed"
  done
}
