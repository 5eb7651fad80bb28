//! The gateway's `sshd_config`, `authorized_keys` and SSH key generation
//! moved to the tunnel contract ([`offload_wire::tunnel::sshd`] and
//! [`offload_wire::tunnel::sshkey`]), so the bastion can use them without
//! linking gateway-manager; re-exported here for existing paths.

pub use offload_wire::tunnel::sshd::{GATEWAY_USER, SshdConfig, authorized_keys};
pub use offload_wire::tunnel::sshkey::{
    KeyError, generate_ed25519, normalise_public_key, public_of_private,
};
