//! The plugin HTTP API (axum): routing, the admin endpoints and the state
//! every handler shares; `body` (JSON bodies), `middleware` (authentication,
//! access log and metrics), `limits` (concurrency limit, request timeout, a
//! 413 the caller can read) and `handlers` (the thin handlers around the
//! pure logic) hold the rest.
//!
//! interLink facts honoured here: `/status` and `/getLogs` are GET *with a
//! JSON body* (POST accepted too), only 200 means success, `/status` with `[]`
//! is the health ping and must be fast.

mod body;
mod handlers;
mod limits;
mod middleware;
mod status_body;

pub(crate) use self::body::JsonBody;
pub use self::limits::Limits;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Request, State},
    http::{StatusCode, header},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use self::handlers::{bastion_public_key, create, delete, get_logs, ping, status_handler};
use crate::{
    bastion::BastionKey,
    error::ApiError,
    metrics::Metrics,
    naming::{NameKind, NamespaceMapper, remote_name},
    remote::Remote,
    status::LocalIdentity,
    sweep::Tracker,
    translate::TranslateConfig,
};

/// Everything a handler needs.
pub struct AppState {
    pub remote: Arc<Remote>,
    pub metrics: Arc<Metrics>,
    pub translate: TranslateConfig,
    /// The bearer token (`None`: no authentication), re-read when its file changes.
    pub token: Option<Arc<crate::token::TokenFile>>,
    pub tracker: Arc<Mutex<Tracker>>,
    /// Local pod UID -> remote pod UID, for pods whose remote pod this process
    /// has seen in the cache; a seen pod missing later has vanished.
    pub observed: Mutex<HashMap<String, String>>,
    pub body_limit: usize,
    /// Cancelled on shutdown; ends open log streams so shutdown is prompt.
    pub shutdown: CancellationToken,
    /// The bastion's public key (`GET /bastion/publicKey`).
    pub bastion: Arc<BastionKey>,
    /// Concurrency and time limits of the API routes.
    pub limits: Limits,
    /// Remote kubelets' Summaries, per node (`/stats/summary`).
    pub stats: crate::stats::NodeCache,
    /// Remote Events of our pods (`GET /events`).
    pub events: Arc<crate::events::EventRing>,
    /// The remote allocatable the ping reports.
    pub capacity: crate::capacity::RemoteCapacity,
    /// The exec, attach and port-forward streams: their own limit and metrics.
    pub streams: crate::stream::Streams,
    /// The status watch (`None`: `--status-watch=false`, the route is absent).
    pub watch: Option<Arc<crate::watch::StatusWatch>>,
}

impl AppState {
    pub(crate) fn namespaces(&self) -> &NamespaceMapper {
        &self.translate.namespaces
    }

    /// A caller named this pod (create, status, logs): not an orphan.
    fn touch(&self, uid: &str) {
        if let Ok(mut t) = self.tracker.lock() {
            t.touch(uid, Instant::now());
        }
    }

    /// These callers called `/status`: they are alive (an empty call, the
    /// health ping, names no node and so no caller).
    fn status_call(&self, callers: &std::collections::BTreeSet<String>) {
        if let Ok(mut t) = self.tracker.lock() {
            let now = Instant::now();
            for c in callers {
                t.status_call(c, now);
            }
        }
    }

    /// `caller` follows these pods (`/status/follow`): alive, and each named.
    pub(crate) fn follow<'a>(&self, caller: &str, uids: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut t) = self.tracker.lock() {
            let now = Instant::now();
            for u in uids {
                t.touch(u, now);
            }
            t.status_call(caller, now);
        }
    }

    /// This plugin instance (the label of what it creates).
    pub(crate) fn instance(&self) -> String {
        self.tracker
            .lock()
            .map(|t| t.instance().to_string())
            .unwrap_or_default()
    }

    /// The pod was deleted through the API: nothing to sweep or watch for.
    fn forget(&self, uid: &str) {
        if let Ok(mut t) = self.tracker.lock() {
            t.forget(uid);
        }
        if let Ok(mut seen) = self.observed.lock() {
            seen.remove(uid);
        }
    }

    /// The cached remote pod of a local pod: by its name under the current
    /// configuration, else by its UID label.
    pub(crate) fn lookup(&self, id: &LocalIdentity) -> Option<Arc<Pod>> {
        let ns = self.namespaces().remote(&id.namespace);
        let name = remote_name(NameKind::Pod, &id.name, &id.uid);
        self.remote
            .cached(&ns, &name)
            .or_else(|| self.remote.cached_by_uid(&id.uid))
    }
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.limits.timeout;
    let api = Router::new()
        .route("/create", post(create))
        .route("/delete", post(delete).delete(delete))
        .route("/status", get(status_handler).post(status_handler))
        .route("/getLogs", get(get_logs).post(get_logs))
        .route("/ping", get(ping).post(ping))
        .route("/bastion/publicKey", get(bastion_public_key))
        .route(
            "/stats/summary",
            post(crate::stats::summary).get(crate::stats::summary),
        )
        .route(
            offload_wire::events::EVENTS_PATH,
            get(crate::events::events_handler),
        )
        .route(
            offload_wire::watch::CAPABILITIES_PATH,
            get(crate::capabilities::handler),
        )
        .route(
            offload_wire::watch::FOLLOW_PATH,
            post(crate::follow::handler),
        )
        // WebSocket upgrades: the limits below end with the upgrade answer.
        .merge(crate::stream::routes())
        // Innermost first: the body is read only for an authenticated
        // caller, and all of it within the time and concurrency limits.
        .route_layer(from_fn_with_state(state.clone(), limits::body_limit))
        .route_layer(from_fn_with_state(state.clone(), middleware::auth))
        // Shed above the concurrency limit (one semaphore for all routes: a
        // plain ConcurrencyLimitLayer would count per route), time out slow
        // requests; both answered with the JSON error of every endpoint.
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(
                    move |e: tower::BoxError| async move { limits::limit_error(&e, timeout) },
                ))
                .layer(tower::load_shed::LoadShedLayer::new())
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    state.limits.max_concurrent,
                ))
                .layer(tower::timeout::TimeoutLayer::new(timeout)),
        );
    // Streams live for hours: authenticated like the rest, but outside the
    // request timeout and concurrency limit (they have their own).
    let mut streams = Router::new();
    if state.watch.is_some() {
        streams = streams
            .route(offload_wire::watch::WATCH_PATH, get(crate::watch::handler))
            .route_layer(from_fn_with_state(state.clone(), middleware::auth));
    }
    let admin = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler));
    api.merge(streams)
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(DefaultBodyLimit::max(state.body_limit))
        .with_state(state)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("internal error (a bug; see the plugin log)").into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no endpoint {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.remote.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "remote pod cache not synced yet",
        )
            .into_response()
    }
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    state
        .metrics
        .pods_managed
        .set(state.remote.store().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
