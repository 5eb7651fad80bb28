//! HTTP: `POST /mutate` (AdmissionReview in and out), `GET /healthz`,
//! `GET /metrics`, served over TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::MUTATE_PATH;
use super::reservations::Webhook;

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

/// Serve `router` over TLS on `listener` until `cancel`.
pub async fn serve_tls_until(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    cancel: CancellationToken,
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
            _ = cancel.cancelled() => return,
        };
        tokio::spawn(serve_connection(
            acceptor.clone(),
            tcp,
            peer,
            router.clone(),
            cancel.clone(),
        ));
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    cancel: CancellationToken,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
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
        _ = cancel.cancelled() => {}
    }
}

/// [`serve_tls_until`] with the old shutdown signal. Shim for callers not on
/// a `CancellationToken` yet (the standalone binary): remove once they are.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    serve_tls_until(listener, tls, router, crate::manager::token_of(shutdown)).await
}

#[cfg(test)]
mod tests {
    use kube::Client;
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::GatewayManager;
    use crate::webhook::fixtures::{NODE, pod, review, spec};

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

    fn webhook() -> Arc<Webhook> {
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
        Arc::new(Webhook::new(gm, NODE, Duration::from_secs(60)))
    }

    #[tokio::test]
    async fn http_answers_reviews_and_refuses_garbage_with_400() {
        let wh = webhook();
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

        let review = |p: &Pod| review("req-7", "CREATE", false, p).to_string();
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
}
