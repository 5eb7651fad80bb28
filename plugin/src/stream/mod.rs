//! The streaming endpoints (`kubectl exec`, `attach`, `port-forward` on an
//! offloaded pod): our extension of the plugin API, whose contract is
//! [`offload_wire::stream`]. Each is a WebSocket upgrade, authenticated like
//! every route; the pod must be one this plugin instance created for the
//! caller (principal + `node`), else 404 as for a pod that does not exist.
//! The bridge to the remote apiserver is kube-rs (`Api::exec`, `attach`,
//! `portforward`): `exec.rs` (exec and attach) and `portforward.rs`, with the
//! framing in `frames.rs`.
//!
//! The API routes' concurrency limit and request timeout end with the
//! upgrade answer (the stream runs on in its own task): open streams have
//! their own limit (`--max-open-streams`, then 503) and gauge.

mod exec;
mod frames;
mod metrics;
mod portforward;
mod remote_version;
mod spdy_client;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use offload_wire::{
    keys,
    stream::{ATTACH_PATH, EXEC_PATH, PORT_FORWARD_PATH, StreamTarget},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use self::metrics::StreamMetrics;
use crate::{
    caller::Principal,
    error::ApiError,
    http::AppState,
    naming::{NameKind, remote_name},
    status::LocalIdentity,
};

/// Largest WebSocket message accepted from a client: a bound on what one
/// stream buffers.
pub use offload_wire::stream::MAX_MESSAGE;

/// How often a stream pings its client: keeps an idle connection alive
/// through proxies, and finds out a client that vanished while the remote
/// side is silent (its stream would otherwise wait for the remote forever).
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The capability names these endpoints add to `GET /capabilities`.
pub const CAPABILITIES: [&str; 3] = [
    offload_wire::watch::EXEC,
    offload_wire::watch::ATTACH,
    offload_wire::watch::PORT_FORWARD,
];

/// What the three endpoints share: the open-stream limit and metrics.
pub struct Streams {
    permits: Arc<Semaphore>,
    max: usize,
    pub metrics: StreamMetrics,
}

/// Which endpoint a stream came in on (the metrics' `kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }
}

/// One open stream: holds its permit and counts in the open gauge until
/// dropped, whichever way the stream ends.
pub struct OpenStream {
    _permit: OwnedSemaphorePermit,
    kind: Kind,
    metrics: StreamMetrics,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.open(self.kind).dec();
    }
}

impl Streams {
    pub fn new(max: usize, registry: &offload_runtime::admin::SharedRegistry) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            metrics: StreamMetrics::register(registry),
        }
    }

    /// A permit for one more stream, or the 503 when `--max-open-streams`
    /// are open.
    fn open(&self, kind: Kind) -> Result<OpenStream, Box<Response>> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.open(kind).inc();
                Ok(OpenStream {
                    _permit: permit,
                    kind,
                    metrics: self.metrics.clone(),
                })
            }
            Err(_) => {
                self.metrics.refused(kind);
                tracing::warn!(
                    kind = kind.as_str(),
                    max = self.max,
                    "stream refused: too many open streams (--max-open-streams)"
                );
                let mut r = ApiError::unavailable(
                    "too_many_streams",
                    format!("{} streams are open (--max-open-streams); retry", self.max),
                )
                .into_response();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                Err(Box::new(r))
            }
        }
    }
}

/// The routes (merged into the authenticated API routes).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(EXEC_PATH, get(exec::exec))
        .route(ATTACH_PATH, get(exec::attach))
        .route(PORT_FORWARD_PATH, get(portforward::port_forward))
}

/// The remote pod a stream goes to.
#[derive(Clone, Debug)]
pub struct RemotePod {
    pub namespace: String,
    pub name: String,
}

