//! The plugin's `/stats/summary` extension (not part of interLink; see
//! `offload_wire::stats`): CPU and memory of this node's offloaded pods.

use http::Method;
use offload_wire::stats::{STATS_SUMMARY_PATH, StatsAnswer, StatsRequest};

use super::{PluginClient, PluginError};
use crate::config::PluginMode;

impl PluginClient {
    /// The figures of the pods `req` names. `Ok(None)`: the plugin does not
    /// offer the extension (404, or an interLink API server, which has no
    /// such endpoint: not even asked), so there are no figures, and no error.
    pub async fn stats_summary(
        &self,
        req: &StatsRequest,
    ) -> Result<Option<StatsAnswer>, PluginError> {
        if self.mode() == PluginMode::Interlink {
            return Ok(None);
        }
        let timeout = self.timeout().min(std::time::Duration::from_secs(30));
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
            Err(PluginError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
