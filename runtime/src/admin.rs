//! The admin router every binary serves on plain HTTP: `/metrics` (the
//! process's one prometheus-client [`Registry`], shared as a
//! [`SharedRegistry`], OpenMetrics text),
//! `/healthz` (the process answers) and `/readyz` (a cheap check: a flag or
//! a watch channel the binary flips when it can do its job).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::{Metric, Registry};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A port that cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr` (port 0: any free port; `local_addr` says which).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// The one metrics registry of a process, created in `main` and handed to
/// every component, which registers its metrics under its own prefix
/// ([`SharedRegistry::register`]). Registering stays possible after the
/// admin server started (a component started later, like the provider's
/// embedded gateway-manager, still appears on the same `/metrics`).
#[derive(Clone, Default)]
pub struct SharedRegistry(Arc<RwLock<Registry>>);

impl SharedRegistry {
    pub fn new(registry: Registry) -> Self {
        SharedRegistry(Arc::new(RwLock::new(registry)))
    }

    /// Runs `f` on the sub-registry of `prefix` (`offload_provider`, ...).
    pub fn register<T>(&self, prefix: &str, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        f(guard.sub_registry_with_prefix(prefix))
    }

    /// Runs `f` on the root registry (metrics registering their own
    /// prefixes, like the standalone webhook's).
    pub fn with_root<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// The OpenMetrics text of every registered metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let guard = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &guard)?;
        Ok(body)
    }
}

impl From<Registry> for SharedRegistry {
    fn from(r: Registry) -> Self {
        SharedRegistry::new(r)
    }
}

impl std::fmt::Debug for SharedRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRegistry")
    }
}

/// Registers metrics as a component builds them, so its metrics struct is
/// one literal (`requests: m.add("http_requests", "...")`) instead of a
/// `let`, a `register` and a field for each. prometheus-client metrics are
/// shared handles: the registry keeps a clone, the component the other.
pub struct Registrar<'a>(&'a mut Registry);

impl<'a> Registrar<'a> {
    /// Registers into `registry` (usually a component's prefixed
    /// sub-registry from [`SharedRegistry::register`]).
    pub fn new(registry: &'a mut Registry) -> Self {
        Registrar(registry)
    }

    /// A new default metric (counter, gauge, family) registered as `name`.
    pub fn add<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.with(name, help, M::default())
    }

    /// `metric` (one that needs a constructor, like a family of histograms)
    /// registered as `name`.
    pub fn with<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

/// The `/metrics` answer for `registry`.
pub fn metrics_response(registry: &SharedRegistry) -> Response {
    match registry.encode() {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "encoding failed",
        )
            .into_response(),
    }
}

/// The readiness of a process: a check and the bodies of its two answers.
#[derive(Clone)]
pub struct Ready {
    check: Arc<dyn Fn() -> bool + Send + Sync>,
    ready: &'static str,
    not_ready: &'static str,
}

impl Ready {
    /// Ready while `flag` is set.
    pub fn flag(flag: Arc<AtomicBool>) -> Self {
        Self::from_fn(move || flag.load(Ordering::Relaxed))
    }

    /// Ready while the channel holds `true`.
    pub fn watch(rx: watch::Receiver<bool>) -> Self {
        Self::from_fn(move || *rx.borrow())
    }

    /// Always ready (a process with nothing to wait for).
    pub fn always() -> Self {
        Self::from_fn(|| true)
    }

    /// Ready when `check` says so; it runs on every probe, keep it cheap.
    pub fn from_fn(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Ready {
            check: Arc::new(check),
            ready: "ok",
            not_ready: "not ready",
        }
    }

    /// Other answer bodies than `ok` / `not ready` (the bastion says what
    /// it waits for).
    pub fn with_bodies(mut self, ready: &'static str, not_ready: &'static str) -> Self {
        self.ready = ready;
        self.not_ready = not_ready;
        self
    }

    pub fn is_ready(&self) -> bool {
        (self.check)()
    }

    fn response(&self) -> (StatusCode, &'static str) {
        if self.is_ready() {
            (StatusCode::OK, self.ready)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, self.not_ready)
        }
    }
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// `/metrics`, `/healthz`, `/readyz`. Binaries add their own routes
/// (`Router::route`) or merge it into another router.
pub fn router(registry: SharedRegistry, ready: Ready) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics_response(&registry))),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || std::future::ready(ready.response())))
}

/// Serves an admin `router` on `listener` (plain HTTP) until `shutdown`.
pub async fn serve_admin(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    crate::tls::serve(listener, router, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, String, Option<String>) {
        let resp = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned(), ctype)
    }

    #[tokio::test]
    async fn metrics_health_and_readiness() {
        let registry = SharedRegistry::default();
        let flag = Arc::new(AtomicBool::new(false));
        let r = router(registry.clone(), Ready::flag(Arc::clone(&flag)));
        // Registered after the router exists: still served.
        let c = Counter::<u64>::default();
        registry.register("offload_test", |r| {
            r.register("things", "Things", c.clone())
        });
        c.inc();

        let (status, body, ctype) = get(&r, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("offload_test_things_total 1"), "{body}");
        assert_eq!(ctype.as_deref(), Some(OPENMETRICS));
        assert_eq!(get(&r, "/healthz").await.1, "ok");

        let (status, body, _) = get(&r, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
        );
        flag.store(true, Ordering::Relaxed);
        let (status, body, _) = get(&r, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[test]
    fn the_registrar_hands_back_what_it_registered() {
        let registry = SharedRegistry::default();
        let (things, gauge): (Counter, prometheus_client::metrics::gauge::Gauge) = registry
            .register("offload_test", |r| {
                let mut m = Registrar::new(r);
                (
                    m.add("things", "Things"),
                    m.with("level", "Level", Default::default()),
                )
            });
        things.inc();
        gauge.set(3);
        let body = registry.encode().expect("encode");
        assert!(body.contains("offload_test_things_total 1"), "{body}");
        assert!(body.contains("offload_test_level 3"), "{body}");
    }

    #[tokio::test]
    async fn watch_readiness_with_own_bodies() {
        let (tx, rx) = watch::channel(false);
        let ready = Ready::watch(rx).with_bodies("ready", "forwards pending");
        let r = router(SharedRegistry::default(), ready.clone());
        assert_eq!(get(&r, "/readyz").await.1, "forwards pending");
        tx.send_replace(true);
        assert!(ready.is_ready());
        assert_eq!(get(&r, "/readyz").await.1, "ready");
        assert!(Ready::always().is_ready());
    }
}
