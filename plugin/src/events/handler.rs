//! `GET /events?node=<local node>&since=<cursor>`: the caller's events after
//! its cursor. Authenticated like every API route (the router's layers); the
//! caller is the authenticated principal with the node it names, exactly as
//! its pods were labelled at create, so no caller reads another's events.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use offload_wire::events::{EventsAnswer, MAX_EVENTS};
use serde::Deserialize;

use crate::{caller::Principal, error::ApiError, http::AppState};

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    node: Option<String>,
    since: Option<String>,
}

/// Longest node name (a DNS subdomain) and cursor accepted.
const MAX_PARAM: usize = 253;

pub async fn events_handler(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventsAnswer>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let node = q
        .node
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("node is required: the caller's virtual node"))?;
    if node.len() > MAX_PARAM || q.since.as_ref().is_some_and(|s| s.len() > MAX_PARAM) {
        return Err(ApiError::bad_request(format!(
            "node and since are at most {MAX_PARAM} characters"
        )));
    }
    let caller = principal.caller(&node);
    let page = state.events.page(&caller, q.since.as_deref(), MAX_EVENTS);
    Ok(Json(EventsAnswer {
        cursor: page.cursor,
        events: page.events,
        more: page.more,
    }))
}
