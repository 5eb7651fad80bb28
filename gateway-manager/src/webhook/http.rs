//! HTTP: `POST /mutate` (AdmissionReview in and out) next to the admin
//! routes (`/healthz`, `/metrics`), served over TLS by
//! [`offload_runtime::tls::serve_tls`] (handshake timeout, graceful drain).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use offload_runtime::admin::{self, Ready, SharedRegistry};
use offload_runtime::tls::HANDSHAKE_TIMEOUT;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::MUTATE_PATH;
use super::reservations::Webhook;

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain")],
        msg,
    )
        .into_response()
}

async fn mutate(
    State(webhook): State<Arc<Webhook>>,
    body: Result<axum::Json<AdmissionReview<Pod>>, JsonRejection>,
) -> Response {
    let review = match body {
        Ok(axum::Json(r)) => r,
        Err(e) => {
            webhook.metrics.count("invalid");
            return bad_request(format!(
                "expected an admission.k8s.io/v1 AdmissionReview of a Pod: {}",
                e.body_text()
            ));
        }
    };
    let req: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            webhook.metrics.count("invalid");
            return bad_request("the AdmissionReview has no request".to_owned());
        }
    };
    let review: AdmissionReview<DynamicObject> = webhook.admit(&req).into_review();
    axum::Json(review).into_response()
}

/// `POST /mutate` alone, to merge with the process's admin router.
pub fn routes(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .with_state(webhook)
}

/// `POST /mutate` and the admin routes of `registry` (`/metrics`,
/// `/healthz`, `/readyz`).
pub fn router_with_admin(webhook: Arc<Webhook>, registry: SharedRegistry) -> Router {
    routes(webhook).merge(admin::router(registry, Ready::always()))
}

/// Serve `router` over TLS on `listener` until `cancel`, then drain.
pub async fn serve_tls_until(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    cancel: CancellationToken,
) {
    offload_runtime::tls::serve_tls(listener, tls, router, cancel, HANDSHAKE_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
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
        let app = router_with_admin(Arc::clone(&wh), Default::default());
        let (status, _) = call(app.clone(), "not json".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let app = router_with_admin(Arc::clone(&wh), SharedRegistry::default());

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
