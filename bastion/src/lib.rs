//! offload-bastion: the remote end of the tunnel.
//!
//! One process per remote cluster holds one SSH connection per gateway (a
//! stock OpenSSH `sshd` in a local cluster, managed by gateway-manager) and a
//! remote forward (`tcpip-forward`) per offloaded containerPort on it.
//!
//! - [`desired`]: pure: remote pods -> desired forwards; forward bookkeeping.
//! - [`source`]: a kube-runtime reflector over the remote pods labelled
//!   `interlink.io=offloading`; the plugin copies the local pod's tunnel
//!   annotations onto them, so nothing else has to tell the bastion anything.
//! - [`tunnel`]: one gateway connection: pinned host key, keepalive,
//!   reconnect with backoff, every forward re-requested after a drop, refused
//!   forwards retried.
//! - [`supervisor`]: one tunnel task per gateway that has forwards.
//! - [`admin`], [`metrics`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`install`]: the bastion Deployment, key Secret and least-privilege
//!   RBAC on the remote cluster, applied with server-side apply through
//!   `offload_runtime::kubeapi`.
//! - [`leader`]: Lease-based leader election (a standby replica takes over
//!   when the holder's Lease expires); only the leader holds tunnels.
//! - [`harness`]: a real loopback OpenSSH gateway for tests and `bench`,
//!   configured with the gateway's policy from `offload_wire::tunnel::sshd`.
//!
//! What the bastion shares with the local side (the tunnel annotations,
//! `GatewayPort`, key generation, the gateway's `sshd_config`) comes from
//! `offload_wire::tunnel`; it does not link gateway-manager.

pub mod admin;
pub mod desired;
pub mod harness;
pub mod install;
pub mod leader;
pub mod metrics;
pub mod source;
pub mod supervisor;
pub mod tunnel;
