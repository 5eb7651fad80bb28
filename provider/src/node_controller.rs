//! The virtual Node: registration, Lease heartbeat, and the `PluginReachable`
//! condition with its NoSchedule taint following plugin pings (the node stays
//! `Ready` during an outage: see [`crate::node::outage`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PostParams};
use offload_runtime::kubeapi::{self, field_manager};
use offload_wire::PingResponse;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::PluginClient;
use crate::metrics::Metrics;
use crate::node::outage::{self, merge_taints};
use crate::node::taints;
use crate::node::{NodeSpecInput, Reachability, lease, node_object, node_status};
use crate::retry::{Backoff, jittered_period};

/// Retries of a taint write that lost a race with another writer.
const TAINT_CONFLICT_RETRIES: u32 = 5;
const TAINT_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// Retries of the first registration.
const REGISTER_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// The node status is rewritten at least this often (heartbeat of the
/// conditions, like the kubelet's `--node-status-report-frequency`).
const STATUS_REFRESH: Duration = Duration::from_secs(60);

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

/// When the node status was last written, and whether that worked (a
/// failed write is tried again at the next ping).
struct Published {
    at: Instant,
    ok: bool,
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

    /// Register (or take over) the Node: metadata and spec. Its taint list is
    /// merged into the node's current one (see [`crate::node::taints`]) and
    /// applied with the read `resourceVersion`, again on a conflict, so no
    /// one else's taint is dropped.
    pub async fn register(&self, ping: Option<&PingResponse>) -> Result<Node, kube::Error> {
        let mut attempt = 0;
        loop {
            let current = self.nodes().get_opt(&self.input.name).await?;
            let mut n = node_object(&self.input, ping);
            let desired = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let (merged, annotation) = taints::for_registration(&desired, current.as_ref());
            if let Some(spec) = n.spec.as_mut() {
                spec.taints = Some(merged);
            }
            n.metadata
                .annotations
                .get_or_insert_default()
                .insert(taints::ANNOTATION_REGISTERED_TAINTS.into(), annotation);
            n.metadata.resource_version = current.and_then(|c| c.metadata.resource_version);
            n.metadata.managed_fields = None;
            let body = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": n.metadata,
                "spec": n.spec,
            });
            let applied = self
                .nodes()
                .patch(
                    &self.input.name,
                    &kubeapi::apply_params(field_manager::PROVIDER),
                    &Patch::Apply(&body),
                )
                .await;
            match applied {
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < TAINT_CONFLICT_RETRIES => {
                    tokio::time::sleep(TAINT_RETRY.jittered(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
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
        self.metrics.node_ready(*reach != Reachability::Stopped);
        self.metrics
            .plugin_reachable(*reach == Reachability::Reachable);
        Ok(())
    }

    /// Add (`present`) or remove the outage taint, keeping every other taint:
    /// taints are an atomic list (an apply or a merge patch replaces all of
    /// it), so read, change and write it back with the read
    /// `resourceVersion`; a conflict (someone else changed the node) is read
    /// again. Returns whether it wrote.
    pub async fn sync_taint(&self, present: bool) -> Result<bool, kube::Error> {
        let mut attempt = 0;
        loop {
            let Some(node) = self.nodes().get_opt(&self.input.name).await? else {
                return Ok(false);
            };
            let existing = node.spec.and_then(|s| s.taints).unwrap_or_default();
            let Some(taints) = merge_taints(&existing, present) else {
                return Ok(false);
            };
            let body = serde_json::json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": taints},
            });
            let written = self
                .nodes()
                .patch(
                    &self.input.name,
                    &kubeapi::merge_params(field_manager::PROVIDER),
                    &Patch::Merge(&body),
                )
                .await;
            match written {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < TAINT_CONFLICT_RETRIES => {
                    tokio::time::sleep(TAINT_RETRY.jittered(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Status, then the taint it implies (a NoSchedule taint only: the
    /// offloaded pods stay).
    async fn publish(&self, reach: &Reachability, ping: Option<&PingResponse>) -> bool {
        let mut ok = true;
        if let Err(e) = self.write_status(reach, ping).await {
            warn!(error = %e, "cannot write node status");
            ok = false;
        }
        if let Some(present) = outage::wants_taint(reach) {
            match self.sync_taint(present).await {
                Ok(true) => info!(
                    present,
                    taint = offload_wire::keys::TAINT_PLUGIN_UNREACHABLE,
                    "node taint updated"
                ),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "cannot update the node's plugin-unreachable taint");
                    ok = false;
                }
            }
        }
        ok
    }

    /// A Warning Event on the node when the plugin becomes unreachable, a
    /// Normal one when it is back. A core/v1 Event in `default` naming the
    /// node as the kubelet does (uid = node name), so `kubectl describe node`
    /// lists it (1.20 refuses an events.k8s.io Event about a cluster-scoped
    /// object outside its namespace).
    async fn event_on_change(&self, before: &Reachability, after: &Reachability) {
        let Some((warning, reason, note)) = outage::transition_event(before, after) else {
            return;
        };
        self.metrics.event(reason);
        let now = Timestamp::now();
        let ev = CoreEvent {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", self.input.name, now.as_nanosecond())),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.input.name.clone()),
                uid: Some(self.input.name.clone()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(note),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some(field_manager::PROVIDER.into()),
                host: Some(self.input.name.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(field_manager::PROVIDER.into()),
            reporting_instance: Some(self.input.name.clone()),
            ..Default::default()
        };
        let events: Api<CoreEvent> = Api::namespaced(self.client.clone(), "default");
        if let Err(e) = events.create(&PostParams::default(), &ev).await {
            warn!(error = %e, reason, "cannot publish node event");
        }
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

    /// One ping: reachability, the node spec when the plugin's taints
    /// changed, an Event on a change, and the status (with the taint) when
    /// it changed, the last write failed, or every [`STATUS_REFRESH`].
    async fn ping_once(&self, tracker: &mut PingTracker, published: &mut Published) {
        let before = tracker.state.clone();
        let resources = |t: &PingTracker| t.last_ping.as_ref().and_then(|p| p.resources.clone());
        let resources_before = resources(tracker);
        let r = self.plugin.ping().await.map_err(|e| e.to_string());
        if let Err(e) = &r {
            warn!(error = %e, "plugin ping failed");
        }
        let changed = tracker.record(r);
        let reported = resources(tracker);
        if reported != resources_before {
            // What the scheduler will see (pinned flags still win).
            info!(resources = ?reported, "capacity reported by the plugin changed");
        }
        // Only a reachable plugin's taints are news.
        let ping_changed_spec = changed
            && tracker.state == Reachability::Reachable
            && tracker
                .last_ping
                .as_ref()
                .is_some_and(|p| p.taints.is_some());
        if ping_changed_spec && let Err(e) = self.register(tracker.last_ping.as_ref()).await {
            warn!(error = %e, "cannot update node spec");
        }
        if changed {
            if tracker.state != before {
                info!(state = ?tracker.state, "plugin reachability changed");
            }
            self.event_on_change(&before, &tracker.state).await;
        }
        if changed || !published.ok || published.at.elapsed() > STATUS_REFRESH {
            published.ok = self
                .publish(&tracker.state, tracker.last_ping.as_ref())
                .await;
            published.at = Instant::now();
        }
    }

    /// Register the node, retrying with a jittered backoff; `None` when
    /// cancelled first. Returns the node's uid (the Lease's owner).
    async fn register_until_done(
        &self,
        ping: Option<&PingResponse>,
        cancel: &CancellationToken,
    ) -> Option<Option<String>> {
        let mut attempt = 0;
        loop {
            match self.register(ping).await {
                Ok(n) => return Some(n.metadata.uid),
                Err(e) => {
                    warn!(error = %e, "cannot register node; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(REGISTER_RETRY.jittered(attempt)) => {}
                        _ = cancel.cancelled() => return None,
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Ping loop + lease heartbeat until `cancel` (both on jittered
    /// periods); then leave the node NotReady (or delete it when asked).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tracker = PingTracker::new(self.ping_failures);
        let first = self.plugin.ping().await.map_err(|e| e.to_string());
        tracker.record(first);
        let Some(node_uid) = self
            .register_until_done(tracker.last_ping.as_ref(), &cancel)
            .await
        else {
            return;
        };
        info!(node = %self.input.name, "node registered");
        self.event_on_change(&Reachability::Unknown, &tracker.state)
            .await;
        let mut published = Published {
            at: Instant::now(),
            ok: self
                .publish(&tracker.state, tracker.last_ping.as_ref())
                .await,
        };
        let lease_every = Duration::from_secs((self.lease_duration.max(4) / 4) as u64);
        let mut next_lease = tokio::time::Instant::now();
        let mut next_ping = tokio::time::Instant::now() + jittered_period(self.ping_interval);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(next_lease) => {
                    if let Err(e) = self.renew_lease(node_uid.as_deref()).await {
                        warn!(error = %e, "cannot renew lease");
                    }
                    next_lease = tokio::time::Instant::now() + jittered_period(lease_every);
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    self.ping_once(&mut tracker, &mut published).await;
                    next_ping = tokio::time::Instant::now() + jittered_period(self.ping_interval);
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
