//! Offloading a pod, as named steps: [`adopt`] (a remote pod a previous run
//! created), [`tunnel`] (gateway ports and annotations), [`gather`] (the
//! referenced ConfigMaps and Secrets), [`create`] (the plugin call and the
//! `JobID` annotation). A step either hands its result to the next one or
//! ends the reconcile with an [`Outcome`] (or an error: retried).

use std::ops::ControlFlow::{self, Break, Continue};
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use offload_wire::RetrievedPodData;
use tracing::{debug, info, warn};

use super::context::Failure;
use super::{Context, ControllerError, Outcome, key, uid};
use crate::client::PluginError;
use crate::payload;
use crate::status;
use crate::tunnel;

type Step<T> = Result<ControlFlow<Outcome, T>, ControllerError>;

pub(super) async fn handle_create(ctx: &Context, pod: &Pod) -> Result<Outcome, ControllerError> {
    let first_seen = ctx.track(&uid(pod), |t| {
        *t.first_seen.get_or_insert_with(Instant::now)
    });
    debug!(attempt = ctx.failures(&uid(pod)), "create");
    if let Break(outcome) = adopt(ctx, pod).await? {
        return Ok(outcome);
    }
    // Tunnel first: the annotations must travel with the pod to the plugin.
    let tunneled = match tunnel(ctx, pod).await? {
        Continue(t) => t,
        Break(outcome) => return Ok(outcome),
    };
    // No allocation: what a user wrote under the tunnel prefix is not sent.
    let pod = &tunneled.unwrap_or_else(|| tunnel::without_tunnel_annotations(pod));
    let data = match gather(ctx, pod, first_seen).await? {
        Continue(d) => d,
        Break(outcome) => return Ok(outcome),
    };
    create(ctx, pod, &data).await
}

/// A pod that existed before we started may have been created remotely by
/// a previous run that died before recording the job id: ask first, so
/// nothing is created twice even with a non-idempotent plugin. Only on the
/// first attempt: a retry follows our own failed attempt.
async fn adopt(ctx: &Context, pod: &Pod) -> Step<()> {
    let pod_uid = uid(pod);
    let created_before_start = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|t| t.0 < ctx.started);
    if !created_before_start || ctx.failures(&pod_uid) > 0 {
        return Ok(Continue(()));
    }
    // An unanswered question is no answer: go on, the plugin create is
    // idempotent by pod uid.
    let Ok(answer) = ctx.plugin.status(std::slice::from_ref(pod)).await else {
        return Ok(Continue(()));
    };
    let Some(s) = answer
        .iter()
        .find(|s| s.uid == pod_uid && !s.jid.is_empty())
    else {
        return Ok(Continue(()));
    };
    info!(jid = %s.jid, "adopting remote job created by a previous run");
    ctx.set_job_id(pod, &s.jid).await?;
    Ok(Break(Outcome::Done))
}

/// Gateway ports, annotations and Services for the pod before it is
/// offloaded: `Some(pod)`, the annotated pod to send; `None`, no tunnel
/// (off, or no TCP port). Ports exhausted: the pod waits (a Warning event
/// and a waiting status say so) and is woken when ports are given back.
async fn tunnel(ctx: &Context, pod: &Pod) -> Step<Option<Pod>> {
    let Some(gm) = &ctx.tunnel else {
        return Ok(Continue(None));
    };
    match gm.prepare_pod(pod).await {
        Ok(t) => {
            ctx.stop_waiting_for_ports(&key(pod));
            Ok(Continue(t.map(|t| tunnel::annotated(pod, &t))))
        }
        Err(gateway_manager::Error::Alloc(e)) => {
            ctx.wait_for_ports(key(pod));
            // gateway-manager recorded the Warning event on the pod.
            ctx.metrics.event("TunnelPortsExhausted");
            let msg = format!("waiting for gateway ports: {e}");
            warn!(error = %e, "no gateway ports for the pod");
            if report_waiting(ctx, pod, &msg) {
                let st =
                    status::waiting_status(pod, "TunnelPortsExhausted", &msg, Timestamp::now());
                ctx.write_status_or_warn(pod, &st).await;
            }
            Ok(Break(Outcome::Retry))
        }
        Err(e) => {
            ctx.stop_waiting_for_ports(&key(pod));
            Err(e.into())
        }
    }
}

