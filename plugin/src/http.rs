//! The plugin HTTP API (axum): routing, authentication, body handling,
//! metrics and the thin handlers around the pure logic.
//!
//! interLink facts honoured here: `/status` and `/getLogs` are GET *with a
//! JSON body* (POST accepted too), only 200 means success, `/status` with `[]`
//! is the health ping and must be fast.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use offload_wire::{CreateBody, CreateStruct, LogStruct, PingResponse, PodStatus};
use serde::de::DeserializeOwned;
use tokio_util::{compat::FuturesAsyncReadCompatExt, io::ReaderStream};
use tracing::{Instrument, info, info_span, warn};

use crate::{
    bastion::{BastionKey, KeyState},
    error::ApiError,
    logs,
    metrics::{EndpointLabels, Metrics, RequestLabels},
    naming::{NameKind, NamespaceMapper, remote_name},
    remote::Remote,
    status::{self, LocalIdentity},
    sweep::Tracker,
    translate::{self, TranslateConfig},
};

/// Everything a handler needs.
pub struct AppState {
    pub remote: Arc<Remote>,
    pub metrics: Arc<Metrics>,
    pub translate: TranslateConfig,
    pub token: Option<String>,
    pub tracker: Arc<Mutex<Tracker>>,
    /// Local pod UID -> remote pod UID, for pods whose remote pod this process
    /// has seen in the cache; a seen pod missing later has vanished.
    pub observed: Mutex<std::collections::HashMap<String, String>>,
    pub body_limit: usize,
    /// Cancelled on shutdown; ends open log streams so shutdown is prompt.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The bastion's public key (`GET /bastion/publicKey`).
    pub bastion: Arc<BastionKey>,
}

impl AppState {
    fn namespaces(&self) -> &NamespaceMapper {
        &self.translate.namespaces
    }
    fn touch(&self, uid: &str) {
        if let Ok(mut t) = self.tracker.lock() {
            t.touch(uid, Instant::now());
        }
    }
}

/// A JSON body parsed leniently (unknown fields ignored, any content type),
/// whose errors are 4xx JSON errors naming the offending path.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "body_too_large",
                    "request body is larger than the configured limit (--body-limit)",
                )
            } else {
                ApiError::new(status, "bad_body", rej.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, reporting where it went wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; a JSON body is required",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "malformed JSON"
        } else {
            "unexpected JSON"
        };
        ApiError::bad_request(if path == "." || path.is_empty() {
            format!("{what}: {inner}")
        } else {
            format!("{what} at {path}: {inner}")
        })
    })
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/create", post(create))
        .route("/delete", post(delete).delete(delete))
        .route("/status", get(status_handler).post(status_handler))
        .route("/getLogs", get(get_logs).post(get_logs))
        .route("/ping", get(ping).post(ping))
        .route("/bastion/publicKey", get(bastion_public_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let admin = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler));
    api.merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(DefaultBodyLimit::max(state.body_limit))
        .with_state(state)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error (a bug; see the plugin log)",
    )
    .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no endpoint {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn token_matches(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(want) = state.token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(t) if token_matches(t.as_bytes(), want.as_bytes()) => next.run(req).await,
        Some(_) => unauthorized("invalid bearer token"),
        None => unauthorized("missing bearer token (Authorization: Bearer <token>)"),
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Span, metrics and access log of every request.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let session = req
        .headers()
        .get("InterLink-Http-Session")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span =
        info_span!("request", method = %req.method(), endpoint = %endpoint, session = %session);
    let start = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let code = resp.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint: endpoint.clone(),
            code,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&EndpointLabels { endpoint })
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        if code >= 400 {
            warn!(code, ms = elapsed.as_millis() as u64, "request failed");
        } else {
            tracing::debug!(code, ms = elapsed.as_millis() as u64, "request");
        }
    });
    resp
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

/// The bastion's public key, for the provider's gateway to authorize:
/// `{"publicKey": "ssh-ed25519 AAAA…"}`. Only a public key ever leaves.
async fn bastion_public_key(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.bastion.get() {
        KeyState::Ready { key, namespace } => Ok(Json(serde_json::json!({
            "publicKey": key,
            "namespace": namespace,
        }))),
        KeyState::Pending { namespace, error } => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bastion_not_ready",
            match error {
                Some(e) => format!("the bastion is not installed yet ({e}); retry"),
                None => format!(
                    "the bastion is being installed in remote namespace {namespace:?}; retry"
                ),
            },
        )),
        KeyState::Disabled => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "bastion_disabled",
            "this plugin keeps no bastion (--no-bastion): give the provider the bastion's key \
             with --bastion-public-key, or run the plugin without --no-bastion",
        )),
    }
}

async fn ping() -> Json<PingResponse> {
    Json(PingResponse {
        status: "ok".into(),
        ..Default::default()
    })
}