/// The remote pod of `target` if this plugin instance created it for this
/// caller; 404 otherwise, with the same answer whether the pod does not
/// exist or is somebody else's.
async fn authorize(
    state: &AppState,
    principal: &Principal,
    target: &StreamTarget,
) -> Result<RemotePod, ApiError> {
    let not_found = || {
        ApiError::not_found(format!(
            "pod {}/{} (uid {}) of node {} is not on the remote cluster",
            target.namespace, target.name, target.uid, target.node
        ))
    };
    let ns = state
        .namespaces()
        .checked_remote(&target.namespace)
        .map_err(|_| not_found())?;
    if !state.remote.is_ready() && !state.remote.wait_ready(Duration::from_secs(20)).await {
        return Err(ApiError::unavailable(
            "not_ready",
            "the remote pod cache is not synced yet; retry",
        ));
    }
    let id = LocalIdentity {
        name: target.name.clone(),
        namespace: target.namespace.clone(),
        uid: target.uid.clone(),
    };
    let pod = match state.lookup(&id) {
        Some(p) => p,
        // Created a moment ago, not in the cache yet.
        None => state
            .remote
            .get_pod(&ns, &remote_name(NameKind::Pod, &id.name, &id.uid))
            .await?
            .ok_or_else(not_found)?,
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let caller = principal.caller(&target.node);
    let instance = state.instance();
    let mine = state.remote.is_ours(&labels, &target.uid)
        && labels.get(keys::LABEL_CALLER) == Some(&caller)
        && labels.get(keys::LABEL_PLUGIN_INSTANCE) == Some(&instance);
    match (mine, &pod.metadata.namespace, &pod.metadata.name) {
        (true, Some(namespace), Some(name)) => Ok(RemotePod {
            namespace: namespace.clone(),
            name: name.clone(),
        }),
        _ => {
            tracing::warn!(pod = %target.name, namespace = %target.namespace, uid = %target.uid, "stream refused: the remote pod is not this caller's");
            Err(not_found())
        }
    }
}

/// The checks every endpoint makes before the upgrade: a WebSocket
/// upgrade, the pod the caller's, a stream permit.
async fn admit(
    state: &AppState,
    principal: &Principal,
    target: &StreamTarget,
    kind: Kind,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(RemotePod, WebSocketUpgrade, OpenStream), Box<Response>> {
    let pod = authorize(state, principal, target)
        .await
        .map_err(|e| Box::new(e.into_response()))?;
    let ws = ws
        .map_err(|r| {
            ApiError::new(
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
                "not_websocket",
                format!(
                    "{} needs a WebSocket upgrade: {}",
                    kind.as_str(),
                    r.body_text()
                ),
            )
            .into_response()
        })
        .map_err(Box::new)?;
    let open = state.streams.open(kind)?;
    let ws = ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        // Bounded: a slow client slows the stream down instead of the
        // plugin queueing its output.
        .max_write_buffer_size(4 * MAX_MESSAGE);
    Ok((pod, ws, open))
}

/// A query error: 400 with the message.
fn bad_query(e: offload_wire::stream::QueryError) -> Response {
    ApiError::bad_request(e.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_above_the_limit_get_503_until_one_ends() {
        let registry = offload_runtime::admin::SharedRegistry::default();
        let streams = Streams::new(1, &registry);
        let open = |k| streams.open(k);
        let first = open(Kind::Exec).expect("a permit");
        let refused = open(Kind::PortForward).err().expect("over the limit");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
        let text = registry.encode().expect("metrics");
        assert!(
            text.contains(r#"offload_plugin_streams_open{kind="exec"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"offload_plugin_streams_refused_total{kind="portforward"} 1"#),
            "{text}"
        );
        drop(first);
        let again = open(Kind::Attach).expect("a permit again");
        let text = registry.encode().expect("metrics");
        assert!(
            text.contains(r#"offload_plugin_streams_open{kind="exec"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"offload_plugin_streams_open{kind="attach"} 1"#),
            "{text}"
        );
        drop(again);
    }
}
