# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). The host's links and routes, each node's mount (and, remote, network) namespace, iptables cleanup.

setup_host_network() {
  sysctl -qw net.ipv4.ip_forward=1
  # Pod -> Service -> pod on the same bridge goes through iptables only with this.
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # local: node IP on an empty bridge (loopback is refused as node IP, dummy links do not exist here).
  ip link add "$LOCAL_NODE_LINK" type bridge
  # The owner's state dir, for whoever finds the fixed link names taken (reclaim_stale_foreign).
  ip link set "$LOCAL_NODE_LINK" alias "offload-testbed $STATE"
  ip addr add 10.201.0.1/32 dev "$LOCAL_NODE_LINK"
  ip link set "$LOCAL_NODE_LINK" up
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
    ip link add "$REMOTE_VETH_HOST" type veth peer name "$REMOTE_VETH_NODE"
    ip link set "$REMOTE_VETH_NODE" netns "$C/ns/net"
    ip addr add "$API_ADDR/24" dev "$REMOTE_VETH_HOST"
    ip link set "$REMOTE_VETH_HOST" up
    nsenter --net="$C/ns/net" -- sh -c "ip link set lo up && ip addr add $NODE_IP/24 dev $REMOTE_VETH_NODE &&
      ip link set $REMOTE_VETH_NODE up && ip route add default via $API_ADDR &&
      sysctl -qw net.ipv4.ip_forward=1 && { [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || sysctl -qw net.bridge.bridge-nf-call-iptables=1; }"
    ip route add "$POD_CIDR" via "$NODE_IP"
    ip route add "$SVC_CIDR" via "$NODE_IP"
    NSENTER+=(--net="$C/ns/net")
  fi
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
