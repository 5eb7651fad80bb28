//! `GET /capabilities` ([`offload_wire::watch::CAPABILITIES_PATH`]): the
//! extensions of the interLink API this plugin offers, so a provider uses
//! them where they exist and falls back to plain interLink where not.

use axum::Json;
use offload_wire::watch::Capabilities;

/// Every extension this plugin offers (each feature adds its names here).
pub fn extensions() -> Vec<String> {
    let mut names: Vec<&str> = Vec::new();
    names.extend(crate::stream::CAPABILITIES);
    names.into_iter().map(str::to_string).collect()
}

pub async fn capabilities() -> Json<Capabilities> {
    Json(Capabilities {
        extensions: extensions(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_is_offered() {
        let c = Capabilities {
            extensions: extensions(),
        };
        for name in ["exec", "attach", "portForward"] {
            assert!(c.offers(name), "{name} missing from {:?}", c.extensions);
        }
    }
}
