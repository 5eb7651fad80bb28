#!/usr/bin/env bash
# The test ground: two real single-node Kubernetes 1.20.2 clusters on this machine,
# "local" and "remote", as the offload system sees them in production.
#
#   testbed.sh up       bring both clusters up (returns at once when they already are)
#   testbed.sh down     stop everything and remove every trace (safe to run twice)
#   testbed.sh status   show what runs; exit 0 only when both clusters are healthy
#   testbed.sh env      print `export KUBECONFIG_LOCAL=... KUBECONFIG_REMOTE=...`
#   testbed.sh info     print the layout as JSON (used by the Rust crate `testbed`)
#   testbed.sh run      up, print how to use it, wait for Ctrl-C, then down
#   testbed.sh images   (re)build the images and import them into the running clusters
#
# Env: OFFLOAD_TESTBED_DIR (state, default <repo>/.state/testbed),
#      OFFLOAD_CACHE (binaries and images, default $HOME/.cache/offload),
#      OFFLOAD_TESTBED_VERBOSE=1 (print the steps with timings),
#      OFFLOAD_TESTBED_LOCK_HELD=1 (the caller holds $STATE/.lock; see lock()).
#
# Layout (one testbed per machine: addresses, ports and link names are fixed):
#   etcd 127.0.0.1:22379, one for both clusters with prefixes /offload-local, /offload-remote
#   local:  node local-node, IP 10.201.0.1 on the empty bridge offl-lnode in the host netns,
#           apiserver https://10.201.0.1:26443, pods 10.244.0.0/16 (bridge offl-lcni0),
#           services 10.96.0.0/16, NodePorts 30000-31499
#   remote: node remote-node in its own network namespace, IP 10.202.0.1 on veth offl-rn,
#           host end offl-rh 10.202.0.254 where its apiserver listens (port 26444),
#           pods 10.245.0.0/16 (bridge offl-rcni0 inside that netns), services 10.97.0.0/16,
#           NodePorts 31500-32767; the host routes both CIDRs into the netns.
# Why the remote node has its own netns: two iptables kube-proxies in one netns delete each
# other's rules. Why each node has its own mount namespace: kubelet 1.20 hard-codes
# /var/log/pods, /var/log/containers and /var/lib/kubelet, and each kubelet's GC would
# delete the other's pod logs. Details: shared docs testbed/two-clusters.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STATE=${OFFLOAD_TESTBED_DIR:-$REPO/.state/testbed}
export OFFLOAD_CACHE=${OFFLOAD_CACHE:-$HOME/.cache/offload}
K8S_BIN=$OFFLOAD_CACHE/kubernetes-1.20.2/bin
KUBECTL=$K8S_BIN/kubectl
LOGS=$STATE/logs
CLUSTERS=(local remote)
ETCD_PORT=22379
ETCD_PEER_PORT=22380
PAUSE_IMAGE=localhost/offload/pause:1.0
# Bump when the layout or the PKI changes, so `up` never reuses an incompatible state.
LAYOUT_VERSION=1

# Per-cluster parameters -> globals.
cluster_vars() {
  CL=$1
  C=$STATE/$CL
  case $CL in
    local)
      NODE_NAME=local-node NODE_IP=10.201.0.1 API_ADDR=10.201.0.1 API_PORT=26443
      POD_CIDR=10.244.0.0/16 SVC_CIDR=10.96.0.0/16 SVC_API_IP=10.96.0.1 NODEPORTS=30000-31499
      CNI_BRIDGE=offl-lcni0 KUBELET_PORT=11250 KUBELET_HEALTHZ=11248 PROXY_HEALTHZ=11256 PROXY_METRICS=11249
      NETNS=0
      ;;
    remote)
      NODE_NAME=remote-node NODE_IP=10.202.0.1 API_ADDR=10.202.0.254 API_PORT=26444
      POD_CIDR=10.245.0.0/16 SVC_CIDR=10.97.0.0/16 SVC_API_IP=10.97.0.1 NODEPORTS=31500-32767
      CNI_BRIDGE=offl-rcni0 KUBELET_PORT=12250 KUBELET_HEALTHZ=12248 PROXY_HEALTHZ=12256 PROXY_METRICS=12249
      NETNS=1
      ;;
    *) die "unknown cluster $1" ;;
  esac
  CGROUP_ROOT=/offload-$CL
  SOCK=$C/containerd/containerd.sock
  KC=$C/kubeconfig
}
LOCAL_NODE_LINK=offl-lnode
REMOTE_VETH_HOST=offl-rh
REMOTE_VETH_NODE=offl-rn

