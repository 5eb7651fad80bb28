#!/usr/bin/env bash
# Prints a machine-wide snapshot of everything a testbed could leave behind (processes,
# mounts, links, routes, netns, iptables, cgroups, sysctls, host dirs), to diff before
# `testbed.sh up` and after `testbed.sh down`:
#
#   flock .state/testbed/.lock sh -c 'host-snapshot.sh > before; OFFLOAD_TESTBED_LOCK_HELD=1 testbed.sh up;
#     OFFLOAD_TESTBED_LOCK_HELD=1 testbed.sh down; host-snapshot.sh > after'; diff before after
#
# (Holding the lock keeps concurrent test processes from bringing the clusters back up
# in between.) Counters and other sessions' processes may differ; nothing of ours may.
set -uo pipefail
echo "== processes"
# Counts per command name (pgrep would list pids, not a comparable count).
# shellcheck disable=SC2009
ps -eo comm= | grep -E 'kube|etcd|containerd|runc|pause|busybox|httpd|sleep' | sort | uniq -c
echo "== mounts"
awk '{print $2" "$3}' /proc/mounts | grep -v -E '^/proc|^/sys/fs/cgroup ' | sort
echo "== links"
ip -br link | awk '{print $1}' | sort
echo "== routes"
ip route | sort
echo "== netns"
ls /run/netns 2>/dev/null
echo "== iptables"
iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9:]*\]//' | sort
echo "== ip6tables"
ip6tables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9:]*\]//' | sort
echo "== cgroups"
for h in /sys/fs/cgroup/*/; do find "$h" -maxdepth 1 -mindepth 1 -type d; done | sort
echo "== sysctls"
sysctl net.ipv4.ip_forward vm.overcommit_memory kernel.panic kernel.panic_on_oops \
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables \
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_max 2>&1
echo "== host dirs"
ls -d /var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni /run/containerd /var/lib/containerd 2>&1
