//! What every reconcile shares: the clients, the settings, and the in-memory
//! bookkeeping (rebuilt from the cluster after a restart: nothing in it is
//! needed for correctness, only to avoid repeated events and calls).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, EventSource, Pod, PodStatus as LocalStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PostParams};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use offload_runtime::kubeapi::{self, field_manager};
use offload_wire::keys::ANNOTATION_JOB_ID;
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

use crate::client::PluginClient;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::payload::{self, Fetched};
use crate::retry::Backoff;
use gateway_manager::GatewayManager;

/// How long the UIDs of pods that left the API are remembered (the two pod
/// watches, the Controller's and the force-delete one, may lag each other).
const FORGET_GONE_AFTER: Duration = Duration::from_secs(600);

/// Everything a reconcile needs. Built with a struct literal; the
/// bookkeeping starts empty (`state: State::default()`).
pub struct Context {
    pub client: kube::Client,
    pub plugin: PluginClient,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// The Controller's pod store (only pods with `spec.nodeName` = our node).
    pub pods: Store<Pod>,
    pub host_ip: String,
    /// When this run started: older pods without a job id may have been
    /// created remotely by a previous run (the adopt step asks first).
    pub started: Timestamp,
    /// Retry delays of a pod (`--retry-base`, `--retry-max`), jittered.
    pub retry: Backoff,
    /// The tunnel's local half (`--gateway-address`), if on.
    pub tunnel: Option<Arc<GatewayManager>>,
    /// Feeds the Controller's `reconcile_on`: pods waiting for a free
    /// gateway port are reconciled as soon as a pod gives ports back.
    pub wake: UnboundedSender<ObjectRef<Pod>>,
    pub state: State,
}

/// In-memory bookkeeping, keyed by pod UID.
#[derive(Debug, Default)]
pub struct State {
    tracks: Mutex<HashMap<String, Track>>,
    /// UIDs we removed ourselves (their watch Delete needs no plugin call).
    removed: GoneUids,
    /// UIDs that left the API (never created remotely again).
    vanished: GoneUids,
    /// UIDs whose remote delete is in flight.
    deleting: Mutex<HashSet<String>>,
    /// Pods waiting for a free gateway port.
    port_waiters: Mutex<HashSet<ObjectRef<Pod>>>,
    /// Reconciles running now.
    in_flight: AtomicUsize,
    /// Event writes sent off the reconcile path, in flight at once.
    background_events: EventSlots,
}

/// `<pod>.<uid prefix>.<reason>`, within the 253 characters of a name (a
/// long pod name is cut where a name part may end).
fn one_off_event_name(pod: &str, uid: &str, reason: &str) -> String {
    let head: String = pod.chars().take(200).collect();
    let head = head.trim_end_matches(['-', '.']);
    let uid: String = uid.chars().take(8).collect();
    format!("{head}.{uid}.{}", reason.to_lowercase())
}

/// Bounds the event writes that run in the background.
#[derive(Debug)]
struct EventSlots(Arc<tokio::sync::Semaphore>);

impl Default for EventSlots {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(16)))
    }
}

/// Per pod.
#[derive(Debug, Default)]
pub(super) struct Track {
    pub first_seen: Option<Instant>,
    pub missing_reported: Option<String>,
    pub create_failure_reported: bool,
    pub delete_failure_reported: bool,
    /// Failed or postponed attempts since the last success.
    pub failures: u32,
    /// A retry is scheduled (the pod waits in the Controller's queue).
    pub retry_pending: bool,
}

/// A poisoned lock only means a reconcile panicked mid-update; the
/// bookkeeping is still consistent enough to keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// UIDs of pods that left the API, each remembered for
/// [`FORGET_GONE_AFTER`] (pruned on insert).
#[derive(Debug, Default)]
struct GoneUids(Mutex<HashMap<String, Instant>>);

impl GoneUids {
    fn insert(&self, uid: &str) {
        let mut m = lock(&self.0);
        m.retain(|_, at| at.elapsed() < FORGET_GONE_AFTER);
        m.insert(uid.to_string(), Instant::now());
    }

    fn contains(&self, uid: &str) -> bool {
        lock(&self.0).contains_key(uid)
    }
}

