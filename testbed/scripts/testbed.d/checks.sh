# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). What `up` checks before and after it starts anything, and what `down` leaves behind.

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
  if ! { [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ]; }; then
    die "CNI plugins missing in /usr/lib/cni; run testbed/scripts/install-deps.sh"
  fi
  # CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21) are needed for links, namespaces and mounts.
  local capeff
  capeff=$((16#$(awk '/^CapEff/ {print $2}' /proc/self/status)))
  [ $((capeff >> 12 & 1)) = 1 ] || die "missing capability CAP_NET_ADMIN (needed for bridges, veths, iptables)"
  [ $((capeff >> 21 & 1)) = 1 ] || die "missing capability CAP_SYS_ADMIN (needed for mount/network namespaces)"
  if ! { [ -d /sys/fs/cgroup/pids ] && [ -d /sys/fs/cgroup/memory ]; }; then
    die "cgroup v1 hierarchies (pids, memory) not found under /sys/fs/cgroup; kubelet 1.20 needs cgroup v1"
  fi
  reclaim_stale_foreign
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

# foreign_alive: a testbed process still runs somewhere on the machine: one listens on a
# port every testbed binds, or one sits in the clusters' cgroups (a container, a shim).
foreign_alive() {
  local port cl
  for port in $ETCD_PORT 26443 26444 11250; do
    [ -z "$(ss -Hltn "sport = :$port")" ] || return 0
  done
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    [ -z "$(find "/sys/fs/cgroup/pids$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] || return 0
  done
  return 1
}

# reclaim_stale_foreign: a testbed of another state dir whose processes are all gone (its
# session was killed, the machine was restored from a snapshot) still holds the fixed link
# names, routes, cgroups and iptables rules, which are host-wide. Holding nothing alive,
# they are removed, with a warning naming their owner; a testbed that still runs is left
# alone (the checks below then say which port or link is taken).
reclaim_stale_foreign() {
  local l owner="" found=0
  for l in $LOCAL_NODE_LINK $REMOTE_VETH_HOST offl-lcni0; do
    ip link show "$l" >/dev/null 2>&1 && found=1
  done
  [ $found = 1 ] || return 0
  foreign_alive && return 0
  owner=$(ip -o link show "$LOCAL_NODE_LINK" 2>/dev/null | sed -n 's/.* alias offload-testbed //p')
  log "WARNING: a stopped testbed (state dir ${owner:-unknown}) left its links, routes and rules behind; none of its processes runs, removing them"
  if [ -n "$owner" ] && [ "$owner" != "$STATE" ]; then
    # Its ns files pin the remote network namespace; unmounting them frees it.
    local m
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v s="$owner/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r)
  fi
  remove_host_wide
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
