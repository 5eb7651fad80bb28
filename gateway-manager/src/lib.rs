//! gateway-manager: the local half of the tunnel.
pub mod annotations;
pub mod pod;
pub mod ports;
pub mod render;
