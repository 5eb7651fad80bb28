//! Standalone mode: gateway-manager next to *another* Virtual Kubelet (for
//! example interLink's own), as a mutating admission webhook.
//!
//! # Which pods
//!
//! A pod is tunneled when it **targets the virtual node** at creation, i.e.
//! `spec.nodeName` is the node, or `spec.nodeSelector["kubernetes.io/hostname"]`
//! is the node (how interLink's docs pin a pod to its virtual node), and it
//! declares TCP `containerPort`s. A toleration of the virtual node's taint
//! alone is not enough: it only *allows* the pod there, the scheduler may
//! still put it on a real node, and tunnel ports would be wasted on it. Pods
//! that reach the node only through affinity rules get no tunnel.
//!
//! # The UID problem, and how allocation is keyed
//!
//! Mutating admission runs *before* the apiserver fills in `metadata.uid` (and,
//! for `generateName` pods, `metadata.name`), but the allocator and the pod's
//! Service are keyed by UID (a pod deleted and re-created under the same name
//! is another owner). So at admission the ports are **reserved** under a
//! provisional key (see [`reservation_key`]):
//! - `admission:<namespace>/<name>` for a named pod: a second call for the
//!   same request (the apiserver may call a webhook again) gets the same ports;
//! - `admission:<namespace>/<generateName>*<request uid>` for a `generateName`
//!   pod (no name yet; the request UID makes it unique).
//!
//! The JSON patch puts the usual tunnel annotations on the pod (same keys and
//! values as in provider mode). **After creation**, the pod watcher sees the
//! pod with its UID: the annotation's gateway ports are held by a reservation
//! that matches the pod (same namespace, same name or a name generated from
//! the same prefix, same ports), so the reservation is handed over to the UID
//! without changing a single port ([`crate::ports::Allocator::transfer`]), and
//! then [`GatewayManager::prepare_pod`] does what it does in provider mode
//! (Service `<pod>-tunnel` owned by the pod, `interlink.io/tunnel-service`).
//! Its allocation is idempotent, so a pod whose reservation was lost (the
//! webhook restarted between admission and creation, or the webhook was down
//! and `failurePolicy: Ignore` let the pod through) simply gets ports then,
//! and its annotations are patched; a pod whose annotated ports are held by
//! someone else gets fresh ones the same way.
//!
//! A reservation whose pod never appears (the create failed after admission:
//! name conflict, quota, another webhook denied it) is released after
//! `pending_ttl`. Ports are released when a tunneled pod is deleted or
//! finishes (Succeeded/Failed), and for pods deleted while the watch was
//! down (found missing on re-list).
//!
//! Annotations a pod carries *at admission* are never trusted (a copied
//! manifest carries another pod's ports): they are overwritten.
//!
//! # failurePolicy
//!
//! Default `Ignore`. A webhook matches pods by namespace/labels only, not by
//! `spec.nodeName`, so with `Fail` an unreachable gateway-manager would block
//! the creation of *every* pod it matches, including its own replacement pod
//! (the webhook could never come back) and system pods. With `Ignore`, a pod
//! admitted while the webhook is down is still reconciled by the watcher
//! after creation (ports allocated, annotations patched), which is enough
//! for a Virtual Kubelet that reads the pod when it creates it remotely after
//! scheduling; `Fail` is available (`--failure-policy Fail`) together with a
//! `--namespace-selector` that limits the webhook to opted-in namespaces.
//!
//! Dry-run creates get the patch they would get (ports allocated and
//! released at once, under a key of their own): `sideEffects: NoneOnDryRun`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::TryStreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use offload_wire::keys::tunnel;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::annotations::{TunnelAnnotations, decode_ports};
use crate::manager::{Error as ManagerError, GatewayManager};
use crate::pod::tcp_container_ports;
use crate::ports::ContainerPort;

/// The node label interLink's docs select the virtual node with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Prefix of reservation keys (never a pod UID: UIDs are hex and dashes).
pub const RESERVATION_PREFIX: &str = "admission:";
/// Path the apiserver posts AdmissionReviews to.
pub const MUTATE_PATH: &str = "/mutate";

// ---------------------------------------------------------------------------
// Pure decision logic
// ---------------------------------------------------------------------------

