//! Prometheus metrics of the bastion, served on the admin port.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    /// `host:port` of the gateway (one value per gateway: a small set).
    pub gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    /// From the gateway (local clients) to the remote pod.
    ToPod,
    /// From the remote pod back to the gateway.
    FromPod,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub gateway: String,
    pub direction: Direction,
}

#[derive(Default)]
pub struct Metrics {
    pub forwards: Family<GatewayLabels, Gauge>,
    pub forwards_desired: Family<GatewayLabels, Gauge>,
    pub forward_refusals: Family<GatewayLabels, Counter>,
    pub connected: Family<GatewayLabels, Gauge>,
    pub reconnects: Family<GatewayLabels, Counter>,
    pub connect_failures: Family<GatewayLabels, Counter>,
    pub tunneled_connections: Family<GatewayLabels, Counter>,
    pub target_failures: Family<GatewayLabels, Counter>,
    pub bytes: Family<BytesLabels, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("offload_bastion");
        r.register(
            "forwards",
            "Remote forwards the gateway granted and the bastion holds",
            self.forwards.clone(),
        );
        r.register(
            "forwards_desired",
            "Remote forwards the bastion should hold",
            self.forwards_desired.clone(),
        );
        r.register(
            "forward_refusals",
            "tcpip-forward requests the gateway refused (retried)",
            self.forward_refusals.clone(),
        );
        r.register(
            "connected",
            "1 while the SSH connection to the gateway is up",
            self.connected.clone(),
        );
        r.register(
            "reconnects",
            "SSH connections re-established after a drop",
            self.reconnects.clone(),
        );
        r.register(
            "connect_failures",
            "Failed attempts to connect and authenticate to the gateway",
            self.connect_failures.clone(),
        );
        r.register(
            "tunneled_connections",
            "TCP connections carried through the tunnel",
            self.tunneled_connections.clone(),
        );
        r.register(
            "target_failures",
            "Tunneled connections whose remote target could not be reached",
            self.target_failures.clone(),
        );
        r.register(
            "bytes",
            "Bytes carried through the tunnel",
            self.bytes.clone(),
        );
    }

    pub fn gateway(address: &str) -> GatewayLabels {
        GatewayLabels {
            gateway: address.to_owned(),
        }
    }
}
