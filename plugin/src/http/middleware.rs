//! What wraps every request: bearer-token authentication, and the span,
//! metrics and access log.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::{Instrument, info_span, warn};

use super::AppState;
use crate::{
    error::{ApiError, FailureReason},
    metrics::{EndpointLabels, RequestLabels},
};

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

pub(super) async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(source) = state.token.as_deref() else {
        return next.run(req).await;
    };
    let want = source.current();
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
pub(super) async fn observe(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
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
    let reason = resp.extensions().get::<FailureReason>().map_or("", |r| r.0);
    span.in_scope(|| {
        if code >= 400 {
            warn!(
                code,
                reason,
                ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(code, ms = elapsed.as_millis() as u64, "request");
        }
    });
    resp
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
}
