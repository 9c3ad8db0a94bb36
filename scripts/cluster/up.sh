#!/usr/bin/env bash
# Start a one-node Kubernetes cluster with Dapr's control plane, built from Debian's packages and
# the Go module proxy, inside a network namespace of its own (`make k8s-up`; `make k8s-down` ends it).
#
# The namespace has no uplink and no route out: the node, pod and service addresses exist only in
# it, and everything outside uses none of them. Every file, mount and socket of the run is under
# $CLUSTER_STATE; down.sh removes them, the namespace and the cgroups, even after a failed start.
# Use scripts/cluster/kubectl to talk to it.
set -euo pipefail
SCRIPT_NAME=k8s-up
here="$(dirname "$0")"
. "$here/lib.sh"
. "$here/env.sh"
[ "$(id -u)" = 0 ] || die "the local cluster needs root (network namespaces, mounts, cgroups)"
started=$SECONDS

# ---------------------------------------------------------------------------------------------
say "1/8 the pieces (each skipped when its pinned version is already built)"
ensure_debian_packages etcd-server containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux openssl
bash "$here/install-kubernetes.sh"
bash "$here/install-coredns.sh"
bash "$here/install-helm.sh"
bash "$here/install-dapr-control-plane.sh"
bash "$here/images.sh"

if [ -e "/run/netns/$CLUSTER_NETNS" ] || [ -d "$CLUSTER_STATE" ]; then
  say "a previous cluster is still there: taking it down first"
  bash "$here/down.sh"
fi
# from here on a failed start leaves what down.sh needs to clean up
mkdir -p "$CLUSTER_STATE"/{pki,logs,pids,etcd,containerd,kubelet,cni,volumes}
trap 'rc=$?; [ $rc = 0 ] || say "start failed (exit $rc): logs in $CLUSTER_STATE/logs; make k8s-down removes what was made"' EXIT

