# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). `down`: stopping everything and removing every trace.

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
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r)
  step "down: cgroups, network and host settings"
  remove_host_wide
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

# remove_host_wide: what a testbed leaves outside its state dir under fixed names, shared
# by every state dir: the cgroup roots (deepest first, empty by then), the links (the
# veth's peer and the remote netns bridge vanish with the netns), the routes to the remote
# node and the iptables rules of kube-proxy, the kubelet and our CNI network.
remove_host_wide() {
  local cl h
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    for h in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
      if [ -d "$h" ]; then find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    done
  done
  ip link del "$LOCAL_NODE_LINK" 2>/dev/null || true
  ip link del offl-lcni0 2>/dev/null || true
  ip link del "$REMOTE_VETH_HOST" 2>/dev/null || true
  cluster_vars remote
  ip route del "$POD_CIDR" 2>/dev/null || true
  ip route del "$SVC_CIDR" 2>/dev/null || true
  # Only our local node runs kube-proxy and a kubelet in the host netns; CNI chains of
  # our network carry the comment `name: "offload-local"`. Nothing else is touched.
  clean_iptables iptables
  clean_iptables ip6tables
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
    # shellcheck disable=SC2001 # a prefix on every line of a multi-line text
    echo "$left" | sed 's/^/  left behind: /' >&2
    die "down could not remove everything (listed above); logs in $LOGS"
  fi
  log "down: everything stopped and removed (logs kept in $LOGS)"
}