log() { echo "testbed: $*" >&2; }
# step NAME: with OFFLOAD_TESTBED_VERBOSE=1, say which step starts and when (ms since the
# command started), to see where time goes.
T_START=$(date +%s%3N)
step() { [ "${OFFLOAD_TESTBED_VERBOSE:-0}" = 1 ] && echo "testbed: +$(($(date +%s%3N) - T_START)) ms: $*" >&2 || true; }
die() {
  echo "testbed: ERROR: $*" >&2
  exit 1
}
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- processes

# start_daemon NAME [nsenter args...] -- CMD...
# Detached (setsid, stdin from /dev/null, output to a log) so it outlives this script and
# the test process that ran it, and never holds a caller's pipe open. Every other
# inherited fd is closed: a daemon holding the lock fd (ours, or a wrapper's
# `flock FILE cmd`) would keep the testbed locked for as long as it runs.
start_daemon() {
  local name=$1
  shift
  local pre=()
  while [ "$1" != -- ]; do
    pre+=("$1")
    shift
  done
  shift
  # The command name, to tell our daemon from a recycled pid (nsenter execs it).
  basename "$1" >"$STATE/pids/$name.comm"
  [ ${#pre[@]} -gt 0 ] && set -- nsenter "${pre[@]}" -- "$@"
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1
  ) &
  echo $! >"$STATE/pids/$name.pid"
}

# alive NAME: its pid file names a running process with the expected command.
alive() {
  local name=$1 pid comm
  pid=$(cat "$STATE/pids/$name.pid" 2>/dev/null) || return 1
  comm=$(cat "$STATE/pids/$name.comm" 2>/dev/null) || return 1
  local first=
  # The first NUL-terminated word of the command line (read returns 1 at the NUL).
  IFS= read -r -d '' first 2>/dev/null <"/proc/$pid/cmdline" || true
  [ "${first##*/}" = "$comm" ] && return 0
  # Just started: still the launcher (bash closing fds, setsid, nsenter) before its exec.
  [ -n "$first" ] && [ -n "$(find "$STATE/pids/$name.pid" -newermt '-10 seconds' 2>/dev/null)" ]
}

# daemons: every daemon name of a complete testbed.
daemons() {
  echo etcd
  local cl
  for cl in "${CLUSTERS[@]}"; do
    echo "$cl-containerd $cl-apiserver $cl-controller-manager $cl-scheduler $cl-kubelet $cl-proxy"
  done
}

fail_with_log() {
  local msg=$1 logf=$2
  echo "testbed: ERROR: $msg" >&2
  if [ -f "$logf" ]; then
    echo "---- last lines of $logf ----" >&2
    tail -n 25 "$logf" >&2
    echo "----" >&2
  fi
  echo "testbed: all logs are in $LOGS; clean up with: $0 down" >&2
  exit 1
}

# wait_for DESCRIPTION TIMEOUT_S DAEMON CMD...: poll CMD until it succeeds; fail at once if
# DAEMON died, and after TIMEOUT_S with the tail of DAEMON's log.
wait_for() {
  local what=$1 timeout=$2 daemon=$3
  shift 3
  local deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$daemon" ] && ! alive "$daemon"; then
      fail_with_log "$daemon exited while waiting for $what" "$LOGS/$daemon.log"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail_with_log "timed out after ${timeout}s waiting for $what" "$LOGS/$daemon.log"
    fi
    sleep 0.2
  done
}

kc() {
  local cl=$1
  shift
  "$KUBECTL" --kubeconfig "$STATE/$cl/kubeconfig" --request-timeout=10s "$@"
}

api_ready() { curl -sf -m 2 --cacert "$C/pki/ca.crt" "https://$API_ADDR:$API_PORT/readyz" >/dev/null; }
node_ready() {
  [ "$(kc "$1" get node "$2" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
# The account and its token secret: 1.20's ServiceAccount admission refuses pods before both exist.
default_sa() { [ -n "$(kc "$1" -n default get serviceaccount default -o 'jsonpath={.secrets[0].name}' 2>/dev/null)" ]; }

# ---------------------------------------------------------------- checks

preflight() {
  [ "$(id -u)" = 0 ] || die "testbed.sh needs root (network namespaces, mounts, cgroups, iptables)"
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b is missing; run testbed/scripts/build-k8s.sh (first time 5-15 min)"
  done
  for b in etcd containerd containerd-shim-runc-v2 runc ctr umoci iptables iptables-save iptables-restore ip nsenter unshare \
    setsid flock mountpoint curl openssl conntrack ss sysctl; do
    command -v "$b" >/dev/null || die "'$b' not found; run testbed/scripts/install-deps.sh"
  done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] ||
    die "CNI plugins missing in /usr/lib/cni; run testbed/scripts/install-deps.sh"
  # CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21) are needed for links, namespaces and mounts.
  local capeff
  capeff=$((16#$(awk '/^CapEff/ {print $2}' /proc/self/status)))
  [ $((capeff >> 12 & 1)) = 1 ] || die "missing capability CAP_NET_ADMIN (needed for bridges, veths, iptables)"
  [ $((capeff >> 21 & 1)) = 1 ] || die "missing capability CAP_SYS_ADMIN (needed for mount/network namespaces)"
  [ -d /sys/fs/cgroup/pids ] && [ -d /sys/fs/cgroup/memory ] ||
    die "cgroup v1 hierarchies (pids, memory) not found under /sys/fs/cgroup; kubelet 1.20 needs cgroup v1"
  # Listening ports we are about to bind (host netns; the remote node's own ports live in its netns).
  local port
  for port in $ETCD_PORT $ETCD_PEER_PORT 26443 26444 11250 11248 11256 11249; do
    if [ -n "$(ss -Hltn "sport = :$port")" ]; then
      die "port $port is already in use: $(ss -Hltnp "sport = :$port" | head -1 | tr -s ' ')
  Is another testbed running (other OFFLOAD_TESTBED_DIR)? Stop it with its testbed.sh down, or stop that process."
    fi
  done
  local l
  for l in $LOCAL_NODE_LINK $REMOTE_VETH_HOST offl-lcni0; do
    ! ip link show "$l" >/dev/null 2>&1 || die "network link $l already exists (a testbed from another state dir?); run its testbed.sh down, or: ip link del $l"
  done
}

# running: a complete testbed of this layout runs (every daemon alive, both apiservers
# ready). A node that is not Ready does not count against it: under load a node can miss
# a heartbeat, and restarting everything would break the tests using the clusters.
running() {
  [ "$(cat "$STATE/layout" 2>/dev/null)" = "$LAYOUT_VERSION" ] || return 1
  [ -f "$STATE/info.json" ] || return 1
  local d cl
  for d in $(daemons); do alive "$d" || return 1; done
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    api_ready || return 1
  done
}

wait_nodes_ready() {
  local cl
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    node_ready "$cl" "$NODE_NAME" && continue
    step "up: waiting for node $NODE_NAME"
    wait_for "node $NODE_NAME of $cl to be Ready" "$1" "$cl-kubelet" node_ready "$cl" "$NODE_NAME"
  done
}

# ours_left: this state dir's testbed (complete or not) left something to clean up. Only
# state-dir evidence counts: the fixed link names may belong to a testbed of another
# state dir, which must not be torn down from here.
ours_left() {
  [ -f "$STATE/layout" ] && return 0
  [ -d "$STATE/pids" ] && return 0
  grep -q " $STATE/" /proc/mounts && return 0
  [ -n "$(state_pids)" ] && return 0
  return 1
}

# ---------------------------------------------------------------- pieces of `up`

gen_pki() {
  local d=$C/pki
  mkdir -p "$d"
  # EC P-256 keys: generated in milliseconds, accepted by Go, kubectl and rustls.
  local key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  # shellcheck disable=SC2086
  openssl req -x509 $key -days 3650 -subj "/CN=offload-testbed-$CL-ca" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  sign() { # sign NAME SUBJECT EXTENSIONS
    # shellcheck disable=SC2086
    openssl req $key -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 3650 \
      -extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
    rm -f "$d/$1.csr" "$d/$1.ext"
  }
  # Serving cert: every name clients use, incl. the in-cluster Service IP.
  sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:$API_ADDR,IP:127.0.0.1,IP:$SVC_API_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  # Clients: the admin (system:masters bypasses RBAC) for people, tests and the controllers;
  # the kubelet and kube-proxy with their real identities (Node authorizer, default RBAC).
  sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
  sign proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
  # The apiserver's identity towards kubelets (kubectl logs/exec), so a
  # kubelet API that authenticates clients (our provider's) accepts it.
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

write_kubeconfig() { # write_kubeconfig FILE CERT_NAME
  local d=$C/pki
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CL
  cluster:
    server: https://$API_ADDR:$API_PORT
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$d/$2.crt")
    client-key-data: $(base64 -w0 "$d/$2.key")
contexts:
- name: $CL
  context:
    cluster: $CL
    user: $2
current-context: $CL
EOF
}

write_containerd_config() {
  mkdir -p "$C/containerd"/{root,state,runc,cni,ipam}
  cat >"$C/containerd/config.toml" <<EOF
version = 2
root = "$C/containerd/root"
state = "$C/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # No CAP_SYS_RESOURCE here: without this every pod fails with
  # "can't get final child's PID from pipe" (negative oom_score_adj is refused).
  restrict_oom_score_adj = true
  # Pod netns files under our state dir instead of the host's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # runc, not crun (crun refuses this hybrid cgroup layout); own runc root so the
        # two containerds (both namespace k8s.io) never share container state.
        BinaryName = "$(command -v runc)"
        Root = "$C/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/containerd/cni"
EOF
  cat >"$C/containerd/cni/10-offload.conflist" <<EOF
{ "cniVersion": "0.4.0", "name": "offload-$CL", "plugins": [
  { "type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
    "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$POD_CIDR" }]], "routes": [{ "dst": "0.0.0.0/0" }],
              "dataDir": "$C/containerd/ipam" } },
  { "type": "portmap", "capabilities": { "portMappings": true } } ] }
EOF
}

save_sysctls() {
  # The kubelet and kube-proxy change these host-wide; `down` puts them back.
  [ -f "$STATE/sysctls" ] && return 0
  local k
  for k in net.ipv4.ip_forward vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.conf.all.route_localnet \
    net.bridge.bridge-nf-call-iptables; do
    [ -e "/proc/sys/${k//.//}" ] && echo "$k=$(sysctl -n "$k")"
  done >"$STATE/sysctls"
}

setup_host_network() {
  sysctl -qw net.ipv4.ip_forward=1
  # Pod -> Service -> pod on the same bridge goes through iptables only with this.
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # local: node IP on an empty bridge (loopback is refused as node IP, dummy links do not exist here).
  ip link add $LOCAL_NODE_LINK type bridge
  ip addr add 10.201.0.1/32 dev $LOCAL_NODE_LINK
  ip link set $LOCAL_NODE_LINK up
}

setup_namespaces() {
  mkdir -p "$C/ns" "$C/kubelet"
  # The ns files must sit on a private mount, or the new mount namespace would contain
  # (and pin) itself.
  mountpoint -q "$C/ns" || {
    mount --bind "$C/ns" "$C/ns"
    mount --make-private "$C/ns"
  }
  touch "$C/ns/mnt"
  unshare --mount="$C/ns/mnt" --propagation slave true
  # Host paths the node's daemons hard-code, replaced inside its mount namespace by
  # per-cluster dirs: the kubelet's (see above), the CNI result cache and containerd's
  # shim sockets. Nothing of a cluster then lands in, or collides in, the host's dirs.
  local d
  for d in /var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni /run/containerd; do
    # Mount points must exist on the host; remember the ones we create, `down` removes them.
    [ -d "$d" ] || {
      mkdir -p "$d"
      echo "$d" >>"$STATE/created-dirs"
    }
    mkdir -p "$C/host$d"
    nsenter --mount="$C/ns/mnt" -- mount --bind "$C/host$d" "$d"
  done
  NSENTER=(--mount="$C/ns/mnt")
  if [ "$NETNS" = 1 ]; then
    touch "$C/ns/net"
    unshare --net="$C/ns/net" true
    ip link add $REMOTE_VETH_HOST type veth peer name $REMOTE_VETH_NODE
    ip link set $REMOTE_VETH_NODE netns "$C/ns/net"
    ip addr add "$API_ADDR/24" dev $REMOTE_VETH_HOST
    ip link set $REMOTE_VETH_HOST up
    nsenter --net="$C/ns/net" -- sh -c "ip link set lo up && ip addr add $NODE_IP/24 dev $REMOTE_VETH_NODE &&
      ip link set $REMOTE_VETH_NODE up && ip route add default via $API_ADDR &&
      sysctl -qw net.ipv4.ip_forward=1 && { [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || sysctl -qw net.bridge.bridge-nf-call-iptables=1; }"
    ip route add "$POD_CIDR" via "$NODE_IP"
    ip route add "$SVC_CIDR" via "$NODE_IP"
    NSENTER+=(--net="$C/ns/net")
  fi
}

setup_cgroup_root() {
  # kubelet 1.20 refuses a --cgroup-root that does not exist in every hierarchy.
  local h
  for h in /sys/fs/cgroup/*/; do
    case $h in */unified/) continue ;; esac
    mkdir -p "$h$CGROUP_ROOT"
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset$CGROUP_ROOT/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset$CGROUP_ROOT/cpuset.mems"
}

start_apiserver() {
  start_daemon "$CL-apiserver" -- "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" --etcd-prefix="/offload-$CL" \
    --bind-address="$API_ADDR" --advertise-address="$API_ADDR" --secure-port="$API_PORT" --insecure-port=0 \
    --tls-cert-file="$C/pki/apiserver.crt" --tls-private-key-file="$C/pki/apiserver.key" \
    --client-ca-file="$C/pki/ca.crt" --cert-dir="$C/apiserver-certs" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$C/pki/sa.pub" --service-account-signing-key-file="$C/pki/sa.key" \
    --service-cluster-ip-range="$SVC_CIDR" --service-node-port-range="$NODEPORTS" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP \
    --kubelet-client-certificate="$C/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$C/pki/apiserver-kubelet-client.key" \
    --profiling=false --v=1
}

start_node_and_controllers() {
  write_kubeconfig "$C/kubelet.kubeconfig" kubelet
  write_kubeconfig "$C/proxy.kubeconfig" proxy
  start_daemon "$CL-controller-manager" -- "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$KC" --bind-address=127.0.0.1 --secure-port=0 --port=0 --leader-elect=false \
    --service-account-private-key-file="$C/pki/sa.key" --root-ca-file="$C/pki/ca.crt" \
    --use-service-account-credentials=false --cluster-name="offload-$CL" --v=1
  start_daemon "$CL-scheduler" -- "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$KC" --bind-address=127.0.0.1 --secure-port=0 --port=0 --leader-elect=false --v=1
  # --oom-score-adj=0: no CAP_SYS_RESOURCE, a negative value is refused.
  # --node-status-update-frequency=4s: the node turns Ready one status update after
  # registering; the default 10 s would make every cold start 6 s slower.
  # --max-pods=400 (default 110): many engineers' tests share the node at once, and the
  # provider benchmark offloads 300 pods; the pod
  # CIDR (/16) has room, each pod costs ~15 MiB (shim + pause).
  start_daemon "$CL-kubelet" "${NSENTER[@]}" -- "$K8S_BIN/kubelet" \
    --kubeconfig="$C/kubelet.kubeconfig" --hostname-override="$NODE_NAME" \
    --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" \
    --pod-infra-container-image="$PAUSE_IMAGE" \
    --cgroup-driver=cgroupfs --cgroup-root="$CGROUP_ROOT" \
    --root-dir="$C/kubelet" --cert-dir="$C/kubelet/pki" --volume-plugin-dir="$C/kubelet/volume-plugins" \
    --node-ip="$NODE_IP" --address="$NODE_IP" --port="$KUBELET_PORT" --read-only-port=0 \
    --healthz-bind-address=127.0.0.1 --healthz-port="$KUBELET_HEALTHZ" \
    --oom-score-adj=0 --fail-swap-on=false --node-status-update-frequency=4s --max-pods=400 \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --eviction-hard='memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
    --v=1
  local ns=()
  [ "$NETNS" = 1 ] && ns=(--net="$C/ns/net")
  # --conntrack-*=0: leave the host's conntrack sysctls alone.
  # EndpointSliceProxying=false: kube-proxy 1.20 reads Endpoints instead of
  # EndpointSlices. Its EndpointSlice path keeps one endpoint per IP
  # (kubernetes/kubernetes#101935, fixed in 1.22), and every replica of a
  # tunnelled workload sits behind the gateway pod's IP on its own port.
  start_daemon "$CL-proxy" "${ns[@]}" -- "$K8S_BIN/kube-proxy" \
    --kubeconfig="$C/proxy.kubeconfig" --hostname-override="$NODE_NAME" --cluster-cidr="$POD_CIDR" \
    --proxy-mode=iptables --oom-score-adj=0 \
    --feature-gates=EndpointSliceProxying=false \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --healthz-bind-address="127.0.0.1:$PROXY_HEALTHZ" --metrics-bind-address="127.0.0.1:$PROXY_METRICS" --v=1
}

write_info() {
  local first=1 cl
  {
    echo "{"
    echo "  \"state_dir\": \"$STATE\","
    echo "  \"kubectl\": \"$KUBECTL\","
    echo "  \"clusters\": {"
    for cl in "${CLUSTERS[@]}"; do
      cluster_vars "$cl"
      [ $first = 1 ] || echo "    ,"
      first=0
      cat <<EOF
    "$cl": {
      "kubeconfig": "$KC",
      "server": "https://$API_ADDR:$API_PORT",
      "node_name": "$NODE_NAME",
      "node_ip": "$NODE_IP",
      "pod_cidr": "$POD_CIDR",
      "service_cidr": "$SVC_CIDR",
      "node_port_range": "$NODEPORTS",
      "logs": "$LOGS"
    }
EOF
    done
    echo "  }"
    echo "}"
  } >"$STATE/info.json"
}

print_env() {
  echo "export KUBECONFIG_LOCAL=$STATE/local/kubeconfig KUBECONFIG_REMOTE=$STATE/remote/kubeconfig"
}

# ---------------------------------------------------------------- commands

# lock [-s]: exclusive (default) or shared lock on $STATE/.lock, held until exit.
# Several test processes may call `up` at once (nextest: one per test); while the clusters
# run they all pass with a shared lock in parallel, while one brings them up (exclusive)
# the others wait and then find them up.
lock() {
  mkdir -p "$STATE"
  # For wrappers that hold $STATE/.lock themselves around several commands
  # (e.g. `flock $STATE/.lock sh -c 'testbed.sh down && check'`).
  [ "${OFFLOAD_TESTBED_LOCK_HELD:-0}" = 1 ] && return 0
  [ -e /proc/self/fd/9 ] || exec 9>"$STATE/.lock"
  flock "${1:--x}" -w 600 9 || die "timed out after 600 s waiting for the lock $STATE/.lock (another testbed.sh stuck?)"
}

cmd_up() {
  lock -s
  if running; then
    wait_nodes_ready 120
    log "already up ($STATE)"
    return 0
  fi
  # Not (completely) up: take the lock exclusively and look again, someone may have
  # brought the clusters up in between.
  lock -x
  if running; then
    wait_nodes_ready 120
    log "already up ($STATE)"
    return 0
  fi
  if ours_left; then
    log "found a stopped or partly running testbed in $STATE; cleaning it up first"
    do_down
  fi
  preflight
  "$HERE/images.sh" build || die "building the images failed; run testbed/scripts/images.sh to see why"

  local t0 cl
  t0=$(now_ms)
  # Fresh run: no objects or pods of an earlier run come back (etcd and every node dir wiped).
  # Keep the previous run's logs for post-mortems.
  rm -rf "$LOGS.prev"
  [ -d "$LOGS" ] && mv "$LOGS" "$LOGS.prev"
  rm -rf "$STATE/etcd" "$STATE/pids" "$STATE/local" "$STATE/remote" "$STATE/info.json"
  mkdir -p "$LOGS" "$STATE/pids"
  echo "$LAYOUT_VERSION" >"$STATE/layout"
  save_sysctls
  setup_host_network

  start_daemon etcd -- etcd --name offload-testbed --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "offload-testbed=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --log-level warn --logger zap

  declare -A nsargs
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    mkdir -p "$C"
    gen_pki
    write_kubeconfig "$KC" admin
    write_containerd_config
    setup_namespaces
    nsargs[$cl]="${NSENTER[*]}"
    setup_cgroup_root
    # shellcheck disable=SC2086
    start_daemon "$cl-containerd" ${nsargs[$cl]} -- containerd --config "$C/containerd/config.toml"
  done

  step "up: waiting for etcd"
  wait_for "etcd to be healthy" 30 etcd curl -sf -m 1 "http://127.0.0.1:$ETCD_PORT/health"
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    start_apiserver
  done
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    step "up: images into $cl"
    wait_for "containerd of $cl to listen on $SOCK" 30 "$cl-containerd" test -S "$SOCK"
    "$HERE/images.sh" import "$SOCK" || fail_with_log "importing images into $cl failed" "$LOGS/$cl-containerd.log"
  done
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    step "up: waiting for the $cl apiserver"
    wait_for "the $cl apiserver to be ready (https://$API_ADDR:$API_PORT/readyz)" 120 "$cl-apiserver" api_ready
    read -r -a NSENTER <<<"${nsargs[$cl]}"
    start_node_and_controllers
  done
  wait_nodes_ready 180
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    wait_for "the default ServiceAccount in $cl (made by the controller-manager)" 60 "$cl-controller-manager" default_sa "$cl"
  done
  for cl in "${CLUSTERS[@]}"; do
    wait_for "kube-proxy of $cl to be healthy" 60 "$cl-proxy" proxy_healthy "$cl"
  done
  write_info
  log "both clusters up in $(($(now_ms) - t0)) ms; state in $STATE, logs in $LOGS"
}

proxy_healthy() {
  cluster_vars "$1"
  if [ "$NETNS" = 1 ]; then
    nsenter --net="$C/ns/net" -- curl -sf -m 2 "http://127.0.0.1:$PROXY_HEALTHZ/healthz"
  else
    curl -sf -m 2 "http://127.0.0.1:$PROXY_HEALTHZ/healthz"
  fi
}

# kill_wait TENTHS PID...: SIGTERM, wait up to TENTHS/10 s, then SIGKILL.
kill_wait() {
  local tenths=$1
  shift
  local pids=("$@") p
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq "$tenths"); do
    local any=0
    for p in "${pids[@]}"; do [ -e "/proc/$p" ] && any=1; done
    [ $any = 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  sleep 0.2
}

# pids_of DAEMON...: pids of those that are alive.
pids_of() {
  local d
  for d in "$@"; do alive "$d" && cat "$STATE/pids/$d.pid"; done
  return 0
}

do_down() {
  local cl d p
  # Everything of a testbed is thrown away (state dir wiped, namespaces freed, rules
  # removed), so nothing needs a graceful shutdown: a short SIGTERM grace, then SIGKILL.
  step "down: stopping daemons"
  # shellcheck disable=SC2046
  kill_wait 10 $(pids_of $(daemons))
  # Whatever survived: every process naming our state dir (the shims carry their
  # containerd's socket path; daemons whose pid files an interrupted `up` lost) and every
  # process left in the clusters' cgroups (the containers).
  step "down: killing shims and containers"
  local killed=()
  for p in $(state_pids) $(find /sys/fs/cgroup/pids/offload-local /sys/fs/cgroup/pids/offload-remote \
    -name cgroup.procs -exec cat {} + 2>/dev/null); do
    kill -KILL "$p" 2>/dev/null && killed+=("$p")
  done
  # Until they are gone from the process table (reaped), not just out of their cgroups.
  for _ in $(seq 100); do
    local any=0
    for p in "${killed[@]}"; do [ -e "/proc/$p" ] && any=1; done
    [ $any = 0 ] && break
    sleep 0.1
  done
  step "down: unmounting"
  # Mounts under the state dir (ns files, anything bind-mounted), deepest first;
  # unmounting the ns files frees the namespaces and all mounts inside them.
  local m
  for m in $(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # cgroups, deepest first (empty by now).
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    local h
    for h in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
      [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
  step "down: network and host settings"
  # Links (the veth's peer and the remote netns bridge vanish with the netns) and routes.
  ip link del $LOCAL_NODE_LINK 2>/dev/null || true
  ip link del offl-lcni0 2>/dev/null || true
  ip link del $REMOTE_VETH_HOST 2>/dev/null || true
  cluster_vars remote
  ip route del "$POD_CIDR" 2>/dev/null || true
  ip route del "$SVC_CIDR" 2>/dev/null || true
  # iptables rules in the host netns: kube-proxy's and the kubelet's KUBE-* chains (only
  # our local node runs them here) and the CNI chains of our network (comment `name:
  # "offload-local"`), nothing else.
  clean_iptables iptables
  clean_iptables ip6tables
  # Host-wide settings and directories we changed or created.
  if [ -f "$STATE/sysctls" ]; then
    local kv
    while read -r kv; do sysctl -qw "$kv" 2>/dev/null || true; done <"$STATE/sysctls"
    rm -f "$STATE/sysctls"
  fi
  if [ -f "$STATE/created-dirs" ]; then
    # Only if empty: our daemons wrote to per-cluster dirs mounted over them, so anything
    # inside belongs to someone else.
    while read -r d; do rmdir "$d" 2>/dev/null || [ ! -e "$d" ] || log "WARNING: $d is not empty, left in place"; done <"$STATE/created-dirs"
    rm -f "$STATE/created-dirs"
  fi
  rm -rf "$STATE/etcd" "$STATE/pids" "$STATE/local" "$STATE/remote" "$STATE/info.json" "$STATE/layout"
  step "down: done"
}

# state_pids: processes whose command line names this state dir (our daemons and shims,
# also ones whose pid files are gone).
state_pids() {
  local p cmd
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case $cmd in *"$STATE/"*) echo "${p#/proc/}" ;; esac
  done
}

# leftovers: prints every trace of a testbed that is still on the machine.
leftovers() {
  local p cmd h
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case $cmd in *"$STATE/"*) echo "process ${p#/proc/}: ${cmd:0:160}" ;; esac
  done
  for h in /sys/fs/cgroup/*/offload-local /sys/fs/cgroup/*/offload-remote; do
    [ -d "$h" ] && echo "cgroup $h"
  done
  awk -v s="$STATE/" 'index($2, s) == 1 {print "mount " $2}' /proc/mounts
  ip -br link 2>/dev/null | awk '$1 ~ /^offl-/ {print "link " $1}'
  cluster_vars remote
  ip route 2>/dev/null | awk -v p="$POD_CIDR" -v s="$SVC_CIDR" '$1 == p || $1 == s {print "route " $0}'
  iptables-save 2>/dev/null | grep -E 'KUBE-|offload-(local|remote)' | sed 's/^/iptables /' | head -5
  ip6tables-save 2>/dev/null | grep -E 'KUBE-|offload-(local|remote)' | sed 's/^/ip6tables /' | head -5
  return 0
}

clean_iptables() {
  local ipt=$1 save chains
  command -v "$ipt-save" >/dev/null || return 0
  save=$("$ipt-save" 2>/dev/null) || return 0
  grep -q -E 'KUBE-|offload-(local|remote)' <<<"$save" || return 0
  # CNI chain names used by our network's rules.
  chains=$(grep -E 'name: \\"offload-(local|remote)\\"' <<<"$save" | grep -o -E 'CNI-[0-9a-f]{16,}' | sort -u | paste -sd'|' - || true)
  local pattern='KUBE-|offload-(local|remote)'
  [ -n "$chains" ] && pattern="$pattern|$chains"
  grep -v -E "$pattern" <<<"$save" | "$ipt-restore" || log "WARNING: restoring $ipt rules without ours failed; check with $ipt-save"
}

cmd_down() {
  lock
  if ! ours_left; then
    log "down: no testbed in $STATE, nothing to do"
    return 0
  fi
  do_down
  local left
  left=$(leftovers)
  if [ -n "$left" ]; then
    echo "$left" | sed 's/^/  left behind: /' >&2
    die "down could not remove everything (listed above); logs in $LOGS"
  fi
  log "down: everything stopped and removed (logs kept in $LOGS)"
}

cmd_status() {
  local ok=0 d cl
  if [ ! -f "$STATE/layout" ]; then
    echo "testbed: not up (no state in $STATE)"
    return 1
  fi
  for d in $(daemons); do
    if alive "$d"; then
      printf '  %-28s running (pid %s)\n' "$d" "$(cat "$STATE/pids/$d.pid")"
    else
      printf '  %-28s NOT RUNNING (log: %s)\n' "$d" "$LOGS/$d.log"
      ok=1
    fi
  done
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    if api_ready; then
      printf '  %-28s ready at https://%s:%s\n' "$cl apiserver" "$API_ADDR" "$API_PORT"
      if node_ready "$cl" "$NODE_NAME"; then
        printf '  %-28s Ready (%s)\n' "$cl node $NODE_NAME" "$NODE_IP"
      else
        printf '  %-28s NOT Ready (log: %s)\n' "$cl node $NODE_NAME" "$LOGS/$cl-kubelet.log"
        ok=1
      fi
    else
      printf '  %-28s NOT ready (log: %s)\n' "$cl apiserver" "$LOGS/$cl-apiserver.log"
      ok=1
    fi
  done
  if [ $ok = 0 ]; then echo "testbed: up and healthy"; else echo "testbed: NOT healthy (fix: $0 down && $0 up)"; fi
  return $ok
}

cmd_images() {
  lock
  running || die "the testbed is not up; run: $0 up (it imports the images itself)"
  "$HERE/images.sh" build || die "building the images failed; run testbed/scripts/images.sh to see why"
  local cl
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    "$HERE/images.sh" import "$SOCK" || fail_with_log "importing images into $cl failed" "$LOGS/$cl-containerd.log"
  done
  log "images imported into both clusters: $("$HERE/images.sh" list | paste -sd' ' -)"
}

cmd_env() {
  [ -f "$STATE/info.json" ] || log "WARNING: the testbed is not up; run: $0 up"
  print_env
}

cmd_info() {
  [ -f "$STATE/info.json" ] || die "the testbed is not up; run: $0 up"
  cat "$STATE/info.json"
}

cmd_run() {
  cmd_up
  exec 9>&- # release the lock while we wait, so tests can use the clusters
  cat <<EOF

Both clusters are up. Kubeconfigs:
  local:  $STATE/local/kubeconfig
  remote: $STATE/remote/kubeconfig
Use them from another shell:
  eval "\$($0 env)"
  export PATH=$K8S_BIN:\$PATH
  kubectl --kubeconfig "\$KUBECONFIG_LOCAL" get nodes
  kubectl --kubeconfig "\$KUBECONFIG_REMOTE" get pods -A
Logs: $LOGS
Press Ctrl-C to stop both clusters and clean up.
EOF
  local sleeper=
  # The sleeper must not hold our stdout: whoever reads it would wait for EOF forever.
  trap 'echo; [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; cmd_down; exit 0' INT TERM
  while true; do
    sleep 3600 >/dev/null 2>&1 &
    sleeper=$!
    wait $sleeper || true
  done
}

main() {
  case ${1:-} in
    up)
      cmd_up # not in an && list: that would switch off set -e inside it
      print_env
      ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    info) cmd_info ;;
    run) cmd_run ;;
    images) cmd_images ;;
    *)
      echo "usage: $0 up|down|status|env|info|run|images" >&2
      exit 2
      ;;
  esac
}

# One line, so bash has read the whole file before running anything: editing the script
# while a (long) `up` runs cannot change what that run executes.
main "$@"; exit
