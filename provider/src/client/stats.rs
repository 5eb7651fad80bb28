//! The plugin's `/stats/summary` extension (not part of interLink; see
//! `offload_wire::stats`): CPU and memory of this node's offloaded pods.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use offload_wire::stats::{STATS_SUMMARY_PATH, StatsAnswer, StatsRequest};
use tracing::info;

use super::{PluginClient, PluginError};
use crate::config::PluginMode;

/// How long a plugin that answered 404 is taken to have no stats: it is
/// not asked (and no failed call counted) on every scrape meanwhile, and an
/// upgraded plugin is noticed within this time.
pub const UNSUPPORTED_FOR: Duration = Duration::from_secs(300);

/// Plugin base URL -> when it answered 404. A process-wide map rather than
/// a field of the client, whose construction is shared by every call.
static UNSUPPORTED: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

fn known_unsupported(base: &str) -> bool {
    UNSUPPORTED
        .lock()
        .ok()
        .and_then(|m| m.as_ref()?.get(base).copied())
        .is_some_and(|at| at.elapsed() < UNSUPPORTED_FOR)
}

fn mark_unsupported(base: &str) {
    if let Ok(mut m) = UNSUPPORTED.lock() {
        m.get_or_insert_with(HashMap::new)
            .insert(base.to_string(), Instant::now());
    }
}

impl PluginClient {
    /// The figures of the pods `req` names. `Ok(None)`: the plugin does not
    /// offer the extension (404, or an interLink API server, which has no
    /// such endpoint: not even asked), so there are no figures, and no error.
    pub async fn stats_summary(
        &self,
        req: &StatsRequest,
    ) -> Result<Option<StatsAnswer>, PluginError> {
        if self.mode() == PluginMode::Interlink || known_unsupported(&self.inner.base) {
            return Ok(None);
        }
        let timeout = self.timeout().min(Duration::from_secs(30));
        match self
            .call(
                "stats",
                Method::POST,
                STATS_SUMMARY_PATH,
                Some(req),
                Some(timeout),
            )
            .await
        {
            Ok(resp) => self.json(resp).await.map(Some),
            Err(PluginError::Status { status: 404, .. }) => {
                info!(
                    retry_in = ?UNSUPPORTED_FOR,
                    "the plugin has no /stats/summary: the virtual node shows no resource usage"
                );
                mark_unsupported(&self.inner.base);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
