//! offload-provider: a Virtual Kubelet that registers a virtual node in the
//! local cluster and runs the pods bound to it through the interLink plugin
//! protocol (our plugin directly, or an interLink API server).
//!
//! Pure logic (status mapping, node building, log queries, payload gathering,
//! retry delays) lives in modules without a `kube::Client`; the controllers
//! and servers are thin I/O layers around them. The pods of the node are run
//! by kube-runtime's `Controller` (`controller/`: a `Context`, a `reconcile`
//! made of named steps, an `error_policy` with jittered backoff); `provider`
//! wires every task under one cancellation token.
//!
//! Shared machinery comes from `offload_runtime`: TLS loading and serving
//! (`tls` here only makes the self-signed kubelet certificate), the admin
//! router, and the Kubernetes write helpers with their field managers
//! (`kubeapi`).

pub mod bastion_pin;
pub mod client;
pub mod config;
pub mod controller;
pub mod kube_requests;
pub mod kubelet_api;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod node_controller;
pub mod payload;
pub mod provider;
pub mod remote_events;
pub mod retry;
pub mod status;
pub mod tls;
pub mod tunnel;
