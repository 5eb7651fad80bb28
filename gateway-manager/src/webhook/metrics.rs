//! The webhook's metrics (`offload_gateway_manager_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Default)]
pub struct WebhookMetrics {
    /// Admission requests by result: patched, skipped, denied, invalid.
    pub admissions: Family<ResultLabels, Counter>,
    /// Reservations made at admission not yet handed over to a pod.
    pub reservations: Gauge,
    /// Reservations released because no pod showed up in time.
    pub reservations_expired: Counter,
    /// Pods whose reservation became theirs after creation.
    pub adopted: Counter,
    /// Tunneled pods whose ports were released.
    pub released: Counter,
    /// Tunneled pods known to the manager.
    pub tunnels: Gauge,
    /// Failed reconciliations (retried).
    pub reconcile_errors: Counter,
}

impl WebhookMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("offload_gateway_manager");
        r.register(
            "admissions",
            "Admission requests answered, by result",
            self.admissions.clone(),
        );
        r.register(
            "reservations",
            "Ports reserved at admission, not yet handed over to a created pod",
            self.reservations.clone(),
        );
        r.register(
            "reservations_expired",
            "Reservations released because their pod was never created",
            self.reservations_expired.clone(),
        );
        r.register(
            "adopted",
            "Pods whose admission reservation became theirs",
            self.adopted.clone(),
        );
        r.register(
            "released",
            "Tunneled pods whose ports and Services were released",
            self.released.clone(),
        );
        r.register(
            "tunnels",
            "Tunneled pods known to gateway-manager",
            self.tunnels.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed pod reconciliations (retried)",
            self.reconcile_errors.clone(),
        );
    }

    pub(super) fn count(&self, result: &str) {
        self.admissions
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}