/// Whether the pod targets the virtual node `node` (see the module docs).
pub fn targets_node(pod: &Pod, node: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref() == Some(node)
        || spec
            .node_selector
            .as_ref()
            .and_then(|s| s.get(HOSTNAME_LABEL))
            .is_some_and(|n| n == node)
}

/// What to do with one admission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the pod through untouched, for this reason (logged and counted).
    Skip(&'static str),
    /// Reserve one gateway port per container port under `key`, then patch.
    Reserve {
        key: String,
        wanted: BTreeSet<ContainerPort>,
    },
}

/// The provisional allocation key of a pod at admission (see the module docs).
pub fn reservation_key(namespace: &str, pod: &Pod, request_uid: &str) -> Option<String> {
    match pod.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => Some(format!("{RESERVATION_PREFIX}{namespace}/{name}")),
        None => {
            let prefix = pod
                .metadata
                .generate_name
                .as_deref()
                .filter(|g| !g.is_empty())?;
            Some(format!(
                "{RESERVATION_PREFIX}{namespace}/{prefix}*{request_uid}"
            ))
        }
    }
}

/// Whether reservation `key` was made for this (now created) pod.
pub fn reservation_matches(key: &str, pod: &Pod) -> bool {
    let Some(rest) = key.strip_prefix(RESERVATION_PREFIX) else {
        return false;
    };
    let Some((ns, who)) = rest.split_once('/') else {
        return false;
    };
    if pod.metadata.namespace.as_deref() != Some(ns) {
        return false;
    }
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match who.split_once('*') {
        None => name == who,
        Some((prefix, _request)) => {
            pod.metadata.generate_name.as_deref() == Some(prefix) && name.starts_with(prefix)
        }
    }
}

/// Decide on one admission request for virtual node `node`.
pub fn decide(req: &AdmissionRequest<Pod>, node: &str) -> Decision {
    if req.operation != Operation::Create {
        return Decision::Skip("not a create");
    }
    if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return Decision::Skip("subresource");
    }
    let Some(pod) = req.object.as_ref() else {
        return Decision::Skip("no object");
    };
    if !targets_node(pod, node) {
        return Decision::Skip("not for the virtual node");
    }
    let wanted = tcp_container_ports(pod);
    if wanted.is_empty() {
        return Decision::Skip("no TCP containerPort");
    }
    let namespace = req
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let key = if req.dry_run {
        // A key of its own: released at once, never touches a real reservation.
        format!("dryrun:{}", req.uid)
    } else {
        match reservation_key(&namespace, pod, &req.uid) {
            Some(k) => k,
            None => return Decision::Skip("pod has neither name nor generateName"),
        }
    };
    Decision::Reserve { key, wanted }
}

