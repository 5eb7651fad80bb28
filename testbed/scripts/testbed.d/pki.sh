# shellcheck shell=bash
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). Each cluster's CA, certificates and kubeconfigs (openssl, EC P-256).

gen_pki() {
  local d=$C/pki
  mkdir -p "$d"
  # EC P-256 keys: generated in milliseconds, accepted by Go, kubectl and rustls.
  local key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  # shellcheck disable=SC2086
  openssl req -x509 $key -days 3650 -subj "/CN=offload-testbed-$CL-ca" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  sign() { # sign NAME SUBJECT EXTENSIONS
    # shellcheck disable=SC2086
    openssl req $key -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 3650 \
      -extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
    rm -f "$d/$1.csr" "$d/$1.ext"
  }
  # Serving cert: every name clients use, incl. the in-cluster Service IP.
  sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:$API_ADDR,IP:127.0.0.1,IP:$SVC_API_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  # Clients: the admin (system:masters bypasses RBAC) for people, tests and the controllers;
  # the kubelet and kube-proxy with their real identities (Node authorizer, default RBAC).
  sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
  sign proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
  # The apiserver's identity towards kubelets (kubectl logs/exec), so a
  # kubelet API that authenticates clients (our provider's) accepts it.
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

write_kubeconfig() { # write_kubeconfig FILE CERT_NAME
  local d=$C/pki
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CL
  cluster:
    server: https://$API_ADDR:$API_PORT
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$d/$2.crt")
    client-key-data: $(base64 -w0 "$d/$2.key")
contexts:
- name: $CL
  context:
    cluster: $CL
    user: $2
current-context: $CL
EOF
}
