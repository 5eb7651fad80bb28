//! `GET /capabilities` (contract: `offload_wire::watch::Capabilities`): the
//! extensions of the interLink plugin API this plugin offers, so a provider
//! uses them when they are there and falls back to plain interLink when not.
//! A plain list: each extension adds its one line.

use std::sync::Arc;

use axum::{Json, extract::State};
use offload_wire::watch::{Capabilities, STATUS_WATCH};

use crate::http::AppState;

/// The extensions this process offers now.
pub fn offered(state: &AppState) -> Vec<String> {
    let mut extensions = Vec::new();
    if state.watch.is_some() {
        extensions.push(STATUS_WATCH.to_owned());
    }
    extensions
}

pub(crate) async fn handler(State(state): State<Arc<AppState>>) -> Json<Capabilities> {
    Json(Capabilities {
        extensions: offered(&state),
    })
}
