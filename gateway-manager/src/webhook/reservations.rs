//! The webhook's state: ports reserved at admission (in the manager's
//! allocator under a reservation key) until the created pod takes them over,
//! and the pods whose reconciliation is to be retried. Admission answers come
//! from here ([`Webhook::admit`]); the watcher backstop
//! ([`super::backstop`]) and the sweeper drive the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use offload_wire::keys::tunnel;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission::{Decision, annotation_patch, decide, reservation_matches, targets_node};
use super::metrics::WebhookMetrics;
use crate::manager::{Error as ManagerError, GatewayManager, lock};
use crate::pod::{finished, tcp_container_ports};
use offload_wire::tunnel::{TunnelAnnotations, decode_ports, encode_ports};

/// What the sweeper retries for a pod (by UID).
pub(super) enum Retry {
    /// Its reconciliation failed.
    Reconcile(Pod),
    /// It left the unscheduled-pods watch and could not be looked up: deleted
    /// (release it) or bound (nothing to do)?
    ConfirmGone(Pod),
}

pub struct Webhook {
    pub(super) gm: Arc<GatewayManager>,
    pub(super) node: String,
    pending_ttl: Duration,
    /// Reservation key -> when it was made.
    pending: Mutex<HashMap<String, Instant>>,
    /// Pods (by UID) to look at again, by the sweeper.
    retry: Mutex<HashMap<String, Retry>>,
    pub metrics: WebhookMetrics,
}

