//! The tunnel contract: everything the local side (gateway-manager, in the
//! provider or standalone) and the remote side (the plugin and its bastion)
//! must agree on to carry a pod's ports over SSH. Pure: no I/O, no
//! Kubernetes client.
//!
//! - [`ports`]: [`GatewayPort`] and [`ContainerPort`] (distinct types, so one
//!   cannot be passed for the other), [`PortMap`] and the gateway's
//!   [`PortRange`].
//! - [`annotations`]: the tunnel annotations on a pod (keys in
//!   [`crate::keys::tunnel`]) and their codec; [`split_host_port`].
//! - [`sshkey`]: ed25519 key generation and OpenSSH encoding (the gateway's
//!   host key, the bastion's client key).
//! - [`sshd`]: the gateway's OpenSSH policy: the hardened `sshd_config` and
//!   the `authorized_keys` line that pins what the bastion may listen on.

pub mod annotations;
pub mod ports;
pub mod sshd;
pub mod sshkey;

pub use annotations::{
    AnnotationError, TunnelAnnotations, decode_ports, encode_ports, split_host_port,
};
pub use ports::{
    ContainerPort, GatewayPort, MAX_RANGE_LEN, PortMap, PortRange, RangeError, port_map,
};
pub use sshd::{GATEWAY_USER, SshdConfig, authorized_keys};
pub use sshkey::{KeyError, generate_ed25519, normalise_public_key, public_of_private};