/// Whether `msg` is news for the pod (a waiting reason is reported once).
fn report_waiting(ctx: &Context, pod: &Pod, msg: &str) -> bool {
    ctx.track(&uid(pod), |t| {
        let new = t.missing_reported.as_deref() != Some(msg);
        t.missing_reported = Some(msg.to_string());
        new
    })
}

/// The pod with what it references. A missing object is waited for (a
/// waiting status and an event say which) until `--missing-ref-timeout`,
/// then the pod fails.
async fn gather(ctx: &Context, pod: &Pod, first_seen: Instant) -> Step<RetrievedPodData> {
    let ns = pod.namespace().unwrap_or_default();
    let refs = payload::references(pod);
    let fetched = ctx.fetch(&ns, &refs).await?;
    let missing = match payload::build_payload(
        pod,
        &refs,
        &fetched,
        ctx.config.ship_service_account_tokens,
    ) {
        Ok(d) => return Ok(Continue(d)),
        Err(missing) => missing,
    };
    let msg = missing.to_string();
    let timeout = ctx.config.missing_ref_timeout;
    if first_seen.elapsed() > timeout {
        let msg = format!("{msg} after {timeout:?}");
        fail_pod(ctx, pod, "ConfigNotFound", &msg).await;
        return Ok(Break(Outcome::Done));
    }
    if report_waiting(ctx, pod, &msg) {
        info!(%msg, "waiting for a referenced object");
        let st = status::waiting_status(pod, "CreateContainerConfigError", &msg, Timestamp::now());
        ctx.write_status_or_warn(pod, &st).await;
        ctx.event(
            pod,
            EventType::Warning,
            "MissingReference",
            "Create",
            format!("{msg}; retrying"),
        )
        .await;
    }
    Ok(Break(Outcome::Retry))
}

/// The plugin call, then the job id on the local pod (retried on failure;
/// the plugin create is idempotent by pod uid). A refusal (4xx but 408 and
/// 429: policy, invalid spec) is final.
async fn create(
    ctx: &Context,
    pod: &Pod,
    data: &RetrievedPodData,
) -> Result<Outcome, ControllerError> {
    let pod_uid = uid(pod);
    let cs = match ctx.plugin.create(data).await {
        Ok(cs) => cs,
        Err(PluginError::Status { status, body })
            if (400..500).contains(&status) && status != 408 && status != 429 =>
        {
            let msg = format!("plugin refused the pod (HTTP {status}): {body}");
            fail_pod(ctx, pod, "OffloadFailed", &msg).await;
            return Ok(Outcome::Done);
        }
        Err(e) => {
            let note = format!("{e}; retrying");
            ctx.warn_once(pod, Failure::Create, note).await;
            return Err(e.into());
        }
    };
    if !cs.pod_uid.is_empty() && cs.pod_uid != pod_uid {
        warn!(answer_uid = %cs.pod_uid, "plugin answered create for another pod uid");
    }
    let jid = if cs.pod_jid.is_empty() {
        pod_uid.clone()
    } else {
        cs.pod_jid.clone()
    };
    ctx.set_job_id(pod, &jid).await?;
    ctx.track(&pod_uid, |t| {
        t.missing_reported = None;
        t.create_failure_reported = false;
    });
    info!(%jid, "offloaded");
    let note = format!("created remotely, job id {jid}");
    ctx.event_later(pod, "Offloaded", note);
    Ok(Outcome::Done)
}

/// The pod can never be offloaded: `Failed` status and a Warning event.
async fn fail_pod(ctx: &Context, pod: &Pod, reason: &str, msg: &str) {
    warn!(reason, %msg, "pod failed before offload");
    let st = status::failed_status(pod, reason, msg, Timestamp::now());
    ctx.write_status_or_warn(pod, &st).await;
    ctx.event(
        pod,
        EventType::Warning,
        "OffloadFailed",
        "Create",
        msg.to_string(),
    )
    .await;
}
