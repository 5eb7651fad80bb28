#!/usr/bin/env bash
# Installs the Debian packages the test ground needs. Idempotent: when everything is
# already installed it only runs `dpkg -s` and returns in well under a second.
#
# usage: install-deps.sh [runtime|build|all]   (default: all)
#   runtime  what testbed.sh and images.sh need to run two clusters
#   build    what build-k8s.sh needs to compile Kubernetes from Debian's source package
set -euo pipefail

# etcd-server/etcd-client: the clusters' store (3.4, fine for apiserver 1.20).
# containerd + runc (not crun: it refuses the nodes' hybrid cgroup layout, see testbed.d/node.sh)
# + containernetworking-plugins: the nodes' runtime.
# busybox-static, umoci, gcc, libc6-dev: images built locally (no registry).
# iptables, iproute2, conntrack: kube-proxy, bridges, veths, network namespaces.
# util-linux (unshare, nsenter, mountpoint), procps (pgrep), psmisc, openssl, curl, jq: the scripts.
RUNTIME_PKGS=(etcd-server etcd-client containerd runc containernetworking-plugins busybox-static umoci
  iptables iproute2 conntrack util-linux procps openssl curl jq gcc libc6-dev socat)
# golang-github-modern-go-reflect2-dev replaces the vendored reflect2 (see build-k8s.sh).
BUILD_PKGS=(golang-go rsync make dpkg-dev golang-github-modern-go-reflect2-dev)

case "${1:-all}" in
  runtime) want=("${RUNTIME_PKGS[@]}") ;;
  build) want=("${BUILD_PKGS[@]}") ;;
  all) want=("${RUNTIME_PKGS[@]}" "${BUILD_PKGS[@]}") ;;
  *) echo "usage: $0 [runtime|build|all]" >&2; exit 2 ;;
esac

# One dpkg-query for all (fast when everything is there); the status line, because a
# removed-but-not-purged package is still "known" to dpkg.
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${want[@]}" 2>/dev/null | awk '/ install ok installed$/ {print $1}' || true)
missing=()
for p in "${want[@]}"; do
  grep -qx -- "$p" <<<"$installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: missing packages: ${missing[*]}; installing them needs root (run: sudo $0 ${1:-all})" >&2
  exit 1
fi

echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Only refresh the package lists when they are missing or older than a day: apt-get update
# costs seconds and needs the network.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mmin -1440 2>/dev/null | head -1)" ]; then
  apt-get update -qq || { echo "install-deps.sh: apt-get update failed (no network to the Debian mirror?)" >&2; exit 1; }
fi
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  echo "install-deps.sh: apt-get install ${missing[*]} failed; see the apt output above" >&2
  exit 1
fi
