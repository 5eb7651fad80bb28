//! Prometheus metrics (prometheus-client), served on `/metrics`; registered
//! into the process's one registry (`offload_runtime::admin::SharedRegistry`).

use offload_runtime::admin::{Registrar, SharedRegistry};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteCallLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

/// Every metric of the plugin, prefixed `offload_plugin_`.
pub struct Metrics {
    registry: SharedRegistry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram>,
    pub pods_managed: Gauge,
    pub remote_calls: Family<RemoteCallLabels, Counter>,
    pub orphans_deleted: Counter,
    pub orphan_delete_errors: Counter,
    pub sweep_runs: Counter,
    pub sweep_pods_kept: Family<ReasonLabels, Gauge>,
    pub sweep_callers_alive: Gauge,
    pub namespace_gc: Family<ResultLabels, Counter>,
    pub bastion_applies: Family<ResultLabels, Counter>,
    pub policy_refusals: Family<RuleLabels, Counter>,
    pub remote_schedulable_nodes: Gauge,
    pub watch_streams: Gauge,
    pub watch_changes: Counter,
    pub watch_slow_disconnects: Counter,
    pub watch_replays: Family<ResultLabels, Counter>,
    pub follow_calls: Family<ResultLabels, Counter>,
}

impl Metrics {
    /// The plugin's metrics, registered into `shared`.
    pub fn register(shared: &SharedRegistry) -> Self {
        shared.register("offload_plugin", |registry| {
            Self::register_in(registry, shared)
        })
    }

    /// The registry every metric of the process is in.
    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    fn register_in(registry: &mut Registry, shared: &SharedRegistry) -> Self {
        let mut m = Registrar::new(registry);
        // The constructor type must match the default `fn() -> M`.
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 18))) as fn() -> Histogram,
        );
        Self {
            registry: shared.clone(),
            requests: m.add(
                "http_requests",
                "Plugin API requests by endpoint and HTTP status code",
            ),
            latency: m.with(
                "http_request_duration_seconds",
                "Plugin API request latency (until the response head; log streams run longer)",
                latency,
            ),
            pods_managed: m.add(
                "pods_managed",
                "Remote pods carrying our managed-by label, from the watch cache",
            ),
            remote_calls: m.add(
                "remote_api_calls",
                "Calls made to the remote Kubernetes API outside the watch, by operation",
            ),
            orphans_deleted: m.add("orphans_deleted", "Remote pods deleted by the orphan sweep"),
            orphan_delete_errors: m.add(
                "orphan_delete_errors",
                "Deletes of orphan remote pods that failed (retried next sweep)",
            ),
            sweep_runs: m.add("sweep_runs", "Orphan sweeps run"),
            sweep_pods_kept: m.add(
                "sweep_pods_kept",
                "Remote pods the last sweep kept, by reason (named, grace, silent_caller, \
                 unknown_caller, foreign_instance, no_caller, terminating)",
            ),
            sweep_callers_alive: m.add(
                "sweep_callers_alive",
                "Callers (principal + local node) polling this process within the liveness window",
            ),
            namespace_gc: m.add(
                "namespace_gc",
                "Namespace GC outcomes (deleted, in_use, changed, gone, error)",
            ),
            bastion_applies: m.add(
                "bastion_applies",
                "Installs of the bastion (at start and on every resync), by result (ok, error)",
            ),
            policy_refusals: m.add(
                "policy_refusals",
                "Pods refused by the pod security policy, once per broken rule (e.g. baseline: capabilities)",
            ),
            remote_schedulable_nodes: m.add(
                "remote_schedulable_nodes",
                "Remote nodes (Ready, not cordoned) whose allocatable the ping reports as the virtual node's capacity",
            ),
            watch_streams: m.add(
                "watch_streams",
                "Open /status/watch streams (bounded by --max-watch-streams)",
            ),
            watch_changes: m.add(
                "watch_changes",
                "Status changes of remote pods numbered by the status watch journal",
            ),
            watch_slow_disconnects: m.add(
                "watch_slow_disconnects",
                "/status/watch streams cut because their reader fell behind (it resumes with a replay)",
            ),
            watch_replays: m.add(
                "watch_replays",
                "/status/watch streams opened, by how they started (resumed: from the token, full: every pod)",
            ),
            follow_calls: m.add(
                "follow_calls",
                "/status/follow calls, by result (matched: the digest named every running pod of the caller, mismatched: it did not and the UIDs were asked for, listed: the UIDs were sent)",
            ),
        }
    }

    pub fn bastion_apply(&self, ok: bool) {
        self.bastion_applies
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// One refused pod: each rule it broke counted once.
    pub fn policy_refusal(&self, violations: &[crate::policy::Violation]) {
        let rules: std::collections::BTreeSet<&str> =
            violations.iter().map(|v| v.rule.as_str()).collect();
        for rule in rules {
            self.policy_refusals
                .get_or_create(&RuleLabels { rule: rule.into() })
                .inc();
        }
    }

    pub fn namespace_gc_result(&self, result: &'static str) {
        self.namespace_gc
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn remote_schedulable_nodes(&self, n: usize) {
        self.remote_schedulable_nodes
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn remote_call(&self, op: &'static str) {
        self.remote_calls
            .get_or_create(&RemoteCallLabels { op })
            .inc();
    }

    pub fn encode(&self) -> String {
        // Writing to a String cannot fail.
        self.registry.encode().unwrap_or_default()
    }
}
