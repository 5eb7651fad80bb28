//! Removing a pod whose deletion was requested, as named steps:
//! [`remote_delete`] (the plugin call, given up after `--delete-timeout`),
//! [`release_tunnel`] (its gateway ports and Services), [`remove_local`]
//! (the local pod, by UID).

use std::ops::ControlFlow::{self, Break, Continue};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::context::Failure;
use super::{Context, ControllerError, Outcome, uid};
use crate::status;
use crate::tunnel;

pub(super) async fn handle_delete(ctx: &Context, pod: &Pod) -> Result<Outcome, ControllerError> {
    let remote_confirmed = match remote_delete(ctx, pod).await? {
        Continue(confirmed) => confirmed,
        Break(outcome) => return Ok(outcome),
    };
    ctx.mark_removed(&uid(pod));
    release_tunnel(ctx, pod).await?;
    remove_local(ctx, pod, remote_confirmed).await
}

/// How long ago the deletion was requested (Kubernetes'
/// `deletionTimestamp` is "request + grace": count from the request).
fn waited(pod: &Pod) -> std::time::Duration {
    pod.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| {
            status::deletion_requested_ago(
                t.0,
                pod.metadata.deletion_grace_period_seconds.unwrap_or(0),
                Timestamp::now(),
            )
        })
        .unwrap_or_default()
}

/// Delete the pod remotely: `Continue(true)` when confirmed, `Continue(false)`
/// when given up after `--delete-timeout` (a `DeleteTimeout` event says the
/// remote side may keep leftovers); an error before that is retried.
async fn remote_delete(
    ctx: &Context,
    pod: &Pod,
) -> Result<ControlFlow<Outcome, bool>, ControllerError> {
    let pod_uid = uid(pod);
    // Already deleted remotely by an earlier pass (the store can lag behind
    // our own local delete): only make sure the local pod is gone.
    if ctx.was_removed(&pod_uid) {
        return Ok(Continue(true));
    }
    // A terminal pod is removed by the apiserver at once: its watch Delete
    // must not send a second delete while this one is in flight.
    let Err(e) = ctx.deleting(&pod_uid, ctx.plugin.delete(pod)).await else {
        return Ok(Continue(true));
    };
    let timeout = ctx.config.delete_timeout;
    if waited(pod) < timeout {
        let note = format!("remote delete failed: {e}; retrying");
        ctx.warn_once(pod, Failure::Delete, note).await;
        return Err(e.into());
    }
    let note = format!(
        "remote delete not confirmed after {timeout:?} ({e}); removing the pod locally, the remote side may keep leftovers"
    );
    ctx.event(pod, EventType::Warning, "DeleteTimeout", "Delete", note)
        .await;
    Ok(Continue(false))
}

/// Give the pod's gateway ports back and remove its tunnel Services; pods
/// waiting for ports are woken.
pub(super) async fn release_tunnel(ctx: &Context, pod: &Pod) -> Result<(), ControllerError> {
    if let Some(gm) = &ctx.tunnel
        && tunnel::has_tunnel(gm, pod)
    {
        gm.release_pod(pod).await?;
        ctx.wake_port_waiters();
    }
    Ok(())
}

/// A pod that finished keeps nothing serving on its ports: give them back
/// (logged on failure; the next change of the pod tries again).
pub(super) async fn release_finished(ctx: &Context, pod: &Pod) {
    if ctx.tunnel.as_ref().is_some_and(|gm| gm.knows(&uid(pod)))
        && let Err(e) = release_tunnel(ctx, pod).await
    {
        warn!(pod = %pod.name_any(), error = %e, "cannot release the tunnel");
    }
}

/// Remove the local pod (grace 0, only this UID: a new pod of the same
/// name is left alone).
async fn remove_local(
    ctx: &Context,
    pod: &Pod,
    remote_confirmed: bool,
) -> Result<Outcome, ControllerError> {
    let pod_uid = uid(pod);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(pod_uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let ns = pod.namespace().unwrap_or_default();
    match ctx.pods_api(&ns).delete(&pod.name_any(), &dp).await {
        Ok(_) => info!(remote_confirmed, "pod removed"),
        // Gone already, or another pod of that name now.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.untrack(&pod_uid);
    Ok(Outcome::Done)
}
