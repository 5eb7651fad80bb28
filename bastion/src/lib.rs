//! offload-bastion: the remote end of the tunnel.
//!
//! One process per remote cluster holds one SSH connection per gateway (a
//! stock OpenSSH `sshd` in a local cluster, managed by gateway-manager) and a
//! remote forward (`tcpip-forward`) per offloaded containerPort on it.
//!
//! What it shares with the local side (the tunnel annotations, the
//! `GatewayPort` type, key generation, the gateway's `sshd_config`) comes
//! from `offload_wire::tunnel`, and what every binary runs on (shutdown
//! token, tracing, admin router, durations, Kubernetes writes) from
//! `offload_runtime`: the bastion, and the plugin that installs it, do not
//! link gateway-manager.
//!
//! Pure:
//! - [`desired`]: remote pods -> desired forwards (gateway port -> target)
//!   under the bastion's [`desired::Policy`] (only configured gateways, only
//!   plugin-owned namespaces, the oldest pod keeps a clashing port); the
//!   per-connection plan (which forwards to cancel, which to request).
//!
//! I/O, from the outside in:
//! - [`run`]: `offload-bastion run`: its flags and the wiring (source ->
//!   leader gate -> supervisor, admin server with `/leader`), stopped by the
//!   one shutdown token. `main.rs` only parses the command line.
//! - [`source`]: a kube-runtime reflector over the remote pods labelled
//!   `interlink.io=offloading` (the plugin copies the local pod's tunnel
//!   annotations onto them), the gateways from `--gateways` (written by the
//!   plugin) and namespace ownership read per namespace; or a forwards file.
//! - [`leader`]: Lease-based leader election (a standby replica takes over
//!   when the holder's Lease expires); only the leader holds tunnels.
//! - [`supervisor`]: one tunnel task per gateway that has forwards.
//! - [`tunnel`]: one gateway connection (`tunnel/session.rs`): pinned host
//!   key, keepalive, reconnect with backoff, every forward re-requested after
//!   a drop, refused forwards retried; forwarded connections piped to their
//!   targets.
//! - [`metrics`]: the bastion's Prometheus metrics.
//! - [`install`]: the bastion's ServiceAccount, least-privilege RBAC, key
//!   Secret and Deployment on the remote cluster (pure builders in
//!   `install/`), written with `offload_runtime::kubeapi`.
//! - [`keyfile`]: `offload-bastion keygen`, the key on disk.
//! - [`harness`]: a real loopback OpenSSH gateway for tests and `bench`,
//!   configured with the gateway's policy from `offload_wire::tunnel::sshd`.

pub mod desired;
pub mod harness;
pub mod install;
pub mod keyfile;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod source;
pub mod supervisor;
pub mod tunnel;
