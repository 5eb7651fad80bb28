//! Pods that vanish from the API without us (force-deleted: `--grace-period=0
//! --force`, or a terminal pod removed at once) must be deleted remotely too.
//!
//! kube-runtime's Controller cannot do this: it only reconciles objects that
//! are in its store, so a pod that is gone is never handed to `reconcile`
//! (its queued reconciles end as `ObjectNotFound`). The `Delete` events of
//! the Controller's watch stream are tapped instead ([`super::Taps::gone`]).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::delete::release_tunnel;
use super::{Context, uid};

/// Handle the pods that left the API until `cancel`.
pub async fn run_vanished(
    ctx: Arc<Context>,
    mut gone: UnboundedReceiver<Pod>,
    cancel: CancellationToken,
) {
    loop {
        let pod = tokio::select! {
            p = gone.recv() => p,
            _ = cancel.cancelled() => return,
        };
        match pod {
            Some(p) => on_vanished(&ctx, p),
            None => return,
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
