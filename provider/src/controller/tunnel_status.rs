//! The tunnel condition (`tunnel.offload.dev/Up`) of pods whose status
//! follows the plugin's stream. While polling, every round rewrites the
//! condition with the status; with the stream a status is written only when
//! the remote pod changes, but a tunnel comes up (or drops) on its own,
//! seconds after the pod runs. So every [`REFRESH_EVERY`] the condition of
//! each tunnelled pod is compared with what gateway-manager's probe says,
//! and a changed one is written alone: a strategic merge patch of that one
//! condition (merged by its `type`), so a status the stream's writer wrote
//! meanwhile is never overwritten by an older copy from the pod cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Patch;
use offload_runtime::kubeapi::{field_manager, merge_params};
use tracing::debug;

use super::Context;
use crate::tunnel::{CONDITION_TUNNEL_UP, tunnel_condition};

/// How often the tunnel conditions are compared with the probes.
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Write the tunnel conditions that changed, in the background; a round
/// still running is not doubled.
pub(super) fn spawn_refresh(ctx: &Arc<Context>, running: &Arc<AtomicBool>) {
    let Some(gm) = ctx.tunnel.clone() else {
        return;
    };
    if running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (ctx, running) = (Arc::clone(ctx), Arc::clone(running));
    tokio::spawn(async move {
        let now = Timestamp::now();
        // Only pods with a tunnel (`knows`), read from the cache without
        // copying: at 10,000 pods this runs every 2 s.
        for pod in ctx.pods.state() {
            let Some(uid) = pod.metadata.uid.as_deref() else {
                continue;
            };
            if !gm.knows(uid) || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let old = conditions(&pod);
            let c = tunnel_condition(&old, gm.tunnel_up(uid), now);
            if old
                .iter()
                .any(|o| o.type_ == CONDITION_TUNNEL_UP && o.status == c.status)
            {
                continue;
            }
            let patch = serde_json::json!({ "status": { "conditions": [c] } });
            let ns = pod.namespace().unwrap_or_default();
            if let Err(e) = ctx
                .pods_api(&ns)
                .patch_status(
                    &pod.name_any(),
                    &merge_params(field_manager::PROVIDER_TUNNEL),
                    &Patch::Strategic(patch),
                )
                .await
            {
                debug!(pod = %pod.name_any(), namespace = %ns, error = %e, "cannot write the tunnel condition; next round");
            }
        }
        running.store(false, Ordering::Release);
    });
}

fn conditions(pod: &Pod) -> Vec<k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
}
