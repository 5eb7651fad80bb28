# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). `up`: the lock, bringing both clusters up, info.json and the env line.

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