async fn create(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<CreateStruct>, ApiError> {
    // Parse in two steps so a bare Pod or a wrong shape gets a precise hint.
    if body.get("metadata").is_some() && body.get("pod").is_none() {
        return Err(ApiError::bad_request(
            "expected {\"pod\": <Pod>, \"container\": [...]} (interLink RetrievedPodData), got a bare Pod",
        ));
    }
    misplaced_fields(&body)?;
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let data = match parse_json::<CreateBody>(&bytes) {
        Ok(CreateBody::One(d)) => *d,
        Ok(CreateBody::Many(mut v)) if v.len() == 1 => v.remove(0),
        Ok(CreateBody::Many(v)) => {
            return Err(ApiError::bad_request(format!(
                "expected one RetrievedPodData (or a one-element array), got an array of {}",
                v.len()
            )));
        }
        Err(_) => {
            // Untagged enums lose the error path: re-parse as the form the
            // caller used to say precisely what is wrong.
            let e = if body.is_array() {
                parse_json::<Vec<offload_wire::RetrievedPodData>>(&bytes).err()
            } else {
                parse_json::<offload_wire::RetrievedPodData>(&bytes).err()
            };
            return Err(e.unwrap_or_else(|| ApiError::bad_request("unexpected JSON shape")));
        }
    };
    let plan = translate::translate(&data, &state.translate)?;
    let span = info_span!(
        "create",
        pod = %plan.local.name,
        namespace = %plan.local.namespace,
        uid = %plan.local.uid,
        remote = %plan.pod_name()
    );
    async move {
        for w in &plan.warnings {
            info!(warning = %w, "translation note");
        }
        state.touch(&plan.local.uid);
        let remote_uid = state.remote.create(&plan).await?;
        info!(remote_uid = %remote_uid, configmaps = plan.config_maps.len(), secrets = plan.secrets.len(), "pod offloaded");
        Ok(Json(CreateStruct {
            pod_uid: plan.local.uid.clone(),
            pod_jid: remote_uid,
        }))
    }
    .instrument(span)
    .await
}

/// Unknown fields are ignored (newer interLink versions add some), but
/// fields that belong somewhere else are a caller bug worth a clear 400: e.g.
/// the VK's `PodCreateRequests` (`configmaps`, `projectedvolumesmaps`) sent
/// where the plugin's `RetrievedPodData` is expected.
fn misplaced_fields(body: &serde_json::Value) -> Result<(), ApiError> {
    const TOP: &[(&str, &str)] = &[
        ("spec", "pod.spec"),
        ("status", "pod.status"),
        (
            "containers",
            "pod.spec.containers (or the per-container list \"container\")",
        ),
        ("configMaps", "container[].configMaps"),
        (
            "configmaps",
            "container[].configMaps (this is the VK->interLink PodCreateRequests shape)",
        ),
        ("secrets", "container[].secrets"),
        ("projectedvolumemaps", "container[].projectedvolumemaps"),
        (
            "projectedvolumesmaps",
            "container[].projectedvolumemaps (this is the VK->interLink PodCreateRequests shape)",
        ),
        ("emptyDirs", "container[].emptyDirs"),
    ];
    const PER_CONTAINER: &[(&str, &str)] = &[
        ("configmaps", "configMaps"),
        ("projectedvolumesmaps", "projectedvolumemaps"),
        ("projectedVolumeMaps", "projectedvolumemaps"),
        ("emptydirs", "emptyDirs"),
    ];
    let items: Vec<&serde_json::Value> = match body {
        serde_json::Value::Array(v) => v.iter().collect(),
        other => vec![other],
    };
    for (i, item) in items.into_iter().enumerate() {
        let at = if body.is_array() {
            format!("[{i}].")
        } else {
            String::new()
        };
        let Some(obj) = item.as_object() else {
            continue;
        };
        for (key, belongs) in TOP {
            if obj.contains_key(*key) {
                return Err(ApiError::bad_request(format!(
                    "field {at}{key:?} does not belong at the top level of a create body; it belongs in {belongs}. Expected {{\"pod\", \"container\", \"jobConfig\", \"jobScript\"}}"
                )));
            }
        }
        for (j, c) in obj
            .get("container")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (key, right) in PER_CONTAINER {
                if c.get(*key).is_some() {
                    return Err(ApiError::bad_request(format!(
                        "field {at}container[{j}].{key:?} is misspelled for this API: interLink sends {right:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

async fn delete(
    State(state): State<Arc<AppState>>,
    JsonBody(pod): JsonBody<Pod>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, ns, name) = translate::remote_ref(&pod, state.namespaces())?;
    let span = info_span!("delete", pod = %id.name, namespace = %id.namespace, uid = %id.uid);
    async move {
        let mut existed = state.remote.delete(&ns, &name, &id.uid).await?;
        // Created under another configuration (e.g. another prefix): find it by label.
        if !existed
            && let Some(p) = state.remote.cached_by_uid(&id.uid)
            && let (Some(pns), Some(pname)) =
                (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
        {
            existed = state.remote.delete(pns, pname, &id.uid).await?;
        }
        if let Ok(mut t) = state.tracker.lock() {
            t.forget(&id.uid);
        }
        if let Ok(mut seen) = state.observed.lock() {
            seen.remove(&id.uid);
        }
        info!(existed, "remote pod deleted");
        Ok(Json(serde_json::json!({
            "PodUID": id.uid,
            "deleted": existed,
            "message": if existed { "Pod deleted" } else { "Pod was not on the remote cluster" },
        })))
    }
    .instrument(span)
    .await
}

async fn status_handler(
    State(state): State<Arc<AppState>>,
    JsonBody(pods): JsonBody<Vec<Pod>>,
) -> Result<Json<Vec<PodStatus>>, ApiError> {
    if let Ok(mut t) = state.tracker.lock() {
        t.status_call(Instant::now());
    }
    if pods.is_empty() {
        return Ok(Json(vec![]));
    }
    let mut ids = Vec::with_capacity(pods.len());
    for (i, p) in pods.iter().enumerate() {
        let id = translate::local_identity(p)
            .map_err(|e| ApiError::bad_request(format!("pod [{i}]: {e}")))?;
        ids.push(id);
    }
    // Right after a start the cache may still be loading: wait a little
    // rather than report pods as not created.
    if !state.remote.is_ready() && !state.remote.wait_ready(Duration::from_secs(20)).await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the remote pod cache is not synced yet; retry",
        ));
    }
    let mut out = Vec::with_capacity(pods.len());
    for (p, id) in pods.iter().zip(ids) {
        state.touch(&id.uid);
        let remote = lookup(&state, &id);
        let mut observed = state.observed.lock().ok();
        match (&remote, observed.as_mut()) {
            (Some(r), Some(seen)) => {
                seen.insert(id.uid.clone(), r.metadata.uid.clone().unwrap_or_default());
            }
            (None, Some(seen)) if seen.contains_key(&id.uid) => {
                let jid = seen.get(&id.uid).cloned().unwrap_or_default();
                warn!(pod = %id.name, namespace = %id.namespace, uid = %id.uid, "remote pod vanished without a delete");
                out.push(status::vanished_status(&id, Some(p), &jid));
                continue;
            }
            _ => {}
        }
        out.push(status::pod_status(&id, Some(p), remote.as_deref()));
    }
    Ok(Json(out))
}

fn lookup(state: &AppState, id: &LocalIdentity) -> Option<Arc<Pod>> {
    let ns = state.namespaces().remote(&id.namespace);
    let name = remote_name(NameKind::Pod, &id.name, &id.uid);
    state
        .remote
        .cached(&ns, &name)
        .or_else(|| state.remote.cached_by_uid(&id.uid))
}

async fn get_logs(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<LogStruct>,
) -> Result<Response, ApiError> {
    logs::validate(&req)?;
    // Option errors are the caller's, whatever the remote pod looks like.
    logs::log_params(&req, String::new())?;
    let ns = state.namespaces().remote(&req.namespace);
    let name = remote_name(NameKind::Pod, &req.pod_name, &req.pod_uid);
    let span = info_span!("getLogs", pod = %req.pod_name, namespace = %req.namespace, uid = %req.pod_uid, container = %req.container_name, follow = req.opts.follow);
    async move {
        state.touch(&req.pod_uid);
        let id = LocalIdentity {
            name: req.pod_name.clone(),
            namespace: req.namespace.clone(),
            uid: req.pod_uid.clone(),
        };
        let pod = match state.remote.get_pod(&ns, &name).await? {
            Some(p) => p,
            None => lookup(&state, &id).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "pod {}/{} (uid {}) is not on the remote cluster",
                        req.namespace, req.pod_name, req.pod_uid
                    ),
                )
            })?,
        };
        let (rns, rname) = (
            pod.metadata.namespace.clone().unwrap_or(ns),
            pod.metadata.name.clone().unwrap_or(name),
        );
        let container = logs::choose_container(&pod, &req.container_name)?;
        let params = logs::log_params(&req, container)?;
        let reader = state.remote.logs(&rns, &rname, &params).await?;
        let shutdown = state.shutdown.clone().cancelled_owned();
        let stream = ReaderStream::new(reader.compat())
            .map_err(|e| {
                warn!(error = %e, "log stream ended with an error");
                e
            })
            .take_until(shutdown);
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "building the response",
                )
                .into_response()
            }))
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
    }

    #[test]
    fn json_errors_name_the_path() {
        let e = parse_json::<LogStruct>(
            br#"{"Namespace":"a","PodUID":"u","PodName":"p","Opts":{"Tail":"x"}}"#,
        )
        .expect_err("bad type");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Opts.Tail"), "{}", e.message);
        let e = parse_json::<Vec<Pod>>(b"[not json").expect_err("syntax");
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = parse_json::<Vec<Pod>>(b"  ").expect_err("empty");
        assert!(e.message.contains("empty"));
    }
}
