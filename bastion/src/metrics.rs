//! Prometheus metrics of the bastion, served on the admin port.

use offload_runtime::admin::Registrar;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why pods were ignored: `foreign_namespace`, `unknown_gateway`, `bad_annotations`.
    pub reason: String,
}

#[derive(Default)]
pub struct Metrics {
    /// Gateways the plugin configured (the only ones the bastion dials).
    pub gateways_configured: Gauge,
    /// Pods whose tunnel annotations were ignored now, by reason.
    pub pods_ignored: Family<ReasonLabels, Gauge>,
    /// Gateway ports two pods claim now (the oldest keeps each).
    pub port_clashes: Gauge,
    /// Port clashes seen (each new clash once).
    pub port_clashes_total: Counter,
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
    /// The tunnels' metrics, registered into `registry` (the
    /// `offload_bastion` sub-registry). `Metrics::default()`: unregistered.
    pub fn registered(registry: &mut Registry) -> Self {
        let mut m = Registrar::new(registry);
        Metrics {
            gateways_configured: m.add(
                "gateways_configured",
                "Gateways the plugin configured; the bastion dials no other",
            ),
            pods_ignored: m.add(
                "pods_ignored",
                "Labelled pods whose tunnel annotations are ignored (foreign namespace, unknown gateway, bad annotations)",
            ),
            port_clashes: m.add(
                "port_clashes",
                "Gateway ports claimed by more than one pod now (the oldest pod keeps the port)",
            ),
            port_clashes_total: m.add(
                "port_clashes_seen",
                "Gateway port clashes seen (each new clash counted once)",
            ),
            forwards: m.add(
                "forwards",
                "Remote forwards the gateway granted and the bastion holds",
            ),
            forwards_desired: m.add(
                "forwards_desired",
                "Remote forwards the bastion should hold",
            ),
            forward_refusals: m.add(
                "forward_refusals",
                "tcpip-forward requests the gateway refused (retried)",
            ),
            connected: m.add(
                "connected",
                "1 while the SSH connection to the gateway is up",
            ),
            reconnects: m.add("reconnects", "SSH connections re-established after a drop"),
            connect_failures: m.add(
                "connect_failures",
                "Failed attempts to connect and authenticate to the gateway",
            ),
            tunneled_connections: m.add(
                "tunneled_connections",
                "TCP connections carried through the tunnel",
            ),
            target_failures: m.add(
                "target_failures",
                "Tunneled connections whose remote target could not be reached",
            ),
            bytes: m.add("bytes", "Bytes carried through the tunnel"),
        }
    }

    pub fn gateway(address: &str) -> GatewayLabels {
        GatewayLabels {
            gateway: address.to_owned(),
        }
    }
}