impl Webhook {
    pub fn new(gm: Arc<GatewayManager>, node: impl Into<String>, pending_ttl: Duration) -> Self {
        Self {
            gm,
            node: node.into(),
            pending_ttl,
            pending: Mutex::new(HashMap::new()),
            retry: Mutex::new(HashMap::new()),
            metrics: WebhookMetrics::default(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn manager(&self) -> &Arc<GatewayManager> {
        &self.gm
    }

    /// Reservations not handed over yet.
    pub fn pending(&self) -> Vec<String> {
        lock(&self.pending).keys().cloned().collect()
    }

    /// Answer one admission request.
    pub fn admit(&self, req: &AdmissionRequest<Pod>) -> AdmissionResponse {
        let resp = AdmissionResponse::from(req);
        let (key, wanted) = match decide(req, &self.node) {
            Decision::Skip(why) => {
                debug!(namespace = ?req.namespace, name = %req.name, reason = why, "admitted untouched");
                self.metrics.count("skipped");
                return resp;
            }
            Decision::Reserve { key, wanted } => (key, wanted),
        };
        let Some(pod) = req.object.as_ref() else {
            return resp;
        };
        let ann = match self.gm.reserve(&key, &wanted) {
            Ok(a) => a,
            Err(e) => {
                warn!(key = %key, error = %e, "cannot reserve tunnel ports; pod denied");
                self.metrics.count("denied");
                return resp.deny(format!(
                    "offload gateway-manager: cannot give this pod tunnel ports for virtual \
                     node {}: {e}",
                    self.node
                ));
            }
        };
        if req.dry_run {
            self.gm.release_key(&key);
        } else {
            let mut pending = lock(&self.pending);
            // (Re)start the clock: a name reused after a failed create must
            // not inherit the old reservation's age.
            pending.insert(key.clone(), Instant::now());
            self.metrics.reservations.set(pending.len() as i64);
        }
        info!(key = %key, ports = %encode_ports(&ann.ports), dry_run = req.dry_run, "tunnel ports reserved at admission");
        self.patched(resp, pod, &ann)
    }

    /// `resp` with the patch that puts `ann` on `pod`.
    fn patched(
        &self,
        resp: AdmissionResponse,
        pod: &Pod,
        ann: &TunnelAnnotations,
    ) -> AdmissionResponse {
        let patch = annotation_patch(pod, ann);
        match serde_json::from_value(patch).map(|p| resp.clone().with_patch(p)) {
            Ok(Ok(r)) => {
                self.metrics.count("patched");
                r
            }
            // Cannot happen (we built the patch), but never panic on it.
            Ok(Err(e)) => {
                self.metrics.count("invalid");
                resp.deny(format!("cannot encode the patch: {e}"))
            }
            Err(e) => {
                self.metrics.count("invalid");
                resp.deny(format!("cannot encode the patch: {e}"))
            }
        }
    }

    /// After creation: hand the reservation over to the pod, allocate if it
    /// has none, annotate if needed, apply its Services. Idempotent.
    pub async fn reconcile_pod(&self, pod: &Pod) -> Result<(), ManagerError> {
        let Some(uid) = pod.metadata.uid.clone() else {
            return Ok(());
        };
        if !targets_node(pod, &self.node) {
            return Ok(());
        }
        if finished(pod) {
            return self.release(pod).await;
        }
        if tcp_container_ports(pod).is_empty() || self.gm.knows(&uid) {
            return Ok(());
        }
        self.adopt(pod, &uid);
        let res = self.gm.prepare_pod(pod).await.map(|_| ());
        self.metrics.tunnels.set(self.gm.tunnel_pods().len() as i64);
        res
    }

    /// Move the reservation holding the pod's annotated ports to its UID.
    fn adopt(&self, pod: &Pod, uid: &str) {
        let Some(ports) = pod
            .annotations()
            .get(tunnel::PORTS)
            .and_then(|v| decode_ports(v).ok())
        else {
            return;
        };
        let Some(first) = ports.values().next() else {
            return;
        };
        let Some(owner) = self.gm.owner_of(*first) else {
            return;
        };
        if reservation_matches(&owner, pod)
            && self.gm.allocation(&owner).as_ref() == Some(&ports)
            && self.gm.transfer(&owner, uid)
        {
            let mut pending = lock(&self.pending);
            pending.remove(&owner);
            self.metrics.reservations.set(pending.len() as i64);
            self.metrics.adopted.inc();
            info!(pod = %pod.name_any(), namespace = ?pod.metadata.namespace, uid, "admission reservation handed over to the pod");
        }
    }

    /// The pod is gone (or finished): give its ports back, delete its Services.
    pub async fn release(&self, pod: &Pod) -> Result<(), ManagerError> {
        let Some(uid) = pod.metadata.uid.clone() else {
            return Ok(());
        };
        lock(&self.retry).remove(&uid);
        // Deleted before the watcher handed its reservation over.
        self.adopt(pod, &uid);
        if !self.gm.knows(&uid) {
            return Ok(());
        }
        self.gm.release_pod(pod).await?;
        self.metrics.released.inc();
        self.metrics.tunnels.set(self.gm.tunnel_pods().len() as i64);
        info!(pod = %pod.name_any(), namespace = ?pod.metadata.namespace, uid, "tunnel ports released");
        Ok(())
    }

    /// The pod left the watch of unscheduled pods: it was deleted (release
    /// it) or bound to a node (the watch of the node's pods has it). Which
    /// one, only the apiserver knows.
    pub(super) async fn release_if_gone(&self, pod: Pod) {
        let (Some(uid), Some(ns)) = (pod.metadata.uid.clone(), pod.metadata.namespace.clone())
        else {
            return;
        };
        // Nothing to release (no ports held, no reservation written on it):
        // no need to ask the apiserver, as for every pod that just got bound.
        if !self.gm.knows(&uid) && !pod.annotations().contains_key(tunnel::PORTS) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.gm.client(), &ns);
        match pods.get_opt(&pod.name_any()).await {
            Ok(Some(live)) if live.metadata.uid.as_deref() == Some(uid.as_str()) => {}
            Ok(_) => self.release_or_log(&pod).await,
            Err(e) => {
                self.metrics.reconcile_errors.inc();
                warn!(pod = %pod.name_any(), namespace = %ns, error = %e, "cannot tell whether a pod was deleted; retrying");
                lock(&self.retry).insert(uid, Retry::ConfirmGone(pod));
            }
        }
    }

    /// [`release`](Self::release), failures logged and counted.
    pub(super) async fn release_or_log(&self, pod: &Pod) {
        if let Err(e) = self.release(pod).await {
            self.metrics.reconcile_errors.inc();
            warn!(pod = %pod.name_any(), namespace = ?pod.metadata.namespace, error = %e, "cannot release tunnel ports");
        }
    }

    pub(super) async fn reconcile_or_retry(&self, pod: Pod) {
        if let Err(e) = self.reconcile_pod(&pod).await {
            self.metrics.reconcile_errors.inc();
            warn!(pod = %pod.name_any(), namespace = ?pod.metadata.namespace, error = %e, "tunnel reconcile failed; retrying");
            if let Some(uid) = pod.metadata.uid.clone() {
                lock(&self.retry).insert(uid, Retry::Reconcile(pod));
            }
        }
    }

    /// One sweep: release reservations older than the TTL, retry failed pods.
    pub async fn sweep(&self) {
        for key in self.expired() {
            if self.gm.release_key(&key).is_some() {
                self.metrics.reservations_expired.inc();
                info!(key = %key, "reservation expired: no pod was created for it");
            }
        }
        let retry: Vec<Retry> = lock(&self.retry).drain().map(|(_, r)| r).collect();
        for r in retry {
            match r {
                Retry::Reconcile(p) => self.reconcile_or_retry(p).await,
                Retry::ConfirmGone(p) => self.release_if_gone(p).await,
            }
        }
    }

    /// Take the reservations older than the TTL out of the pending ones.
    fn expired(&self) -> Vec<String> {
        let mut pending = lock(&self.pending);
        let now = Instant::now();
        let old: Vec<String> = pending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= self.pending_ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            pending.remove(k);
        }
        self.metrics.reservations.set(pending.len() as i64);
        old
    }

    /// [`sweep`](Self::sweep) every `interval` until `cancel`.
    pub async fn sweep_until(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep().await,
                _ = cancel.cancelled() => return,
            }
        }
    }
}
