//! Server limits of the API routes: how many requests run at once (more are
//! shed at once with 503 + Retry-After), how long one may take until its
//! answer starts (504), and how big a body may be (413).
//!
//! The 413 is answered so the client can read it: an oversized body is read
//! and thrown away (up to a bound) before the answer goes out. Answering
//! while the client is still sending and closing the connection makes the
//! kernel reset it, and the client sees a broken pipe instead of the 413.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use tower::BoxError;
use tracing::warn;

use super::AppState;
use crate::{config::PluginConfig, error::ApiError};

/// At least this much of an oversized body is read and discarded so its
/// sender gets the 413; beyond it (and beyond 4x the limit) the connection
/// is closed.
const MIN_DRAIN: u64 = 64 * 1024 * 1024;

/// The limits, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests handled at once (`--max-concurrent-requests`).
    pub max_concurrent: usize,
    /// Until the answer starts (`--request-timeout`).
    pub timeout: Duration,
}

impl Limits {
    pub fn of(config: &PluginConfig) -> Self {
        Self {
            max_concurrent: config.max_concurrent_requests as usize,
            timeout: config.request_timeout,
        }
    }
}

/// The JSON answer of a request the limits stopped: shed above the
/// concurrency limit (503 + Retry-After) or too slow (504).
pub(super) fn limit_error(e: &BoxError, timeout: Duration) -> Response {
    if e.is::<tower::load_shed::error::Overloaded>() {
        warn!("request shed: too many requests at once (--max-concurrent-requests)");
        let mut r = ApiError::unavailable(
            "overloaded",
            "too many requests at once (--max-concurrent-requests); retry",
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    } else if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than {} s (--request-timeout); retry",
                timeout.as_secs_f64()
            ),
        )
        .into_response()
    } else {
        ApiError::internal(format!("request failed: {e}")).into_response()
    }
}

/// Reads the body (at most `--body-limit`) before the handler runs; an
/// oversized one gets a readable 413 (see the module docs).
pub(super) async fn body_limit(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.body_limit as u64;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    if declared.is_some_and(|n| n > limit) {
        // Known up front: do not buffer, only drain.
        drain(body, drain_cap(limit)).await;
        return too_large(limit);
    }
    match read_at_most(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(Read::TooLarge(rest)) => {
            drain(rest, drain_cap(limit)).await;
            too_large(limit)
        }
        Err(Read::Failed(e)) => {
            ApiError::bad_request(format!("reading the request body: {e}")).into_response()
        }
    }
}

fn drain_cap(limit: u64) -> u64 {
    limit.saturating_mul(4).max(MIN_DRAIN)
}

enum Read {
    /// Over the limit; the rest of the body, unread.
    TooLarge(Body),
    Failed(axum::Error),
}

/// The whole body if it is at most `limit` bytes.
async fn read_at_most(mut body: Body, limit: u64) -> Result<Bytes, Read> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Read::Failed)?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(Read::TooLarge(body));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards at most `cap` bytes of `body`.
async fn drain(mut body: Body, cap: u64) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > cap {
                warn!(
                    cap,
                    "oversized request body not drained to its end; closing"
                );
                return;
            }
        }
    }
}

fn too_large(limit: u64) -> Response {
    let mut r = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is larger than the configured limit of {limit} bytes (--body-limit)"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_up_to_the_limit_pass_larger_ones_do_not() {
        let ok = read_at_most(Body::from(vec![b'x'; 10]), 10).await;
        assert_eq!(ok.ok().map(|b| b.len()), Some(10));
        let big = read_at_most(Body::from(vec![b'x'; 11]), 10).await;
        assert!(matches!(big, Err(Read::TooLarge(_))));
        assert_eq!(drain_cap(1), MIN_DRAIN);
        assert_eq!(drain_cap(MIN_DRAIN), 4 * MIN_DRAIN);
    }

    #[test]
    fn limit_errors_are_json_503_with_retry_after_and_504() {
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        let r = limit_error(&shed, Duration::from_secs(5));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let late: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(
            limit_error(&late, Duration::from_secs(5)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
