//! The remote nodes, cached by a kube-runtime reflector (one watch, not a
//! LIST per ping), and the ping's resources computed from the cache.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use offload_wire::PingResources;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Reserve, allocatable, is_schedulable};
use crate::metrics::Metrics;

/// The remote cluster's allocatable as the ping reports it. Cheap to clone.
#[derive(Clone, Default)]
pub struct RemoteCapacity {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    nodes: Store<Node>,
    reserve: Reserve,
}

impl RemoteCapacity {
    /// Reports nothing (`--no-remote-capacity`): the virtual node keeps the
    /// provider's own figures.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the node watch (stopped by `cancel`). Needs `list` and
    /// `watch` on nodes; without them the watch retries with backoff, logs
    /// why, and the ping reports no resources.
    pub fn start(
        client: Client,
        reserve: Reserve,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (reader, writer) = reflector::store();
        let stream = watcher(Api::<Node>::all(client), watcher::Config::default())
            // Images and managed fields are most of a Node and none of its
            // capacity: not kept.
            .modify(|n: &mut Node| {
                n.managed_fields_mut().clear();
                if let Some(s) = n.status.as_mut() {
                    s.images = None;
                }
            })
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let store = reader.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    item = stream.next() => match item {
                        Some(Ok(_)) => {
                            if std::mem::take(&mut failing) {
                                info!("remote node watch recovered");
                            }
                            let schedulable = store.state().iter().filter(|n| is_schedulable(n)).count();
                            metrics.remote_schedulable_nodes(schedulable);
                        }
                        Some(Err(e)) => {
                            failing = true;
                            warn!(error = %e, "remote node watch error (needs list/watch on nodes; the ping reports no capacity until it works; retrying with backoff)");
                        }
                        None => break,
                    }
                }
            }
        });
        let inner = Inner {
            nodes: reader,
            reserve,
        };
        (
            Self {
                inner: Some(Arc::new(inner)),
            },
            task,
        )
    }

    /// The resources for the ping: `None` when disabled or before the
    /// first full list of nodes (an empty cache is no cluster of size 0).
    pub fn resources(&self) -> Option<PingResources> {
        let inner = self.inner.as_ref()?;
        let ready = futures::FutureExt::now_or_never(inner.nodes.wait_until_ready())
            .is_some_and(|r| r.is_ok());
        if !ready {
            return None;
        }
        let nodes = inner.nodes.state();
        Some(allocatable(nodes.iter().map(AsRef::as_ref), &inner.reserve))
    }
}
