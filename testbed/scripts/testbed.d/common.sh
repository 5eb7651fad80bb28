# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). Logging, kubectl and the health probes every command uses.

log() { echo "testbed: $*" >&2; }
# step NAME: with OFFLOAD_TESTBED_VERBOSE=1, say which step starts and when (ms since the
# command started), to see where time goes.
T_START=$(date +%s%3N)
step() {
  if [ "${OFFLOAD_TESTBED_VERBOSE:-0}" = 1 ]; then
    echo "testbed: +$(($(date +%s%3N) - T_START)) ms: $*" >&2
  fi
}
die() {
  echo "testbed: ERROR: $*" >&2
  exit 1
}
now_ms() { date +%s%3N; }

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

proxy_healthy() {
  cluster_vars "$1"
  if [ "$NETNS" = 1 ]; then
    nsenter --net="$C/ns/net" -- curl -sf -m 2 "http://127.0.0.1:$PROXY_HEALTHZ/healthz"
  else
    curl -sf -m 2 "http://127.0.0.1:$PROXY_HEALTHZ/healthz"
  fi
}
