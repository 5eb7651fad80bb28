//! The handler of `GET /status/watch`: a replay (from the ring, or every
//! pod of the caller from the reflector's store, then `Synced`), then the
//! live lines of the caller's subscription, until the client goes, the
//! subscriber is cut for being slow, or the plugin shuts down.
//!
//! The route sits outside the request timeout and the request concurrency
//! limit (a stream lives for hours); `--max-watch-streams` bounds it instead.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream};
use offload_wire::watch::WatchQuery;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info};

use super::{StatusWatch, caller_of, journal::Start, local_identity};
use crate::{caller::Principal, error::ApiError, http::AppState, metrics::ResultLabels};

/// Lines written in one chunk at most (a replay of thousands of pods is not
/// written line by line).
const CHUNK_LINES: usize = 256;

/// Held by an open stream: its permit and its place in the gauge.
struct Open {
    gauge: Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
        debug!("status watch stream closed");
    }
}

pub(crate) async fn handler(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(watch) = state.watch.clone() else {
        return Err(ApiError::not_found("the status watch is switched off"));
    };
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    if q.node.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter node (the virtual node) is required",
        ));
    }
    let Ok(permit) = watch.streams.clone().try_acquire_owned() else {
        let mut r = ApiError::unavailable(
            "too_many_watches",
            format!(
                "{} status watch streams are open already (--max-watch-streams); retry",
                watch.max_streams
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(r);
    };
    // A replay from a store still loading would say every pod is gone.
    if !state.remote.is_ready() && !state.remote.wait_ready(Duration::from_secs(20)).await {
        return Err(ApiError::unavailable(
            "not_ready",
            "the remote pod cache is not synced yet; retry",
        ));
    }
    let caller = principal.caller(&q.node);
    let resume = q.resume.as_deref().filter(|t| !t.is_empty());
    let sub = watch.journal.subscribe(&caller, resume);
    let kind = match sub.start {
        Start::Resumed { .. } => "resumed",
        Start::Full { .. } => "full",
    };
    state
        .metrics
        .watch_replays
        .get_or_create(&ResultLabels { result: kind })
        .inc();
    info!(node = %q.node, principal = principal.as_str(), replay = kind, "status watch stream opened");
    let head = head(&state, &watch, &caller, sub.start);
    let live = stream::unfold(
        sub.rx,
        |mut rx| async move { rx.recv().await.map(|l| (l, rx)) },
    );
    watch.open.inc();
    let open = Open {
        gauge: watch.open.clone(),
        _permit: permit,
    };
    let shutdown = state.shutdown.clone().cancelled_owned();
    let body = head
        .chain(live)
        .ready_chunks(CHUNK_LINES)
        .map(move |lines| {
            let _ = &open;
            Ok::<_, Infallible>(concat(lines))
        })
        .take_until(shutdown);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| ApiError::internal("building the response").into_response()))
}

/// The lines before the live ones: the ring's, or a full replay from the
/// store (mapped lazily, as the client reads).
fn head(
    state: &AppState,
    watch: &Arc<StatusWatch>,
    caller: &str,
    start: Start,
) -> std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> {
    match start {
        Start::Resumed { lines, .. } => Box::pin(stream::iter(lines)),
        Start::Full { seq } => {
            // Taken after subscribing: the store is at least as new as the
            // journal, so a change after `seq` may come twice, never not at all.
            let pods = state.remote.store().state();
            let (watch, caller) = (watch.clone(), caller.to_owned());
            let synced = watch.journal.synced_line(seq);
            let replay = stream::iter(pods).filter_map(move |p| {
                let line = (caller_of(&p, &watch.instance).as_deref() == Some(caller.as_str()))
                    .then(|| local_identity(&p))
                    .flatten()
                    .map(|id| {
                        let status = crate::status::pod_status(&id, None, Some(&p));
                        watch.journal.replay_line(status)
                    });
                futures::future::ready(line)
            });
            Box::pin(replay.chain(stream::once(futures::future::ready(synced))))
        }
    }
}

fn concat(lines: Vec<Bytes>) -> Bytes {
    if lines.len() == 1 {
        return lines.into_iter().next().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(lines.iter().map(Bytes::len).sum());
    for l in lines {
        out.extend_from_slice(&l);
    }
    out.freeze()
}