/// The Event recorder of the provider on `node`.
pub fn recorder(client: &kube::Client, node: &str) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: field_manager::PROVIDER.into(),
            instance: Some(node.to_string()),
        },
    )
}

/// A remote call that failed and will be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    Create,
    Delete,
}

/// Counts a running reconcile while alive.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Context {
    pub(super) fn track<R>(&self, uid: &str, f: impl FnOnce(&mut Track) -> R) -> R {
        f(lock(&self.state.tracks).entry(uid.to_string()).or_default())
    }

    pub(super) fn untrack(&self, uid: &str) {
        lock(&self.state.tracks).remove(uid);
    }

    /// Count a failed or postponed attempt; the delay before the next one.
    pub(super) fn next_retry(&self, uid: &str) -> Duration {
        let attempt = self.track(uid, |t| {
            t.retry_pending = true;
            let attempt = t.failures;
            t.failures = attempt.saturating_add(1);
            attempt
        });
        self.retry.jittered(attempt)
    }

    /// The pod succeeded (or is final): its next failure starts over.
    pub(super) fn forget_failures(&self, uid: &str) {
        // Only a pod still tracked: a removed one was untracked for good.
        if let Some(t) = lock(&self.state.tracks).get_mut(uid) {
            t.failures = 0;
        }
    }

    pub(super) fn failures(&self, uid: &str) -> u32 {
        self.track(uid, |t| t.failures)
    }

    pub(super) fn start_reconcile(&self, uid: &str) -> InFlight<'_> {
        if let Some(t) = lock(&self.state.tracks).get_mut(uid) {
            t.retry_pending = false;
        }
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.state.in_flight)
    }

    /// (pods waiting for a retry, reconciles running) for the queue metrics.
    pub(super) fn queue_counts(&self) -> (usize, usize) {
        let waiting = lock(&self.state.tracks)
            .values()
            .filter(|t| t.retry_pending)
            .count();
        (waiting, self.state.in_flight.load(Ordering::Relaxed))
    }

    pub(super) fn mark_removed(&self, uid: &str) {
        self.state.removed.insert(uid);
    }

    pub(super) fn was_removed(&self, uid: &str) -> bool {
        self.state.removed.contains(uid)
    }

    pub(super) fn mark_vanished(&self, uid: &str) {
        self.state.vanished.insert(uid);
    }

    pub(super) fn has_vanished(&self, uid: &str) -> bool {
        self.state.vanished.contains(uid)
    }

    /// Run the remote delete of `uid` marked as in flight.
    pub(super) async fn deleting<R>(&self, uid: &str, f: impl Future<Output = R>) -> R {
        lock(&self.state.deleting).insert(uid.to_string());
        let r = f.await;
        lock(&self.state.deleting).remove(uid);
        r
    }

    pub(super) fn is_deleting(&self, uid: &str) -> bool {
        lock(&self.state.deleting).contains(uid)
    }

    pub(super) fn wait_for_ports(&self, key: ObjectRef<Pod>) {
        lock(&self.state.port_waiters).insert(key);
    }

    pub(super) fn stop_waiting_for_ports(&self, key: &ObjectRef<Pod>) {
        lock(&self.state.port_waiters).remove(key);
    }

    /// Ports were given back: pods waiting for some are reconciled now.
    pub(super) fn wake_port_waiters(&self) {
        let waiting: Vec<_> = lock(&self.state.port_waiters).drain().collect();
        for k in waiting {
            // Closed only when the Controller stopped: nothing to wake then.
            let _ = self.wake.send(k);
        }
    }

    pub(super) fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub(super) async fn event(
        &self,
        pod: &Pod,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.metrics.event(reason);
        let ev = KEvent {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// The one Normal event every offloaded pod gets, without waiting for
    /// the write, so that a burst of creates is not paced by event writes (at
    /// most 16 in flight; an event is not state). A plain core/v1 Event with
    /// a name of its own, as the kubelet writes its one-off events, not
    /// through the [`Recorder`]: the Recorder keeps every event it wrote
    /// for six minutes and walks them all on each write, which at 10,000
    /// pods was megabytes and most of a burst's CPU.
    pub(super) fn event_later(&self, pod: &Pod, reason: &'static str, note: String) {
        self.metrics.event(reason);
        let ns = pod.namespace().unwrap_or_default();
        let uid = super::uid(pod);
        let now = Time(Timestamp::now());
        let event = CoreEvent {
            metadata: ObjectMeta {
                name: Some(one_off_event_name(&pod.name_any(), &uid, reason)),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: pod.object_ref(&()),
            type_: Some("Normal".into()),
            reason: Some(reason.into()),
            message: Some(note.chars().take(1000).collect()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(field_manager::PROVIDER.into()),
                host: Some(self.config.node_name.clone()),
            }),
            reporting_component: Some(field_manager::PROVIDER.into()),
            reporting_instance: Some(self.config.node_name.clone()),
            ..Default::default()
        };
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &ns);
        let slots = Arc::clone(&self.state.background_events.0);
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            match api.create(&PostParams::default(), &event).await {
                // Written by an attempt whose answer was lost.
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => warn!(error = %e, reason, "cannot publish event"),
            }
        });
    }

    /// A Warning event for `pod` about `failure`, once per failure streak
    /// (the pod's flag is cleared on success).
    pub(super) async fn warn_once(&self, pod: &Pod, failure: Failure, note: String) {
        let first = self.track(&super::uid(pod), |t| {
            let reported = match failure {
                Failure::Create => &mut t.create_failure_reported,
                Failure::Delete => &mut t.delete_failure_reported,
            };
            !std::mem::replace(reported, true)
        });
        if first {
            let (reason, action) = match failure {
                Failure::Create => ("OffloadFailed", "Create"),
                Failure::Delete => ("DeleteFailed", "Delete"),
            };
            self.event(pod, EventType::Warning, reason, action, note)
                .await;
        }
    }

    /// Write the pod status through the status subresource (server-side apply).
    pub async fn write_status(&self, pod: &Pod, st: &LocalStatus) -> Result<(), kube::Error> {
        let ns = pod.namespace().unwrap_or_default();
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name_any(), "namespace": ns},
            "status": st,
        });
        // A manager of its own for status: Kubernetes 1.20 keeps no
        // per-subresource managed fields, so an apply to `/status` under
        // `PROVIDER` would drop what `PROVIDER` applied (the pod's `JobID`,
        // the node's labels).
        self.pods_api(&ns)
            .patch_status(
                &pod.name_any(),
                &kubeapi::apply_params(field_manager::PROVIDER_STATUS),
                &Patch::Apply(&body),
            )
            .await?;
        self.metrics.status_write();
        Ok(())
    }

    /// Write a status, logging (not failing) when it cannot be written: the
    /// next reconcile or status round writes it again.
    pub(super) async fn write_status_or_warn(&self, pod: &Pod, st: &LocalStatus) {
        if let Err(e) = self.write_status(pod, st).await {
            warn!(pod = %pod.name_any(), error = %e, "cannot write status");
        }
    }

    pub(super) async fn set_job_id(&self, pod: &Pod, jid: &str) -> Result<(), kube::Error> {
        let ns = pod.namespace().unwrap_or_default();
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name_any(), "namespace": ns, "annotations": {ANNOTATION_JOB_ID: jid}},
        });
        self.pods_api(&ns)
            .patch(
                &pod.name_any(),
                &kubeapi::apply_params(field_manager::PROVIDER),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn fetch(
        &self,
        ns: &str,
        refs: &payload::PodRefs,
    ) -> Result<Fetched, kube::Error> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut f = Fetched::default();
        for name in refs.config_maps.keys() {
            f.config_maps.insert(name.clone(), cms.get_opt(name).await?);
        }
        for name in refs.secrets.keys() {
            f.secrets.insert(name.clone(), secrets.get_opt(name).await?);
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::one_off_event_name;

    #[test]
    fn one_off_event_names_fit_and_end_a_name_part_cleanly() {
        assert_eq!(
            one_off_event_name("web", "0123456789ab", "Offloaded"),
            "web.01234567.offloaded"
        );
        let long = format!("{}-{}", "a".repeat(199), "b".repeat(60));
        let n = one_off_event_name(&long, "u", "Offloaded");
        assert!(n.len() <= 253, "{}", n.len());
        assert!(
            n.starts_with(&"a".repeat(199)) && n.contains("a.u.offloaded"),
            "{n}"
        );
    }
}
