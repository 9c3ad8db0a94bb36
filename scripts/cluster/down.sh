#!/usr/bin/env bash
# Take the local cluster down and remove everything up.sh made: its processes (and the pods'),
# mounts, cgroups, network namespaces and files. Safe to run at any time, also after a failed or
# half-finished start, and when nothing is running.
set -uo pipefail
SCRIPT_NAME=k8s-down
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/env.sh"
[ "$(id -u)" = 0 ] || die "the local cluster needs root"

cgroups() { find /sys/fs/cgroup/*/"$CLUSTER_NETNS" -depth -type d 2>/dev/null; }
# every process of the run: the recorded ones, those left in the pods' cgroups, containerd's shims
# and whatever still runs in the namespace
procs() {
  cat "$CLUSTER_STATE"/pids/* 2>/dev/null
  cgroups | while read -r d; do cat "$d/cgroup.procs" 2>/dev/null; done
  pgrep -f -- "-address $CONTAINERD_SOCK" 2>/dev/null
  [ -e "/run/netns/$CLUSTER_NETNS" ] && ip netns pids "$CLUSTER_NETNS" 2>/dev/null
}
alive() { procs | sort -u | while read -r p; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; done; }

# the kubelet first, so that it restarts nothing, then the rest politely, then by force
[ -f "$CLUSTER_STATE/pids/kubelet" ] && kill "$(cat "$CLUSTER_STATE/pids/kubelet")" 2>/dev/null
pids="$(alive)"
if [ -n "$pids" ]; then
  say "stopping $(wc -w <<<"$pids") processes"
  kill $pids 2>/dev/null
  # a short grace only: the cluster is thrown away, and its sidecars would wait out their shutdown block
  for _ in $(seq 12); do [ -z "$(alive)" ] && break; sleep 0.25; done
  pids="$(alive)"
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null
  for _ in $(seq 40); do [ -z "$(alive)" ] && break; sleep 0.25; done
fi
left="$(alive)"; [ -z "$left" ] || say "warning: processes still alive: $left"

# mounts under the state directory (pods' volumes, container root filesystems, their network
# namespaces), the deepest first
mounts() { awk -v root="$CLUSTER_STATE" 'index($5, root) == 1 {print $5}' /proc/self/mountinfo | sort -r; }
n=0
for m in $(mounts); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; n=$((n + 1)); done
[ $n = 0 ] || say "unmounted $n mounts"
[ -z "$(mounts)" ] || say "warning: still mounted: $(mounts | tr '\n' ' ')"

n=0
for d in $(cgroups); do rmdir "$d" 2>/dev/null && n=$((n + 1)); done
[ $n = 0 ] || say "removed $n cgroups"
[ -z "$(cgroups)" ] || say "warning: cgroups left: $(cgroups | head -3 | tr '\n' ' ')"

if [ -e "/run/netns/$CLUSTER_NETNS" ]; then
  ip netns delete "$CLUSTER_NETNS" && say "removed network namespace $CLUSTER_NETNS"
fi
if [ -d "$CLUSTER_STATE" ]; then
  rm -rf "$CLUSTER_STATE" && say "removed $CLUSTER_STATE"
fi
say "down"
