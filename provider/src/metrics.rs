//! Prometheus metrics (prometheus-client), prefixed `offload_provider_`,
//! registered into the process's one registry (`SharedRegistry`), which the
//! admin port and the kubelet API's `/metrics` serve whole (the embedded
//! gateway-manager registers there too).

use std::sync::Arc;
use std::time::Duration;

use offload_runtime::admin::SharedRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::client::PluginError;
use crate::status::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub op: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub reason: String,
}

/// All metrics, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: SharedRegistry,
    plugin_latency: Family<OpLabels, Histogram>,
    plugin_errors: Family<ErrorLabels, Counter>,
    pods: Family<PhaseLabels, Gauge>,
    queue_depth: Gauge,
    in_flight: Gauge,
    events: Family<EventLabels, Counter>,
    status_writes: Counter,
    node_ready: Gauge,
    plugin_reachable: Gauge,
}

/// Registers `metric` as `name` with `help` and hands it back.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Inner {
    fn register(registry: &mut Registry, shared: &SharedRegistry) -> Self {
        let plugin_latency = registered(
            registry,
            "plugin_call_duration_seconds",
            "Latency of plugin calls by operation",
            Family::<OpLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
        );
        let plugin_errors = registered(
            registry,
            "plugin_call_errors",
            "Failed plugin calls by operation and kind of error",
            Family::<ErrorLabels, Counter>::default(),
        );
        let pods = registered(
            registry,
            "pods",
            "Pods on the virtual node by local phase",
            Family::<PhaseLabels, Gauge>::default(),
        );
        let queue_depth = registered(
            registry,
            "queue_depth",
            "Pods waiting in the work queue",
            Gauge::default(),
        );
        let in_flight = registered(
            registry,
            "queue_in_flight",
            "Pods being worked on (bounded by --workers)",
            Gauge::default(),
        );
        let events = registered(
            registry,
            "events",
            "Events emitted by reason",
            Family::<EventLabels, Counter>::default(),
        );
        let status_writes = registered(
            registry,
            "status_writes",
            "Pod status writes",
            Counter::default(),
        );
        let node_ready = registered(
            registry,
            "node_ready",
            "1 when the virtual node is Ready",
            Gauge::default(),
        );
        registry.register(
            "kube_requests",
            "Requests to the local apiserver by method (WATCH: a watch), counted on the client",
            crate::kube_requests::process_counter(),
        );
        let plugin_reachable = registered(
            registry,
            "plugin_reachable",
            "1 when the plugin answered the last pings (node condition PluginReachable)",
            Gauge::default(),
        );
        Inner {
            registry: shared.clone(),
            plugin_latency,
            plugin_errors,
            pods,
            queue_depth,
            in_flight,
            events,
            status_writes,
            node_ready,
            plugin_reachable,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The provider's metrics in a new registry: the process's one registry,
    /// [`Metrics::registry`], where other components register theirs.
    pub fn new() -> Self {
        Self::register(&SharedRegistry::default())
    }

    /// The provider's metrics, registered into `registry`.
    pub fn register(registry: &SharedRegistry) -> Self {
        let inner = registry.register("offload_provider", |r| Inner::register(r, registry));
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The registry every metric of the process is in.
    pub fn registry(&self) -> &SharedRegistry {
        &self.inner.registry
    }
    pub fn observe_plugin_call(&self, op: &str, took: Duration, err: Option<&PluginError>) {
        self.inner
            .plugin_latency
            .get_or_create(&OpLabels { op: op.into() })
            .observe(took.as_secs_f64());
        if let Some(e) = err {
            self.inner
                .plugin_errors
                .get_or_create(&ErrorLabels {
                    op: op.into(),
                    error: e.metric_label().into(),
                })
                .inc();
        }
    }

    pub fn set_pods(&self, counts: &[(Phase, i64)]) {
        for p in Phase::ALL {
            let n = counts
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            self.inner
                .pods
                .get_or_create(&PhaseLabels {
                    phase: p.as_str().into(),
                })
                .set(n);
        }
    }

    pub fn set_queue(&self, depth: usize, in_flight: usize) {
        self.inner.queue_depth.set(depth as i64);
        self.inner.in_flight.set(in_flight as i64);
    }

    pub fn event(&self, reason: &str) {
        self.inner
            .events
            .get_or_create(&EventLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn status_write(&self) {
        self.inner.status_writes.inc();
    }

    pub fn node_ready(&self, ready: bool) {
        self.inner.node_ready.set(i64::from(ready));
    }

    pub fn plugin_reachable(&self, reachable: bool) {
        self.inner.plugin_reachable.set(i64::from(reachable));
    }

    /// Text exposition format of the whole registry.
    pub fn encode(&self) -> String {
        // Writing into a String cannot fail.
        self.inner.registry.encode().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prefixed_metrics() {
        let m = Metrics::new();
        m.observe_plugin_call(
            "create",
            Duration::from_millis(3),
            Some(&PluginError::Timeout),
        );
        m.set_pods(&[(Phase::Running, 2)]);
        m.set_queue(5, 1);
        let text = m.encode();
        assert!(
            text.contains("offload_provider_plugin_call_duration_seconds_count{op=\"create\"} 1")
        );
        assert!(text.contains(
            "offload_provider_plugin_call_errors_total{op=\"create\",error=\"timeout\"} 1"
        ));
        assert!(text.contains("offload_provider_pods{phase=\"Running\"} 2"));
        assert!(text.contains("offload_provider_queue_depth 5"));
    }
}
