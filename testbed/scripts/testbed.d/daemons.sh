# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). Starting, recognising and stopping the daemons; the Kubernetes daemons' flags.

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
    for fd in /proc/"$BASHPID"/fd/*; do
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