# start NAME CMD...: a long-running process of the cluster, in the namespace, logged and recorded
start() {
  local name="$1"; shift
  setsid nsenter --net="/run/netns/$CLUSTER_NETNS" -- "$@" >"$CLUSTER_STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$CLUSTER_STATE/pids/$name"
}
# wait_for WHAT SECONDS LOG CMD...: poll CMD until it succeeds; on time-out show LOG's end and stop
wait_for() {
  local what="$1" limit="$2" log="$3"; shift 3
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "$what: not ready after ${limit}s; the end of $log:"
      tail -n 30 "$CLUSTER_STATE/logs/$log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  say "$what ready ($((SECONDS - started))s)"
}
kubectl() { in_netns "$KUBE_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ---------------------------------------------------------------------------------------------
say "2/8 network namespace $CLUSTER_NETNS: node $NODE_IP on its loopback, pods on cni0 ($POD_CIDR)"
ip netns add "$CLUSTER_NETNS"
in_netns ip link set lo up
in_netns ip addr add "$NODE_IP/32" dev lo
# the pod bridge exists before the first pod so that the service range can be routed into it:
# the apiserver reaches webhooks (Dapr's injector) at service addresses, and with no route it
# cannot, and the injector's webhook fails open
in_netns ip link add cni0 type bridge
in_netns ip addr add "$POD_GATEWAY/24" dev cni0
in_netns ip link set cni0 up
in_netns ip route add "$SERVICE_CIDR" dev cni0
in_netns sysctl -qw net.ipv4.ip_forward=1
in_netns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
say "3/8 certificates: one cluster CA, a certificate per component"
pki="$CLUSTER_STATE/pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=power-usage-k8s-ca" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
# cert NAME SUBJECT [SANS]: a key and a certificate signed by the cluster CA
cert() {
  local name="$1" subject="$2" sans="${3:-}" ext
  ext="$pki/$name.ext"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
  [ -z "$sans" ] || printf 'subjectAltName=%s\n' "$sans" >>"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subject" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
}
cert apiserver "/CN=kube-apiserver" \
  "IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=power-usage-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kube-proxy "/CN=system:kube-proxy"
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
# kubeconfig NAME: credentials of NAME's certificate for the apiserver
kubeconfig() {
  cat >"$pki/$1.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: power-usage
    cluster:
      server: https://$NODE_IP:6443
      certificate-authority: $pki/ca.crt
users:
  - name: $1
    user:
      client-certificate: $pki/$1.crt
      client-key: $pki/$1.key
contexts:
  - name: power-usage
    context: {cluster: power-usage, user: $1}
current-context: power-usage
YAML
}
for c in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$c"; done

# ---------------------------------------------------------------------------------------------
say "4/8 etcd and the control plane (apiserver, controller-manager, scheduler)"
# on the namespace's loopback only; fsync off: a test cluster, thrown away at the end
start etcd etcd --name power-usage --data-dir "$CLUSTER_STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster power-usage=http://127.0.0.1:2380 --unsafe-no-fsync
wait_for etcd 30 etcd.log in_netns curl -fsS http://127.0.0.1:2379/health
start kube-apiserver "$KUBE_BIN/kube-apiserver" \
  --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port=6443 \
  --etcd-servers=http://127.0.0.1:2379 \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$pki/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=false --profiling=false
wait_for kube-apiserver 90 kube-apiserver.log kubectl get --raw /readyz
start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
  --kubeconfig="$pki/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$pki/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$pki/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
start kube-scheduler "$KUBE_BIN/kube-scheduler" \
  --kubeconfig="$pki/scheduler.kubeconfig" \
  --authentication-kubeconfig="$pki/scheduler.kubeconfig" \
  --authorization-kubeconfig="$pki/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false

# ---------------------------------------------------------------------------------------------
say "5/8 containerd and the images"
ctrd="$CLUSTER_STATE/containerd"
cat >"$ctrd/config.toml" <<TOML
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$ctrd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$ctrd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/power-usage/pause:3.10"
  # runc cannot lower oom_score_adj without CAP_SYS_RESOURCE, which root lacks on these machines
  restrict_oom_score_adj = true
  # the pods' network namespaces live under the state directory too, so down.sh finds them
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "$CLUSTER_STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_STATE/cni"
TOML
cat >"$CLUSTER_STATE/cni/10-power-usage.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "power-usage",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$CLUSTER_STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
start containerd containerd --config "$ctrd/config.toml"
wait_for containerd 30 containerd.log ctr --address "$CONTAINERD_SOCK" version
import_images
say "imported $(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -vc '^sha256:') image references ($((SECONDS - started))s)"

# ---------------------------------------------------------------------------------------------
say "6/8 the node: kubelet, kube-proxy, the cluster DNS"
printf 'nameserver %s\nsearch %s\n' "$NODE_IP" "$CLUSTER_DOMAIN" >"$CLUSTER_STATE/resolv.conf"
# the pods' cgroups go under one parent of ours in every hierarchy, which down.sh removes
for h in /sys/fs/cgroup/*/; do
  [ -w "$h" ] && [ ! -L "${h%/}" ] && mkdir -p "$h/$CLUSTER_NETNS" 2>/dev/null || true
done
cat >"$CLUSTER_STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# these machines run cgroup v1 and no systemd
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /$CLUSTER_NETNS
clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $CLUSTER_STATE/resolv.conf
failSwapOn: false
# a development machine's disk is shared with everything else: never evict or collect for it
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 40
YAML
start kubelet "$KUBE_BIN/kubelet" --config="$CLUSTER_STATE/kubelet/config.yaml" \
  --kubeconfig="$pki/kubelet.kubeconfig" --root-dir="$CLUSTER_STATE/kubelet" \
  --cert-dir="$CLUSTER_STATE/kubelet/pki" --node-ip="$NODE_IP" --hostname-override="$NODE_NAME"
cat >"$CLUSTER_STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $pki/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: 10.244.0.0/16
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# pods reach services on the same bridge: masquerade so that replies come back the way they left
iptables: {masqueradeAll: true}
# conntrack's limits are the host's; a namespace may not set them
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
start kube-proxy "$KUBE_BIN/kube-proxy" --config="$CLUSTER_STATE/kube-proxy.yaml"
cat >"$CLUSTER_STATE/Corefile" <<COREFILE
.:53 {
    errors
    health 127.0.0.1:8180
    ready 127.0.0.1:8181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_ADMIN power-usage
        pods insecure
    }
    cache 30
    loadbalance
}
COREFILE
# the cluster DNS runs on the node, on its address; as root, for port 53
start coredns "$CLUSTER_CACHE/coredns/$COREDNS_VERSION/bin/coredns" -conf "$CLUSTER_STATE/Corefile"
wait_for "node $NODE_NAME" 120 kubelet.log kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
wait_for "cluster DNS" 30 coredns.log in_netns curl -fsS http://127.0.0.1:8181/ready

# ---------------------------------------------------------------------------------------------
say "7/8 storage: a default StorageClass of local volumes on the node"
kubectl apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
YAML
for i in 1 2 3 4; do
  mkdir -p "$CLUSTER_STATE/volumes/pv$i"
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-pv$i}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: local
  persistentVolumeReclaimPolicy: Retain
  local: {path: $CLUSTER_STATE/volumes/pv$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]
YAML
done

# ---------------------------------------------------------------------------------------------
say "8/8 Dapr $DAPR_VERSION control plane (Helm, the chart of the github.com/dapr/dapr module)"
# the values `dapr init -k` sets, with the images of images.sh; scheduler and placement keep their
# state in memory (one node, thrown away at the end)
in_netns "$CLUSTER_CACHE/helm/$HELM_VERSION/bin/helm" --kubeconfig "$KUBECONFIG_ADMIN" \
  install dapr "$CLUSTER_CACHE/dapr/$DAPR_VERSION/chart" --namespace dapr-system --create-namespace \
  --set global.registry=localhost/dapr --set global.tag="$DAPR_VERSION" \
  --set global.ha.enabled=false --set global.mtls.enabled=true \
  --set dapr_scheduler.cluster.inMemoryStorage=true --set dapr_placement.cluster.forceInMemoryLog=true \
  --wait --timeout 5m >"$CLUSTER_STATE/logs/helm.log" 2>&1 ||
  { tail -n 20 "$CLUSTER_STATE/logs/helm.log" >&2; kubectl get pods -n dapr-system >&2 || true; die "Dapr's chart did not come up"; }
# helm's --wait sees the injector's pod ready, not the apiserver reaching its webhook; until it does,
# the webhook fails open and an app's pod starts without daprd. A server-side dry run of a pod with
# Dapr's annotations goes through the webhook (it has no side effects) and shows when it injects.
injects() {
  kubectl create --dry-run=server -o jsonpath='{.spec.containers[*].name}' -f - <<'YAML' | grep -qw daprd
apiVersion: v1
kind: Pod
metadata:
  name: injector-probe
  namespace: default
  annotations: {dapr.io/enabled: "true", dapr.io/app-id: injector-probe}
spec:
  containers: [{name: probe, image: localhost/probe}]
YAML
}
wait_for "Dapr's sidecar injector" 180 helm.log injects
touch "$CLUSTER_STATE/.up"
say "cluster up in $((SECONDS - started))s: scripts/cluster/kubectl get pods -A"