/// Escape one JSON pointer token (RFC 6901).
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The RFC 6902 patch that sets the tunnel annotations on `pod` (overwriting
/// any value the pod came with).
pub fn annotation_patch(pod: &Pod, ann: &TunnelAnnotations) -> serde_json::Value {
    let wanted = ann.to_map();
    // An empty map is omitted from the apiserver's JSON (omitempty): then
    // the per-key paths would not exist, so add the whole map.
    match pod.metadata.annotations.as_ref().filter(|a| !a.is_empty()) {
        None => serde_json::json!([
            { "op": "add", "path": "/metadata/annotations", "value": wanted }
        ]),
        Some(_) => serde_json::Value::Array(
            wanted
                .iter()
                .map(|(k, v)| {
                    serde_json::json!({
                        "op": "add",
                        "path": format!("/metadata/annotations/{}", pointer_token(k)),
                        "value": v,
                    })
                })
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

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

    fn count(&self, result: &str) {
        self.admissions
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

// ---------------------------------------------------------------------------
// The webhook
// ---------------------------------------------------------------------------

pub struct Webhook {
    gm: Arc<GatewayManager>,
    node: String,
    pending_ttl: Duration,
    /// Reservation key -> when it was made.
    pending: Mutex<HashMap<String, Instant>>,
    /// Pods (by UID) whose reconciliation failed, retried by the sweeper.
    retry: Mutex<HashMap<String, Pod>>,
    pub metrics: WebhookMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let patch = annotation_patch(pod, &ann);
        match serde_json::from_value(patch).map(|p| resp.clone().with_patch(p)) {
            Ok(Ok(r)) => {
                info!(key = %key, ports = %crate::annotations::encode_ports(&ann.ports), dry_run = req.dry_run, "tunnel ports reserved at admission");
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
        if matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
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

    async fn reconcile_or_retry(&self, pod: Pod) {
        if let Err(e) = self.reconcile_pod(&pod).await {
            self.metrics.reconcile_errors.inc();
            warn!(pod = %pod.name_any(), namespace = ?pod.metadata.namespace, error = %e, "tunnel reconcile failed; retrying");
            if let Some(uid) = pod.metadata.uid.clone() {
                lock(&self.retry).insert(uid, pod);
            }
        }
    }

    /// Watch every pod until `shutdown`: reconcile those targeting the node,
    /// release those that go away.
    pub async fn watch_pods(self: Arc<Self>, client: Client, mut shutdown: watch::Receiver<bool>) {
        let pods: Api<Pod> = Api::all(client);
        let stream = watcher(pods, watcher::Config::default());
        futures::pin_mut!(stream);
        // UIDs of our node's pods seen during a (re-)list.
        let mut seen: BTreeSet<String> = BTreeSet::new();
        loop {
            let ev = tokio::select! {
                ev = stream.try_next() => ev,
                _ = shutdown.changed() => return,
            };
            match ev {
                Ok(Some(watcher::Event::Init)) => seen.clear(),
                Ok(Some(watcher::Event::InitApply(p))) => {
                    if targets_node(&p, &self.node)
                        && let Some(uid) = p.metadata.uid.clone()
                    {
                        seen.insert(uid);
                    }
                    self.reconcile_or_retry(p).await;
                }
                Ok(Some(watcher::Event::InitDone)) => {
                    // Deleted while we were not watching.
                    for t in self.gm.tunnel_pods() {
                        if seen.contains(&t.uid) {
                            continue;
                        }
                        let gone = Pod {
                            metadata: ObjectMeta {
                                name: Some(t.name.clone()),
                                namespace: Some(t.namespace.clone()),
                                uid: Some(t.uid.clone()),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        if let Err(e) = self.release(&gone).await {
                            warn!(pod = %t.name, namespace = %t.namespace, error = %e, "cannot release a vanished pod");
                        }
                    }
                }
                Ok(Some(watcher::Event::Apply(p))) => self.reconcile_or_retry(p).await,
                Ok(Some(watcher::Event::Delete(p))) => {
                    if let Err(e) = self.release(&p).await {
                        self.metrics.reconcile_errors.inc();
                        warn!(pod = %p.name_any(), error = %e, "cannot release tunnel ports");
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One sweep: release reservations older than the TTL, retry failed pods.
    pub async fn sweep(&self) {
        let expired: Vec<String> = {
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
        };
        for key in expired {
            if self.gm.release_key(&key).is_some() {
                self.metrics.reservations_expired.inc();
                info!(key = %key, "reservation expired: no pod was created for it");
            }
        }
        let retry: Vec<Pod> = lock(&self.retry).drain().map(|(_, p)| p).collect();
        for p in retry {
            self.reconcile_or_retry(p).await;
        }
    }

    /// [`sweep`](Self::sweep) every `interval` until `shutdown`.
    pub async fn run_sweeper(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct HttpState {
    webhook: Arc<Webhook>,
    registry: Arc<Registry>,
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain")],
        msg,
    )
        .into_response()
}

async fn mutate(
    State(st): State<HttpState>,
    body: Result<axum::Json<AdmissionReview<Pod>>, JsonRejection>,
) -> Response {
    let review = match body {
        Ok(axum::Json(r)) => r,
        Err(e) => {
            st.webhook.metrics.count("invalid");
            return bad_request(format!(
                "expected an admission.k8s.io/v1 AdmissionReview of a Pod: {}",
                e.body_text()
            ));
        }
    };
    let req: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            st.webhook.metrics.count("invalid");
            return bad_request("the AdmissionReview has no request".to_owned());
        }
    };
    let review: AdmissionReview<DynamicObject> = st.webhook.admit(&req).into_review();
    axum::Json(review).into_response()
}

async fn metrics(State(st): State<HttpState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &st.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed").into_response(),
    }
}

/// `POST /mutate` (AdmissionReview in and out), `GET /healthz`, `GET /metrics`.
pub fn router(webhook: Arc<Webhook>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(HttpState { webhook, registry })
}

/// Serve `router` over TLS on `listener` until `shutdown`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let r = router.clone();
                    async move {
                        use tower::ServiceExt;
                        r.oneshot(req.map(Body::new)).await
                    }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { debug!(%peer, error = %e, "connection ended") },
                _ = shutdown.changed() => {}
            }
        });
    }
}

// ---------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no certificate found in {0}")]
    NoCert(String),
    #[error("no private key found in {0}")]
    NoKey(String),
    #[error("cannot generate the webhook certificate: {0}")]
    Generate(String),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// A serving certificate, its key and the PEM CA bundle the apiserver must
/// trust (the `caBundle` of the webhook configuration).
pub struct ServingCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca_pem: String,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl ServingCert {
    /// A fresh CA and a certificate it signs for `names` (DNS names or IPs,
    /// as the apiserver dials the webhook). Made at every start; registering
    /// the webhook publishes the new CA.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
        if names.is_empty() {
            return Err(TlsError::Generate(
                "no DNS name or IP to put in the certificate".to_owned(),
            ));
        }
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(g)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "offload gateway-manager webhook CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(g)?).map_err(g)?;
        let mut leaf = CertificateParams::new(names.to_vec()).map_err(g)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "offload gateway-manager webhook");
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(g)?;
        let cert = leaf.signed_by(&leaf_key, &ca).map_err(g)?;
        let key = PrivateKeyDer::try_from(leaf_key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            chain: vec![cert.der().clone()],
            key,
            ca_pem: ca.pem(),
        })
    }

    /// Certificate chain and key from PEM files; the CA bundle is `ca` if
    /// given, else the certificate file itself.
    pub fn from_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Self, TlsError> {
        let pem = read(cert)?;
        let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|source| TlsError::Read {
                path: cert.display().to_string(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCert(cert.display().to_string()));
        }
        let key_pem = read(key)?;
        let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|source| TlsError::Read {
                path: key.display().to_string(),
                source,
            })?
            .ok_or_else(|| TlsError::NoKey(key.display().to_string()))?;
        let ca_pem = String::from_utf8_lossy(&read(ca.unwrap_or(cert))?).into_owned();
        Ok(Self {
            chain,
            key: key_der,
            ca_pem,
        })
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

/// How the apiserver reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://host:port/mutate` (outside the cluster, or a fixed address).
    Url(String),
    /// An in-cluster Service.
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
}

/// What goes into the MutatingWebhookConfiguration.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Name of the (cluster-wide) MutatingWebhookConfiguration.
    pub config_name: String,
    pub endpoint: Endpoint,
    /// PEM CA bundle the apiserver verifies the webhook with.
    pub ca_pem: String,
    /// `Ignore` or `Fail` (see the module docs).
    pub failure_policy: String,
    /// Only namespaces with these labels (empty: every namespace).
    pub namespace_labels: BTreeMap<String, String>,
    /// Only pods with these labels (empty: every pod).
    pub object_labels: BTreeMap<String, String>,
    pub timeout_seconds: i32,
}

/// Name of the one webhook inside the configuration (must be a qualified name).
pub const WEBHOOK_NAME: &str = "tunnel.gateway-manager.offload.dev";

fn selector(labels: &BTreeMap<String, String>) -> Option<LabelSelector> {
    (!labels.is_empty()).then(|| LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    })
}

impl Registration {
    /// The configuration object (admissionregistration.k8s.io/v1, fields
    /// Kubernetes 1.20 knows only).
    pub fn object(&self) -> MutatingWebhookConfiguration {
        let client_config = match &self.endpoint {
            Endpoint::Url(url) => WebhookClientConfig {
                url: Some(url.clone()),
                ca_bundle: Some(ByteString(self.ca_pem.clone().into_bytes())),
                service: None,
            },
            Endpoint::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                url: None,
                ca_bundle: Some(ByteString(self.ca_pem.clone().into_bytes())),
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(MUTATE_PATH.to_owned()),
                    port: Some(i32::from(*port)),
                }),
            },
        };
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(self.config_name.clone()),
                labels: Some(BTreeMap::from([(
                    offload_wire::keys::LABEL_MANAGED_BY.to_owned(),
                    "offload-gateway-manager".to_owned(),
                )])),
                ..Default::default()
            },
            webhooks: Some(vec![MutatingWebhook {
                name: WEBHOOK_NAME.to_owned(),
                admission_review_versions: vec!["v1".to_owned()],
                client_config,
                failure_policy: Some(self.failure_policy.clone()),
                match_policy: Some("Equivalent".to_owned()),
                namespace_selector: selector(&self.namespace_labels),
                object_selector: selector(&self.object_labels),
                reinvocation_policy: Some("Never".to_owned()),
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".to_owned()]),
                    operations: Some(vec!["CREATE".to_owned()]),
                    resources: Some(vec!["pods".to_owned()]),
                    scope: Some("Namespaced".to_owned()),
                }]),
                side_effects: "NoneOnDryRun".to_owned(),
                timeout_seconds: Some(self.timeout_seconds),
                match_conditions: None,
            }]),
        }
    }

    /// Create or update the configuration (server-side apply).
    pub async fn apply(&self, client: &Client) -> Result<(), kube::Error> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        api.patch(
            &self.config_name,
            &PatchParams::apply("offload-gateway-manager").force(),
            &Patch::Apply(&self.object()),
        )
        .await?;
        info!(config = %self.config_name, "mutating webhook registered");
        Ok(())
    }
}

