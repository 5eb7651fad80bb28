//! The metrics of the embedded gateway-manager (inside the provider),
//! read from the manager's state at every scrape, so the manager's code
//! needs no counters of its own. They go into the process's one registry,
//! next to the provider's, under `offload_gateway_manager_`; the standalone
//! binary's metrics are [`crate::webhook::WebhookMetrics`] (same prefix, and
//! its `tunnels` gauge means the same).

use std::sync::{Arc, Weak};

use offload_runtime::admin::SharedRegistry;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::GatewayManager;

/// Prefix of every gateway-manager metric.
pub const PREFIX: &str = "offload_gateway_manager";

/// Registers the embedded manager's metrics into `registry`. The registry
/// holds a weak reference: a stopped manager reports nothing.
pub fn register_embedded(registry: &SharedRegistry, gm: &Arc<GatewayManager>) {
    let collector = ManagerCollector {
        gm: Arc::downgrade(gm),
    };
    registry.register(PREFIX, |r| r.register_collector(Box::new(collector)));
}

struct ManagerCollector {
    gm: Weak<GatewayManager>,
}

impl std::fmt::Debug for ManagerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManagerCollector")
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(gm) = self.gm.upgrade() else {
            return Ok(());
        };
        let pods = gm.tunnel_pods();
        let up = pods
            .iter()
            .filter(|p| gm.tunnel_up(&p.uid) == Some(true))
            .count();
        let ports = pods.iter().map(|p| p.ports.len()).sum();
        gauge(
            &mut encoder,
            "tunnels",
            "Tunneled pods known to gateway-manager",
            pods.len(),
        )?;
        gauge(
            &mut encoder,
            "tunnels_up",
            "Tunneled pods whose tunnels answered the last probe",
            up,
        )?;
        gauge(
            &mut encoder,
            "ports_allocated",
            "Gateway ports held by tunneled pods",
            ports,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    #[tokio::test]
    async fn an_embedded_manager_appears_in_the_shared_registry() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client (nothing is sent)");
        let args = <crate::args::GatewayArgs as clap::FromArgMatches>::from_arg_matches(
            &<crate::args::GatewayArgs as clap::Args>::augment_args(clap::Command::new("x"))
                .get_matches_from(["x"]),
        )
        .expect("defaults");
        let gm = Arc::new(GatewayManager::new(
            client,
            Settings::new(args.spec("ns".into()), "10.0.0.1:30222"),
        ));
        let registry = SharedRegistry::default();
        register_embedded(&registry, &gm);
        let text = registry.encode().expect("encode");
        assert!(text.contains("offload_gateway_manager_tunnels 0"), "{text}");
        assert!(
            text.contains("offload_gateway_manager_tunnels_up 0"),
            "{text}"
        );
        assert!(
            text.contains("offload_gateway_manager_ports_allocated 0"),
            "{text}"
        );
        drop(gm);
        let text = registry.encode().expect("encode");
        assert!(!text.contains("tunnels"), "{text}");
    }
}
