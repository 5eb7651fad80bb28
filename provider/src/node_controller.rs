//! The virtual Node: registration, Lease heartbeat, and NodeReady following
//! plugin reachability.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch};
use offload_runtime::kubeapi::{self, field_manager};
use offload_wire::PingResponse;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::PluginClient;
use crate::metrics::Metrics;
use crate::node::{NodeSpecInput, Reachability, lease, node_object, node_status};

/// Reachability from consecutive ping results (pure).
#[derive(Debug)]
pub struct PingTracker {
    failures: u32,
    threshold: u32,
    pub state: Reachability,
    pub last_ping: Option<PingResponse>,
}

impl PingTracker {
    pub fn new(threshold: u32) -> Self {
        PingTracker {
            failures: 0,
            threshold: threshold.max(1),
            state: Reachability::Unknown,
            last_ping: None,
        }
    }

    /// Record a ping result; returns whether the node must be rewritten.
    pub fn record(&mut self, r: Result<Option<PingResponse>, String>) -> bool {
        let before = (self.state.clone(), self.last_ping.clone());
        match r {
            Ok(p) => {
                self.failures = 0;
                self.state = Reachability::Reachable;
                if p.is_some() {
                    self.last_ping = p;
                }
            }
            Err(e) => {
                self.failures += 1;
                if self.failures >= self.threshold || self.state == Reachability::Unknown {
                    self.state = Reachability::Unreachable { error: e };
                }
            }
        }
        // An error message change alone does not force a write.
        let same_kind = std::mem::discriminant(&before.0) == std::mem::discriminant(&self.state);
        !same_kind || before.1 != self.last_ping
    }
}

pub struct NodeController {
    pub client: kube::Client,
    pub plugin: PluginClient,
    pub input: NodeSpecInput,
    pub metrics: Metrics,
    pub ping_interval: Duration,
    pub ping_failures: u32,
    pub lease_duration: i32,
    pub delete_on_shutdown: bool,
}

impl NodeController {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Register (or take over) the Node: metadata and spec.
    pub async fn register(&self, ping: Option<&PingResponse>) -> Result<Node, kube::Error> {
        let mut n = node_object(&self.input, ping);
        n.metadata.managed_fields = None;
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": n.metadata,
            "spec": n.spec,
        });
        self.nodes()
            .patch(
                &self.input.name,
                &kubeapi::apply_params(field_manager::PROVIDER),
                &Patch::Apply(&body),
            )
            .await
    }

    pub async fn write_status(
        &self,
        reach: &Reachability,
        ping: Option<&PingResponse>,
    ) -> Result<(), kube::Error> {
        let old = self
            .nodes()
            .get_opt(&self.input.name)
            .await?
            .and_then(|n| n.status)
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        let st = node_status(&self.input, reach, ping, &old, Timestamp::now());
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.input.name},
            "status": st,
        });
        self.nodes()
            .patch_status(
                &self.input.name,
                &kubeapi::apply_params(field_manager::PROVIDER_STATUS),
                &Patch::Apply(&body),
            )
            .await?;
        self.metrics.node_ready(*reach == Reachability::Reachable);
        Ok(())
    }

    async fn renew_lease(&self, node_uid: Option<&str>) -> Result<(), kube::Error> {
        let l = lease(
            &self.input.name,
            node_uid,
            self.lease_duration,
            Timestamp::now(),
        );
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let mut body = serde_json::to_value(&l).unwrap_or_default();
        body["apiVersion"] = "coordination.k8s.io/v1".into();
        body["kind"] = "Lease".into();
        api.patch(
            &self.input.name,
            &kubeapi::apply_params(field_manager::PROVIDER),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(())
    }

    /// Ping loop + lease heartbeat until `cancel`; then leave the node
    /// NotReady (or delete it when asked).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tracker = PingTracker::new(self.ping_failures);
        let first = self.plugin.ping().await.map_err(|e| e.to_string());
        tracker.record(first);
        let node_uid = loop {
            match self.register(tracker.last_ping.as_ref()).await {
                Ok(n) => break n.metadata.uid,
                Err(e) => {
                    warn!(error = %e, "cannot register node; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        };
        info!(node = %self.input.name, "node registered");
        if let Err(e) = self
            .write_status(&tracker.state, tracker.last_ping.as_ref())
            .await
        {
            warn!(error = %e, "cannot write node status");
        }
        let lease_every = Duration::from_secs((self.lease_duration.max(4) / 4) as u64);
        let mut lease_tick = tokio::time::interval(lease_every);
        let mut ping_tick = tokio::time::interval(self.ping_interval);
        ping_tick.reset();
        let mut last_status = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = lease_tick.tick() => {
                    if let Err(e) = self.renew_lease(node_uid.as_deref()).await {
                        warn!(error = %e, "cannot renew lease");
                    }
                }
                _ = ping_tick.tick() => {
                    let r = self.plugin.ping().await.map_err(|e| e.to_string());
                    if let Err(e) = &r {
                        warn!(error = %e, "plugin ping failed");
                    }
                    let changed = tracker.record(r);
                    let ping_changed_spec = changed && tracker.last_ping.as_ref().is_some_and(|p| p.taints.is_some());
                    if ping_changed_spec
                        && let Err(e) = self.register(tracker.last_ping.as_ref()).await
                    {
                        warn!(error = %e, "cannot update node spec");
                    }
                    if changed || last_status.elapsed() > Duration::from_secs(60) {
                        if changed {
                            info!(state = ?tracker.state, "node readiness changed");
                        }
                        match self.write_status(&tracker.state, tracker.last_ping.as_ref()).await {
                            Ok(()) => last_status = Instant::now(),
                            Err(e) => warn!(error = %e, "cannot write node status"),
                        }
                    }
                }
            }
        }
        if self.delete_on_shutdown {
            if let Err(e) = self
                .nodes()
                .delete(&self.input.name, &DeleteParams::default())
                .await
            {
                warn!(error = %e, "cannot delete node");
            }
        } else if let Err(e) = self
            .write_status(&Reachability::Stopped, tracker.last_ping.as_ref())
            .await
        {
            warn!(error = %e, "cannot mark node NotReady on shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_turns_unreachable_after_threshold_and_back() {
        let mut t = PingTracker::new(2);
        assert!(t.record(Ok(None)));
        assert_eq!(t.state, Reachability::Reachable);
        assert!(!t.record(Ok(None)));
        assert!(!t.record(Err("refused".into())), "one failure is tolerated");
        assert_eq!(t.state, Reachability::Reachable);
        assert!(t.record(Err("refused".into())));
        assert_eq!(
            t.state,
            Reachability::Unreachable {
                error: "refused".into()
            }
        );
        assert!(!t.record(Err("other".into())));
        assert!(t.record(Ok(None)));
        assert_eq!(t.state, Reachability::Reachable);
    }

    #[test]
    fn first_ping_failure_is_reported_at_once() {
        let mut t = PingTracker::new(3);
        assert!(t.record(Err("down".into())));
        assert!(matches!(t.state, Reachability::Unreachable { .. }));
    }

    #[test]
    fn new_ping_resources_force_a_write() {
        let mut t = PingTracker::new(2);
        t.record(Ok(None));
        let p = PingResponse {
            status: "ok".into(),
            ..Default::default()
        };
        assert!(t.record(Ok(Some(p.clone()))));
        assert!(!t.record(Ok(Some(p))));
    }
}
