//! What the standalone webhook ([`crate::webhook`]) needs from the manager on
//! top of the provider API: reservations under a key that is not a pod UID
//! yet (a pod has no UID at mutating admission), and their hand-over to the
//! pod once it exists. No Kubernetes I/O here.

use std::collections::BTreeSet;

use super::{Error, GatewayManager, lock};
use offload_wire::tunnel::TunnelAnnotations;
use offload_wire::tunnel::{ContainerPort, GatewayPort, PortMap};

impl GatewayManager {
    /// Allocate one gateway port per container port under `key` (idempotent
    /// per key, all or nothing) and return the annotations to put on the pod.
    /// Nothing is written anywhere: the caller patches the pod (admission).
    pub fn reserve(
        &self,
        key: &str,
        wanted: &BTreeSet<ContainerPort>,
    ) -> Result<TunnelAnnotations, Error> {
        let host_key = self.host_key().ok_or(Error::NotReady)?;
        let public_address = self.settings().public_address;
        let ports = lock(&self.alloc).allocate(key, wanted)?;
        Ok(TunnelAnnotations {
            gateway_address: public_address,
            gateway_host_key: host_key,
            ports,
        })
    }

    /// Give back what `key` holds (an expired reservation).
    pub fn release_key(&self, key: &str) -> Option<PortMap> {
        lock(&self.alloc).release(key)
    }

    /// What `key` (a pod UID or a reservation key) holds.
    pub fn allocation(&self, key: &str) -> Option<PortMap> {
        lock(&self.alloc).get(key).cloned()
    }

    /// Who holds gateway port `port`.
    pub fn owner_of(&self, port: GatewayPort) -> Option<String> {
        lock(&self.alloc).owner_of(port).map(str::to_owned)
    }

    /// Hand the ports of reservation `from` to pod UID `to` (see
    /// [`Allocator::transfer`](crate::ports::Allocator::transfer)).
    pub fn transfer(&self, from: &str, to: &str) -> bool {
        lock(&self.alloc).transfer(from, to)
    }
}
