//! `POST /status/follow` (contract: `offload_wire::watch::FollowRequest`):
//! a streaming caller's sign of life for the orphan sweep ([`crate::sweep`]).
//!
//! The status stream names no pods, so without this call a streaming
//! provider would look silent to the sweep (its orphans never swept), or,
//! counted alive without naming anything, all of its pods would look like
//! orphans. A caller says how many pods it follows and a digest of their
//! UIDs; the plugin compares them with the caller's running remote pods
//! (this instance's, not finished, not being deleted):
//!
//! - equal: the caller is alive and names every one of them;
//! - different, digest only: nothing is recorded (a digest proves nothing),
//!   the answer asks for the UIDs;
//! - with the UIDs: the caller is alive and names those of its pods that
//!   are in the list (another caller's UIDs name nothing), so a remote pod
//!   it no longer follows becomes an orphan after the sweep's grace.

use std::{collections::HashSet, sync::Arc};

use axum::{Json, extract::State};
use k8s_openapi::api::core::v1::Pod;
use offload_wire::watch::{FollowAnswer, FollowRequest, follow_digest};
use tracing::debug;

use crate::{caller::Principal, error::ApiError, http::AppState, http::JsonBody};

/// Longest node name (a DNS subdomain).
const MAX_NODE: usize = 253;
/// Longest UID accepted (Kubernetes' are 36 characters).
const MAX_UID: usize = 128;

fn validate(req: &FollowRequest) -> Result<(), ApiError> {
    if req.node.is_empty() || req.node.len() > MAX_NODE {
        return Err(ApiError::bad_request(
            "node: required, at most 253 characters",
        ));
    }
    if req.digest.len() > 64 {
        return Err(ApiError::bad_request("digest: at most 64 characters"));
    }
    if let Some(uids) = &req.uids
        && let Some((i, _)) = uids
            .iter()
            .enumerate()
            .find(|(_, u)| u.is_empty() || u.len() > MAX_UID)
    {
        return Err(ApiError::bad_request(format!(
            "uids[{i}]: empty or longer than {MAX_UID} characters"
        )));
    }
    Ok(())
}

/// Local UIDs of the caller's running remote pods of this instance.
fn running_of(state: &AppState, caller: &str, instance: &str) -> Vec<String> {
    let running = |p: &Pod| {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
    };
    state
        .remote
        .store()
        .state()
        .iter()
        .filter(|p| running(p))
        .filter(|p| crate::watch::caller_of(p, instance).as_deref() == Some(caller))
        .filter_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get(offload_wire::keys::LABEL_SOURCE_POD_UID)
                .cloned()
        })
        .collect()
}

pub(crate) async fn handler(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    JsonBody(req): JsonBody<FollowRequest>,
) -> Result<Json<FollowAnswer>, ApiError> {
    validate(&req)?;
    if !state.remote.is_ready() {
        return Err(ApiError::unavailable(
            "not_ready",
            "the remote pod cache is not synced yet; retry",
        ));
    }
    let caller = principal.caller(&req.node);
    let mine = running_of(&state, &caller, &state.instance());
    let ours = follow_digest(mine.iter().map(String::as_str));
    let (matched, named, result): (bool, Vec<&String>, &'static str) = match &req.uids {
        None if ours == req.digest && mine.len() as u64 == req.count => {
            (true, mine.iter().collect(), "matched")
        }
        None => (false, Vec::new(), "mismatched"),
        Some(list) => {
            let listed: HashSet<&str> = list.iter().map(String::as_str).collect();
            let named = mine
                .iter()
                .filter(|u| listed.contains(u.as_str()))
                .collect();
            let matched = ours == follow_digest(list.iter().map(String::as_str));
            (matched, named, "listed")
        }
    };
    state
        .metrics
        .follow_calls
        .get_or_create(&crate::metrics::ResultLabels { result })
        .inc();
    // A digest that does not match names nothing and proves nothing.
    if matched || req.uids.is_some() {
        state.follow(&caller, named.into_iter().map(String::as_str));
    }
    debug!(node = %req.node, count = req.count, running = mine.len(), result, "follow");
    Ok(Json(FollowAnswer { matched }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(node: &str, uids: Option<Vec<&str>>) -> FollowRequest {
        FollowRequest {
            node: node.into(),
            count: 0,
            digest: String::new(),
            uids: uids.map(|u| u.into_iter().map(String::from).collect()),
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(validate(&req("vn", None)).is_ok());
        assert!(validate(&req("", None)).is_err());
        assert!(validate(&req(&"n".repeat(254), None)).is_err());
        assert!(validate(&req("vn", Some(vec!["a", ""]))).is_err());
        let long = "u".repeat(129);
        assert!(validate(&req("vn", Some(vec![long.as_str()]))).is_err());
        let mut r = req("vn", None);
        r.digest = "d".repeat(65);
        assert!(validate(&r).is_err());
    }
}