/// Delete a webhook configuration (404 is fine).
pub async fn unregister(client: &Client, config_name: &str) -> Result<(), kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    match api.delete(config_name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Parse `k=v,k2=v2` (label selector of equalities).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("{p:?} is not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(format!("{p:?} has an empty key"));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Whether `s` is an IP (goes into the certificate as an IP SAN).
pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort as KPort, PodSpec};
    use pretty_assertions::assert_eq;

    const NODE: &str = "vk-node";

    fn pod(name: Option<&str>, generate: Option<&str>, spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: name.map(str::to_owned),
                generate_name: generate.map(str::to_owned),
                namespace: Some("apps".into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn spec(node_name: Option<&str>, hostname: Option<&str>, ports: &[i32]) -> PodSpec {
        PodSpec {
            node_name: node_name.map(str::to_owned),
            node_selector: hostname.map(|h| BTreeMap::from([(HOSTNAME_LABEL.into(), h.into())])),
            containers: vec![Container {
                name: "c".into(),
                ports: Some(
                    ports
                        .iter()
                        .map(|p| KPort {
                            container_port: *p,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn request(op: &str, dry_run: bool, pod: &Pod) -> AdmissionRequest<Pod> {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "req-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": pod.metadata.name.clone().unwrap_or_default(),
                "namespace": "apps",
                "operation": op,
                "userInfo": {},
                "object": pod,
                "dryRun": dry_run,
            }
        });
        let review: AdmissionReview<Pod> = serde_json::from_value(review).expect("review");
        review.try_into().expect("request")
    }

    #[test]
    fn only_pods_pinned_to_the_node_are_ours() {
        assert!(targets_node(
            &pod(Some("a"), None, spec(Some(NODE), None, &[80])),
            NODE
        ));
        assert!(targets_node(
            &pod(Some("a"), None, spec(None, Some(NODE), &[80])),
            NODE
        ));
        assert!(!targets_node(
            &pod(Some("a"), None, spec(Some("real"), None, &[80])),
            NODE
        ));
        assert!(!targets_node(
            &pod(Some("a"), None, spec(None, Some("other"), &[80])),
            NODE
        ));
        // A toleration alone does not pin a pod anywhere.
        let mut tolerating = spec(None, None, &[80]);
        tolerating.tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
            key: Some(offload_wire::keys::TAINT_NO_SCHEDULE.into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(!targets_node(&pod(Some("a"), None, tolerating), NODE));
        assert!(!targets_node(&Pod::default(), NODE));
    }

    #[test]
    fn decisions() {
        let ours = pod(Some("web"), None, spec(Some(NODE), None, &[80, 8080]));
        assert_eq!(
            decide(&request("CREATE", false, &ours), NODE),
            Decision::Reserve {
                key: "admission:apps/web".into(),
                wanted: BTreeSet::from([80, 8080].map(ContainerPort)),
            }
        );
        // Dry run: a key of its own, never the real reservation.
        assert_eq!(
            decide(&request("CREATE", true, &ours), NODE),
            Decision::Reserve {
                key: "dryrun:req-1".into(),
                wanted: BTreeSet::from([80, 8080].map(ContainerPort)),
            }
        );
        let generated = pod(None, Some("web-"), spec(None, Some(NODE), &[80]));
        assert_eq!(
            decide(&request("CREATE", false, &generated), NODE),
            Decision::Reserve {
                key: "admission:apps/web-*req-1".into(),
                wanted: BTreeSet::from([ContainerPort(80)]),
            }
        );
        assert!(matches!(
            decide(&request("UPDATE", false, &ours), NODE),
            Decision::Skip(_)
        ));
        let elsewhere = pod(Some("web"), None, spec(Some("real"), None, &[80]));
        assert_eq!(
            decide(&request("CREATE", false, &elsewhere), NODE),
            Decision::Skip("not for the virtual node")
        );
        let portless = pod(Some("web"), None, spec(Some(NODE), None, &[]));
        assert_eq!(
            decide(&request("CREATE", false, &portless), NODE),
            Decision::Skip("no TCP containerPort")
        );
    }

    #[test]
    fn reservations_match_their_pod_only() {
        let mut named = pod(Some("web"), None, spec(Some(NODE), None, &[80]));
        assert!(reservation_matches("admission:apps/web", &named));
        assert!(!reservation_matches("admission:apps/web2", &named));
        assert!(!reservation_matches("admission:other/web", &named));
        assert!(!reservation_matches("0b3c-uid", &named));
        assert!(!reservation_matches("dryrun:req-1", &named));
        // After creation a generateName pod has its generated name.
        let mut generated = pod(
            Some("web-x7k2p"),
            Some("web-"),
            spec(None, Some(NODE), &[80]),
        );
        assert!(reservation_matches("admission:apps/web-*req-1", &generated));
        generated.metadata.generate_name = Some("db-".into());
        assert!(!reservation_matches(
            "admission:apps/web-*req-1",
            &generated
        ));
        named.metadata.namespace = None;
        assert!(!reservation_matches("admission:apps/web", &named));
    }

    fn ann() -> TunnelAnnotations {
        TunnelAnnotations {
            gateway_address: "10.201.0.1:30222".into(),
            gateway_host_key: "ssh-ed25519 AAAAkey".into(),
            ports: offload_wire::tunnel::port_map([(80, 40000), (8080, 40001)]),
        }
    }

    fn apply_patch(pod: &Pod, patch: serde_json::Value) -> Pod {
        let mut doc = serde_json::to_value(pod).expect("pod json");
        let patch: json_patch_type::Patch = serde_json::from_value(patch).expect("patch");
        json_patch_type::patch(&mut doc, &patch).expect("patch applies");
        serde_json::from_value(doc).expect("pod")
    }

    // The json-patch crate kube uses, reached through kube's re-export-free
    // API: the patch type is inferred from `with_patch`, and applied here
    // with the same crate to check the result.
    mod json_patch_type {
        pub use json_patch::{Patch, patch};
    }

    #[test]
    fn patch_sets_annotations_with_or_without_existing_ones() {
        let bare = pod(Some("web"), None, spec(Some(NODE), None, &[80, 8080]));
        let patched = apply_patch(&bare, annotation_patch(&bare, &ann()));
        assert_eq!(patched.annotations(), &ann().to_map());
        let mut empty = bare.clone();
        empty.metadata.annotations = Some(BTreeMap::new());
        let as_sent: Pod = serde_json::from_value(
            serde_json::json!({ "metadata": { "name": "web" }, "spec": bare.spec }),
        )
        .expect("pod");
        let patched = apply_patch(&as_sent, annotation_patch(&empty, &ann()));
        assert_eq!(patched.annotations(), &ann().to_map());

        // Existing annotations are kept; stale tunnel values are overwritten;
        // keys with '/' are escaped in the JSON pointer.
        let mut copied = bare.clone();
        copied.metadata.annotations = Some(BTreeMap::from([
            ("team".to_owned(), "a/b".to_owned()),
            (tunnel::PORTS.to_owned(), r#"{"80":41234}"#.to_owned()),
        ]));
        let patched = apply_patch(&copied, annotation_patch(&copied, &ann()));
        let mut want = ann().to_map();
        want.insert("team".into(), "a/b".into());
        assert_eq!(patched.annotations(), &want);
        assert_eq!(pointer_token("a/b~c"), "a~1b~0c");
    }

    #[test]
    fn registration_object_is_scoped_and_1_20_clean() {
        let r = Registration {
            config_name: "offload-gm".into(),
            endpoint: Endpoint::Url("https://10.201.0.1:8443/mutate".into()),
            ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            failure_policy: "Ignore".into(),
            namespace_labels: BTreeMap::from([("offload".into(), "on".into())]),
            object_labels: BTreeMap::new(),
            timeout_seconds: 10,
        };
        let v = serde_json::to_value(r.object()).expect("json");
        let hook = &v["webhooks"][0];
        assert_eq!(
            hook["clientConfig"]["url"],
            "https://10.201.0.1:8443/mutate"
        );
        assert_eq!(hook["namespaceSelector"]["matchLabels"]["offload"], "on");
        assert!(hook.get("objectSelector").is_none());
        assert!(hook.get("matchConditions").is_none());
        assert_eq!(hook["sideEffects"], "NoneOnDryRun");
        assert_eq!(hook["rules"][0]["operations"][0], "CREATE");
        assert_eq!(hook["admissionReviewVersions"][0], "v1");
        assert_eq!(parse_labels("a=b, c=d").expect("labels").len(), 2);
        assert!(parse_labels("a").is_err());
        assert!(parse_labels("=b").is_err());
        assert_eq!(parse_labels("").expect("empty"), BTreeMap::new());
    }

    async fn call(app: Router, body: String) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let req = axum::http::Request::post(MUTATE_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        let resp = app.oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, json)
    }

    #[tokio::test]
    async fn http_answers_reviews_and_refuses_garbage_with_400() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A client that is never used: nothing here talks to an apiserver.
        let config = kube::Config::new("https://127.0.0.1:9".parse().expect("uri"));
        let client = Client::try_from(config).expect("client");
        let gm = Arc::new(GatewayManager::new(
            client,
            crate::Settings::new(
                crate::objects::GatewaySpec {
                    namespace: "gw".into(),
                    name: "offload-gateway".into(),
                    image: "img".into(),
                    image_pull_policy: "IfNotPresent".into(),
                    service_port: 2222,
                    node_port: None,
                },
                "10.201.0.1:30222",
            ),
        ));
        let wh = Arc::new(Webhook::new(gm, NODE, Duration::from_secs(60)));
        let app = router(Arc::clone(&wh), Arc::new(Registry::default()));

        let (status, body) = call(app.clone(), "not json".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.as_str().is_some_and(|b| b.contains("AdmissionReview")),
            "{body}"
        );
        let (status, _) = call(
            app.clone(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.into(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let review = |p: &Pod| {
            serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "req-7",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "name": "web", "namespace": "apps", "operation": "CREATE",
                    "userInfo": {}, "object": p, "dryRun": false,
                }
            })
            .to_string()
        };
        // Not for the node: allowed, no patch, uid echoed.
        let elsewhere = pod(Some("web"), None, spec(Some("real"), None, &[80]));
        let (status, body) = call(app.clone(), review(&elsewhere)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["response"]["uid"], "req-7");
        assert_eq!(body["response"]["allowed"], true);
        assert!(body["response"].get("patch").is_none());
        // For the node, but the gateway is not set up (no host key): denied
        // with the reason, nothing reserved.
        let ours = pod(Some("web"), None, spec(Some(NODE), None, &[80]));
        let (status, body) = call(app, review(&ours)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["response"]["allowed"], false);
        let msg = body["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(msg.contains("ensure_gateway"), "{msg}");
        assert!(wh.pending().is_empty());
        assert_eq!(wh.manager().allocation("admission:apps/web"), None);
    }

    #[test]
    fn self_signed_cert_has_a_ca_and_serves() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = ServingCert::self_signed(&["10.201.0.1".into(), "gm.offload-system.svc".into()])
            .expect("cert");
        assert!(c.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(c.chain.len(), 1);
        c.server_config().expect("server config");
        assert!(ServingCert::self_signed(&[]).is_err());
    }
}
