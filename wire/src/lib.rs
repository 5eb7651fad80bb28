//! The one place where what the components exchange is defined: the
//! interLink wire format, our annotation/label keys and the tunnel contract.
//! The provider and gateway-manager (local side) and the plugin and bastion
//! (remote side) import these; no wire struct is defined twice, and the two
//! sides meet here only (the remote binaries never link gateway-manager).
//!
//! - [`types`]: the interLink wire structs. Field names follow the Go structs
//!   of interLink (`pkg/interlink/types.go`), not its outdated OpenAPI
//!   document: casing is mixed on purpose, so every field carries an explicit
//!   `rename`. Lists accept `null` as well as `[]` because Go serialises nil
//!   slices as `null`.
//! - [`events`]: our `GET /events` extension of the plugin API (remote pod
//!   Events for the local pods).
//! - [`keys`]: label, annotation and taint keys.
//! - [`tunnel`]: the SSH tunnel contract between gateway-manager and the
//!   bastion: the tunnel annotations and their codec, the `GatewayPort` /
//!   `ContainerPort` newtypes and the gateway's port range, SSH key
//!   generation and encoding, and the gateway's OpenSSH policy
//!   (`sshd_config`, `authorized_keys`).
//! - [`stream`]: our streaming extension (exec, attach, port-forward).
//! - [`watch`]: our status-change stream and the capabilities route.
//! - [`stats`]: our `/stats/summary` extension (CPU and memory of offloaded pods).

pub mod events;
pub mod keys;
pub mod stats;
pub mod stream;
pub mod tunnel;
pub mod types;
pub mod watch;

pub use types::*;
