//! Each remote node's kubelet Summary, read at most once per [`TTL`]
//! however many callers ask at once: N providers scraping every few seconds
//! must not turn into N reads of every kubelet. Failures are cached as
//! well, so a broken kubelet is not asked again by every caller.
//!
//! Hand-written rather than a caching crate: what is needed is a per-key
//! async lock (one read in flight per node, the others wait for its
//! result) and a time-to-live, a dozen lines over `tokio::sync::Mutex`.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::Client;
use offload_wire::stats::Summary;

use crate::naming::is_rfc1123_subdomain;

/// How long a node's Summary (or the failure to read it) is reused. The
/// kubelet itself refreshes its figures every 10 to 15 s (cAdvisor's
/// housekeeping), so a few seconds lose nothing.
pub const TTL: Duration = Duration::from_secs(5);

/// How long a refusal (403: the plugin's role has no `nodes/proxy`) is
/// reused: a right withheld on purpose is not asked for every few seconds.
pub const FORBIDDEN_TTL: Duration = Duration::from_secs(300);

/// Longest wait for one remote kubelet.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node's figures are missing: `reason` is for the caller (no remote
/// names), `detail` for the plugin's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatsError {
    pub reason: String,
    pub detail: String,
    /// The remote apiserver refused the read (RBAC): kept [`FORBIDDEN_TTL`].
    pub forbidden: bool,
}

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Result<Arc<Summary>, NodeStatsError>)>>>;

/// The per-node cache (one per plugin process, in the HTTP state).
pub struct NodeCache {
    ttl: Duration,
    nodes: Mutex<HashMap<String, Slot>>,
}

impl Default for NodeCache {
    fn default() -> Self {
        Self::new(TTL)
    }
}

impl NodeCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn ttl_of(&self, result: &Result<Arc<Summary>, NodeStatsError>) -> Duration {
        match result {
            Err(e) if e.forbidden => self.ttl.max(FORBIDDEN_TTL),
            _ => self.ttl,
        }
    }

    /// The Summary of `node`: cached if younger than the TTL, else read by
    /// `fetch` (one fetch per node at a time; concurrent callers wait for it).
    pub async fn get<F, Fut>(&self, node: &str, fetch: F) -> Result<Arc<Summary>, NodeStatsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Summary, NodeStatsError>>,
    {
        let slot = {
            let Ok(mut nodes) = self.nodes.lock() else {
                return Err(NodeStatsError::other(
                    "internal error",
                    "stats cache lock poisoned",
                ));
            };
            // Nodes that left the remote cluster are not kept forever.
            let stale = (self.ttl * 20).max(FORBIDDEN_TTL * 2);
            nodes.retain(|_, s| {
                s.try_lock()
                    .map(|g| g.as_ref().is_none_or(|(at, _)| at.elapsed() < stale))
                    .unwrap_or(true)
            });
            nodes.entry(node.to_string()).or_default().clone()
        };
        let mut entry = slot.lock().await;
        if let Some((at, result)) = entry.as_ref()
            && at.elapsed() < self.ttl_of(result)
        {
            return result.clone();
        }
        let result = fetch().await.map(Arc::new);
        *entry = Some((Instant::now(), result.clone()));
        result
    }
}

/// Reads `node`'s kubelet Summary through the remote apiserver's node proxy.
pub async fn fetch_node(client: &Client, node: &str) -> Result<Summary, NodeStatsError> {
    // The name goes into a URL path: only what a node name may be.
    if !is_rfc1123_subdomain(node) {
        return Err(NodeStatsError::other(
            "remote node name not valid",
            format!("node name {node:?} is not an RFC 1123 subdomain"),
        ));
    }
    let req = http::Request::get(format!("/api/v1/nodes/{node}/proxy/stats/summary"))
        .body(Vec::new())
        .map_err(|e| NodeStatsError::other("internal error", e.to_string()))?;
    match tokio::time::timeout(FETCH_TIMEOUT, client.request::<Summary>(req)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(NodeStatsError::other(
            format!("the remote kubelet did not answer within {FETCH_TIMEOUT:?}"),
            "timeout",
        )),
    }
}

/// The caller's reason for a failed read (the status code and what to do),
/// and the whole error for the log.
fn describe(e: &kube::Error) -> NodeStatsError {
    let reason = match e {
        kube::Error::Api(s) if s.code == 403 => {
            "the plugin may not read remote kubelet stats (its RBAC needs get on nodes/proxy)"
                .to_string()
        }
        kube::Error::Api(s) => format!("the remote apiserver answered HTTP {}", s.code),
        _ => "the remote kubelet's stats could not be read".to_string(),
    };
    NodeStatsError {
        reason,
        detail: e.to_string(),
        forbidden: matches!(e, kube::Error::Api(s) if s.code == 403),
    }
}

impl NodeStatsError {
    /// A failure that is not a refusal.
    pub fn other(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: detail.into(),
            forbidden: false,
        }
    }
}
