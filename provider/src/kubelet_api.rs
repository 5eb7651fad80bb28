//! The kubelet HTTPS API of the virtual node: container logs (streamed from
//! the plugin), `/healthz`, `/pods`, `/metrics`, and a clear "not supported"
//! for exec, attach and port-forward.
//!
//! Every request is authenticated: a client certificate verified against
//! `--client-ca-file` (what the apiserver presents with
//! `--kubelet-client-certificate`), or a bearer token accepted by a
//! TokenReview. Anonymous requests get 401. The router is served by
//! `offload_runtime::tls::serve_tls`, which hands a verified client
//! certificate to the handlers as [`PeerCertificates`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::TryStreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use offload_runtime::tls::PeerCertificates;
use tracing::{Instrument, debug, info_span, warn};

use crate::client::{PluginClient, PluginError};
use crate::logs::{LogQuery, log_request};
use crate::metrics::Metrics;

/// Shared state of the kubelet API.
#[derive(Clone)]
pub struct KubeletState {
    pub node_name: String,
    pub pods: Store<Pod>,
    pub plugin: PluginClient,
    pub metrics: Metrics,
    /// Client for TokenReview; `None` disables bearer tokens.
    pub token_review: Option<kube::Client>,
    cache: Arc<Mutex<HashMap<String, (bool, Instant)>>>,
}

impl KubeletState {
    pub fn new(
        node_name: String,
        pods: Store<Pod>,
        plugin: PluginClient,
        metrics: Metrics,
        token_review: Option<kube::Client>,
    ) -> Self {
        KubeletState {
            node_name,
            pods,
            plugin,
            metrics,
            token_review,
            cache: Arc::default(),
        }
    }

    /// TokenReview with a short cache (positive 60 s, negative 10 s). The
    /// cache key is a hash, so tokens are not kept in memory as such.
    async fn review(&self, token: &str) -> bool {
        let Some(client) = &self.token_review else {
            return false;
        };
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            token.hash(&mut h);
            format!("{:x}{}", h.finish(), token.len())
        };
        if let Ok(cache) = self.cache.lock()
            && let Some((ok, at)) = cache.get(&key)
        {
            let ttl = if *ok { 60 } else { 10 };
            if at.elapsed() < Duration::from_secs(ttl) {
                return *ok;
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
        let ok = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status.and_then(|s| s.authenticated).unwrap_or(false),
            Err(e) => {
                warn!(error = %e, "TokenReview failed");
                return false;
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, (ok, Instant::now()));
        }
        ok
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

async fn authenticate(State(st): State<KubeletState>, req: Request, next: Next) -> Response {
    // Set by the TLS layer only for a certificate verified against the CA.
    if req.extensions().get::<PeerCertificates>().is_some() {
        return next.run(req).await;
    }
    let token = bearer(req.headers());
    if let Some(t) = token
        && st.review(&t).await
    {
        return next.run(req).await;
    }
    text(StatusCode::UNAUTHORIZED, "Unauthorized")
}

fn bearer(h: &HeaderMap) -> Option<String> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
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
            Err(PluginError::Status { status, body }) => {
                let code = StatusCode::from_u16(status)
                    .ok()
                    .filter(|c| c.is_client_error())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                text(code, format!("plugin: {body}"))
            }
            Err(e) => text(StatusCode::BAD_GATEWAY, e.to_string()),
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

async fn pods(State(st): State<KubeletState>) -> Response {
    let items: Vec<Pod> = st.pods.state().iter().map(|p| (**p).clone()).collect();
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

/// The kubelet API routes (authentication included).
pub fn router(st: KubeletState) -> Router {
    Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/metrics", get(metrics))
        .route("/exec/{*rest}", any(not_supported))
        .route("/attach/{*rest}", any(not_supported))
        .route("/portForward/{*rest}", any(not_supported))
        .route("/run/{*rest}", any(not_supported))
        .layer(middleware::from_fn_with_state(st.clone(), authenticate))
        .with_state(st)
}
