//! `GET /capabilities` (contract: `offload_wire::watch::Capabilities`): the
//! extensions of the interLink plugin API this plugin offers, so a provider
//! uses them when they are there and falls back to plain interLink when not.
//! A plain list: each extension adds its line.

use std::sync::Arc;

use axum::{Json, extract::State};
use offload_wire::watch::{Capabilities, STATUS_FOLLOW, STATUS_WATCH};

use crate::http::AppState;

/// The extensions this process offers now.
pub fn offered(state: &AppState) -> Vec<String> {
    let mut extensions: Vec<String> = crate::stream::CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    if state.watch.is_some() {
        extensions.push(STATUS_WATCH.to_owned());
    }
    // A streaming caller's sign of life for the orphan sweep.
    extensions.push(STATUS_FOLLOW.to_owned());
    extensions
}

pub(crate) async fn handler(State(state): State<Arc<AppState>>) -> Json<Capabilities> {
    Json(Capabilities {
        extensions: offered(&state),
    })
}
