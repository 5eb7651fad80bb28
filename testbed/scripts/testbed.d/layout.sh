# shellcheck shell=bash disable=SC2034 # the other pieces read these globals
# Sourced by testbed.sh (which sets STATE, LOGS, CLUSTERS, K8S_BIN, ... and sources
# every piece of testbed.d/ before it runs a command). The two clusters' fixed parameters (see the layout in testbed.sh's header).

# Per-cluster parameters -> globals.
cluster_vars() {
  CL=$1
  C=$STATE/$CL
  case $CL in
    local)
      NODE_NAME=local-node NODE_IP=10.201.0.1 API_ADDR=10.201.0.1 API_PORT=26443
      POD_CIDR=10.244.0.0/16 SVC_CIDR=10.96.0.0/16 SVC_API_IP=10.96.0.1 NODEPORTS=30000-31499
      CNI_BRIDGE=offl-lcni0 KUBELET_PORT=11250 KUBELET_HEALTHZ=11248 PROXY_HEALTHZ=11256 PROXY_METRICS=11249
      NETNS=0
      ;;
    remote)
      NODE_NAME=remote-node NODE_IP=10.202.0.1 API_ADDR=10.202.0.254 API_PORT=26444
      POD_CIDR=10.245.0.0/16 SVC_CIDR=10.97.0.0/16 SVC_API_IP=10.97.0.1 NODEPORTS=31500-32767
      CNI_BRIDGE=offl-rcni0 KUBELET_PORT=12250 KUBELET_HEALTHZ=12248 PROXY_HEALTHZ=12256 PROXY_METRICS=12249
      NETNS=1
      ;;
    *) die "unknown cluster $1" ;;
  esac
  CGROUP_ROOT=/offload-$CL
  SOCK=$C/containerd/containerd.sock
  KC=$C/kubeconfig
}
LOCAL_NODE_LINK=offl-lnode
REMOTE_VETH_HOST=offl-rh
REMOTE_VETH_NODE=offl-rn
