# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). `status`, `images`, `env`, `info` and `run`.

cmd_status() {
  local ok=0 d cl
  if [ ! -f "$STATE/layout" ]; then
    echo "testbed: not up (no state in $STATE)"
    return 1
  fi
  for d in $(daemons); do
    if alive "$d"; then
      printf '  %-28s running (pid %s)\n' "$d" "$(cat "$STATE/pids/$d.pid")"
    else
      printf '  %-28s NOT RUNNING (log: %s)\n' "$d" "$LOGS/$d.log"
      ok=1
    fi
  done
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    if api_ready; then
      printf '  %-28s ready at https://%s:%s\n' "$cl apiserver" "$API_ADDR" "$API_PORT"
      if node_ready "$cl" "$NODE_NAME"; then
        printf '  %-28s Ready (%s)\n' "$cl node $NODE_NAME" "$NODE_IP"
      else
        printf '  %-28s NOT Ready (log: %s)\n' "$cl node $NODE_NAME" "$LOGS/$cl-kubelet.log"
        ok=1
      fi
    else
      printf '  %-28s NOT ready (log: %s)\n' "$cl apiserver" "$LOGS/$cl-apiserver.log"
      ok=1
    fi
  done
  if [ $ok = 0 ]; then echo "testbed: up and healthy"; else echo "testbed: NOT healthy (fix: $0 down && $0 up)"; fi
  return $ok
}

cmd_images() {
  lock
  running || die "the testbed is not up; run: $0 up (it imports the images itself)"
  "$HERE/images.sh" build || die "building the images failed; run testbed/scripts/images.sh to see why"
  local cl
  for cl in "${CLUSTERS[@]}"; do
    cluster_vars "$cl"
    "$HERE/images.sh" import "$SOCK" || fail_with_log "importing images into $cl failed" "$LOGS/$cl-containerd.log"
  done
  log "images imported into both clusters: $("$HERE/images.sh" list | paste -sd' ' -)"
}

cmd_env() {
  [ -f "$STATE/info.json" ] || log "WARNING: the testbed is not up; run: $0 up"
  print_env
}

cmd_info() {
  [ -f "$STATE/info.json" ] || die "the testbed is not up; run: $0 up"
  cat "$STATE/info.json"
}

cmd_run() {
  cmd_up
  exec 9>&- # release the lock while we wait, so tests can use the clusters
  cat <<EOF

Both clusters are up. Kubeconfigs:
  local:  $STATE/local/kubeconfig
  remote: $STATE/remote/kubeconfig
Use them from another shell:
  eval "\$($0 env)"
  export PATH=$K8S_BIN:\$PATH
  kubectl --kubeconfig "\$KUBECONFIG_LOCAL" get nodes
  kubectl --kubeconfig "\$KUBECONFIG_REMOTE" get pods -A
Logs: $LOGS
Press Ctrl-C to stop both clusters and clean up.
EOF
  local sleeper=
  # The sleeper must not hold our stdout: whoever reads it would wait for EOF forever.
  trap 'echo; [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; cmd_down; exit 0' INT TERM
  while true; do
    sleep 3600 >/dev/null 2>&1 &
    sleeper=$!
    wait $sleeper || true
  done
}
