//! Pods that vanish from the API without us (force-deleted: `--grace-period=0
//! --force`, or a terminal pod removed at once) must be deleted remotely too.
//!
//! This is the one plain watcher of the provider: kube-runtime's Controller
//! only reconciles objects that are in its store, so a pod that is gone is
//! never handed to `reconcile` (its queued reconciles end as
//! `ObjectNotFound`). The watch events' `Delete` is the only place that
//! still sees the pod.

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::delete::release_tunnel;
use super::{Context, uid};

/// Watch the pods of our node (the Controller's field selector) for deletes.
pub async fn run_vanished_watcher(ctx: Arc<Context>, cancel: CancellationToken) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    loop {
        let ev = tokio::select! {
            ev = stream.try_next() => ev,
            _ = cancel.cancelled() => return,
        };
        match ev {
            Ok(Some(watcher::Event::Delete(p))) => on_vanished(&ctx, p),
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => warn!(error = %e, "pod watch error (deletes)"),
        }
    }
}

/// A pod left the API: unless we removed it ourselves or its remote delete
/// is in flight, delete it remotely, with retries, in the background.
fn on_vanished(ctx: &Arc<Context>, pod: Pod) {
    let pod_uid = uid(&pod);
    ctx.untrack(&pod_uid);
    ctx.mark_vanished(&pod_uid);
    if ctx.was_removed(&pod_uid) || ctx.is_deleting(&pod_uid) {
        return;
    }
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let deadline = Instant::now() + ctx.config.delete_timeout;
        let mut attempt = 0;
        if let Err(e) = release_tunnel(&ctx, &pod).await {
            warn!(pod = %pod.name_any(), error = %e, "cannot release the tunnel");
        }
        while let Err(e) = ctx.plugin.delete(&pod).await {
            if Instant::now() > deadline {
                warn!(pod = %pod.name_any(), error = %e, "giving up remote delete of a force-deleted pod");
                return;
            }
            tokio::time::sleep(ctx.retry.jittered(attempt)).await;
            attempt += 1;
        }
        info!(pod = %pod.name_any(), "force-deleted pod removed remotely");
    });
}
