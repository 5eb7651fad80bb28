//! The kubelet HTTPS API of the virtual node: container logs (streamed from
//! the plugin), `/healthz`, `/pods`, `/metrics`, `/stats/summary` and
//! `/metrics/resource` (from the plugin's stats extension, [`stats`]), and `/exec`, `/attach` and
//! `/portForward` over SPDY/3.1 and WebSocket, bridged to the plugin's
//! streaming extension ([`stream`]; 501 when the plugin has none, as for
//! `/run`).
//!
//! Every request passes the gate in [`auth`], as on a kubelet with
//! `--authorization-mode=Webhook`: authenticated by a client certificate
//! verified against `--client-ca-file` (what the apiserver presents with
//! `--kubelet-client-certificate`) or a bearer token accepted by a
//! TokenReview, then authorized by a SubjectAccessReview on
//! `nodes/<subresource>` of this node ([`authz`] maps paths to
//! subresources: `/pods` and `/containerLogs` are `proxy`). Anonymous
//! requests get 401, callers without the permission 403. The router is
//! served by `offload_runtime::tls::serve_tls`, which hands a verified
//! client certificate to the gate as `PeerCertificates`.

pub mod args;
pub mod auth;
pub mod authn;
pub mod authz;
pub mod cache;
pub mod metrics;
pub mod stats;
pub mod stream;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{Instrument, debug, info_span};

pub use self::args::{AuthorizationMode, KubeletAuthArgs};
pub use self::auth::Auth;
use crate::client::{PluginClient, PluginError};
use crate::logs::{LogQuery, log_failure, log_request, waiting_message};
use crate::metrics::Metrics;

/// Shared state of the kubelet API.
#[derive(Clone)]
pub struct KubeletState {
    pub node_name: String,
    pub pods: Store<Pod>,
    pub plugin: PluginClient,
    pub metrics: Metrics,
    /// Who may call, and what.
    pub auth: Auth,
    /// Open exec, attach and port-forward streams.
    pub streams: stream::StreamMetrics,
    /// Reads the node's pods whole for `/pods` (the store keeps offloaded
    /// pods slimmed); without it `/pods` answers from the store.
    pub client: Option<kube::Client>,
}

impl KubeletState {
    pub fn new(
        node_name: String,
        pods: Store<Pod>,
        plugin: PluginClient,
        metrics: Metrics,
        auth: Auth,
    ) -> Self {
        KubeletState {
            node_name,
            pods,
            plugin,
            streams: stream::StreamMetrics::register(metrics.registry()),
            metrics,
            auth,
            client: None,
        }
    }

    /// `/pods` reads the node's pods from the apiserver through `client`.
    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }
}

pub(crate) fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

async fn container_logs(
    State(st): State<KubeletState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let span = info_span!("containerLogs", namespace = %ns, pod = %pod, container = %container);
    async move {
        let q = match LogQuery::parse(query.as_deref().unwrap_or("")) {
            Ok(q) => q,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let Some(p) = st.pods.get(&ObjectRef::new(&pod).within(&ns)) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod {ns}/{pod} is not on node {}", st.node_name),
            );
        };
        let known = p.spec.as_ref().is_some_and(|s| {
            s.containers.iter().any(|c| c.name == container)
                || s.init_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == container)
        });
        if !known {
            return text(
                StatusCode::NOT_FOUND,
                format!("container {container} is not valid for pod {pod}"),
            );
        }
        if q.wants_nothing() {
            return text(StatusCode::OK, "");
        }
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let req = log_request(&ns, &pod, &uid, &container, &q);
        match st.plugin.logs(&req).await {
            Ok(resp) => {
                debug!(follow = q.0.follow, "streaming logs");
                let stream = resp.bytes_stream().map_err(std::io::Error::other);
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(Body::from_stream(stream))
                    .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
            }
            // Not on the remote side (yet): the local status says why, as
            // a kubelet would of a container it has not started.
            Err(PluginError::Status { status: 404, .. })
                if let Some(message) = waiting_message(&p, &container) =>
            {
                text(StatusCode::BAD_REQUEST, message)
            }
            Err(e) => {
                let (code, message) = log_failure(&e);
                debug!(status = code.as_u16(), error = %e, "log request failed");
                text(code, message)
            }
        }
    }
    .instrument(span)
    .await
}

async fn not_supported(State(st): State<KubeletState>, req: Request) -> Response {
    let what = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    text(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{what} is not supported on virtual node {}: the pod runs on a remote cluster \
             (only logs are available)",
            st.node_name
        ),
    )
}

/// The node's pods with their whole spec, as a kubelet answers: read from
/// the apiserver (on demand, not per period), since the store keeps an
/// offloaded pod without what only its create needed; the store's view if
/// that read fails.
async fn pods(State(st): State<KubeletState>) -> Response {
    let listed = match &st.client {
        Some(c) => {
            let lp =
                kube::api::ListParams::default().fields(&format!("spec.nodeName={}", st.node_name));
            match kube::Api::<Pod>::all(c.clone()).list(&lp).await {
                Ok(l) => Some(l.items),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the node's pods for /pods; answering from the store");
                    None
                }
            }
        }
        None => None,
    };
    let mut items: Vec<Pod> =
        listed.unwrap_or_else(|| st.pods.state().iter().map(|p| (**p).clone()).collect());
    for p in &mut items {
        p.metadata.managed_fields = None;
    }
    let list =
        serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    axum::Json(list).into_response()
}

async fn metrics(State(st): State<KubeletState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

/// The kubelet API routes behind the gate (authentication and authorization).
pub fn router(st: KubeletState) -> Router {
    Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(stats::resource_metrics))
        .route("/stats/summary", get(stats::summary))
        .route("/exec/{ns}/{pod}/{container}", any(stream::exec))
        .route("/attach/{ns}/{pod}/{container}", any(stream::attach))
        .route("/portForward/{ns}/{pod}", any(stream::port_forward))
        .route("/run/{*rest}", any(not_supported))
        .layer(middleware::from_fn_with_state(st.auth.clone(), auth::gate))
        .with_state(st)
}
