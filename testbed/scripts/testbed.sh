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
# delete the other's pod logs. Details: testbed/README.md ("How the two clusters share one
# machine").
#
# The functions live in testbed.d/, one file per concern (layout, common, daemons, checks,
# pki, node, network, up, down, commands); all are sourced before any command runs.
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

# Every piece is read now, before main runs (see the last line).
# shellcheck source=testbed.d/layout.sh
source "$HERE/testbed.d/layout.sh"
# shellcheck source=testbed.d/common.sh
source "$HERE/testbed.d/common.sh"
# shellcheck source=testbed.d/daemons.sh
source "$HERE/testbed.d/daemons.sh"
# shellcheck source=testbed.d/checks.sh
source "$HERE/testbed.d/checks.sh"
# shellcheck source=testbed.d/pki.sh
source "$HERE/testbed.d/pki.sh"
# shellcheck source=testbed.d/node.sh
source "$HERE/testbed.d/node.sh"
# shellcheck source=testbed.d/network.sh
source "$HERE/testbed.d/network.sh"
# shellcheck source=testbed.d/up.sh
source "$HERE/testbed.d/up.sh"
# shellcheck source=testbed.d/down.sh
source "$HERE/testbed.d/down.sh"
# shellcheck source=testbed.d/commands.sh
source "$HERE/testbed.d/commands.sh"

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
