# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). Each node's containerd (and CNI) config, cgroup root and the host sysctls the nodes change.

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
