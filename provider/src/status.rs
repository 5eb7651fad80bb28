//! Pure mapping of the plugin's status answer onto the local pod status.
//!
//! The rules follow the kubelet's own phase computation (`getPhase` in
//! kubelet 1.20), not interLink's Virtual Kubelet: a pod whose remote side has
//! not reported any container yet stays `Pending` (interLink would call it
//! `Succeeded`: 0 of 0 containers terminated), restartable pods never become
//! terminal, and the remote container statuses keep their restart counts,
//! exit codes, reasons and times.
//!
//! Only fields that a Kubernetes 1.20 apiserver knows are written: no
//! `hostIPs`, `podIPs`, `resize`, `allocatedResources`, `resources` ...

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodCondition, PodStatus as LocalStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use offload_wire::PodStatus as RemoteStatus;

pub mod coalesce;
mod phase;
pub mod stream;
pub use phase::{Phase, compute_phase, local_phase, needs_polling};

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[])
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

/// Copy only the 1.20-era fields of a container state.
fn sanitize_state(s: &ContainerState) -> ContainerState {
    ContainerState {
        running: s.running.clone(),
        terminated: s.terminated.as_ref().map(|t| ContainerStateTerminated {
            container_id: t.container_id.clone(),
            exit_code: t.exit_code,
            finished_at: t.finished_at.clone(),
            message: t.message.clone(),
            reason: t.reason.clone(),
            signal: t.signal,
            started_at: t.started_at.clone(),
        }),
        waiting: s.waiting.clone(),
    }
}

fn is_set(s: &Option<ContainerState>) -> bool {
    s.as_ref()
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some() || s.waiting.is_some())
}

/// A container status built from the remote one, with only the fields a 1.20
/// apiserver accepts. `ready` is the remote readiness; a running container
/// without readiness or startup probe is ready (plugins that do not report
/// readiness, like interLink's Python plugin, would otherwise never be).
fn sanitize_container(spec: &Container, remote: &ContainerStatus, init: bool) -> ContainerStatus {
    let state = remote.state.as_ref().map(sanitize_state);
    let running = state.as_ref().is_some_and(|s| s.running.is_some());
    let succeeded = state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.exit_code == 0);
    let ready = if init {
        succeeded
    } else {
        remote.ready || (running && spec.readiness_probe.is_none() && spec.startup_probe.is_none())
    };
    let image = if remote.image.is_empty() {
        spec.image.clone().unwrap_or_default()
    } else {
        remote.image.clone()
    };
    ContainerStatus {
        name: spec.name.clone(),
        state: if is_set(&state) {
            state
        } else {
            Some(waiting("ContainerCreating", None))
        },
        last_state: remote
            .last_state
            .as_ref()
            .map(sanitize_state)
            .filter(|s| is_set(&Some(s.clone()))),
        ready,
        restart_count: remote.restart_count.max(0),
        image,
        image_id: remote.image_id.clone(),
        container_id: remote.container_id.clone().filter(|c| !c.is_empty()),
        // The remote kubelet's `started` (false until a startup probe passes);
        // plugins that do not report it: running, unless a startup probe has not
        // let the container become ready yet.
        started: if init {
            None
        } else {
            Some(
                remote
                    .started
                    .unwrap_or(running && (spec.startup_probe.is_none() || remote.ready)),
            )
        },
        ..Default::default()
    }
}

fn placeholder(spec: &Container, reason: &str, message: Option<String>) -> ContainerStatus {
    ContainerStatus {
        name: spec.name.clone(),
        state: Some(waiting(reason, message)),
        ready: false,
        restart_count: 0,
        image: spec.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ..Default::default()
    }
}

/// A condition's `lastTransitionTime`: kept from the old condition
/// `(type, status, lastTransitionTime)` of the same type while its status
/// is unchanged, else `now`. Shared by pod and node conditions.
pub(crate) fn transition_time<'a>(
    mut old: impl Iterator<Item = (&'a str, &'a str, Option<&'a Time>)>,
    type_: &str,
    status: &str,
    now: Timestamp,
) -> Time {
    old.find(|&(t, s, _)| t == type_ && s == status)
        .and_then(|(_, _, at)| at.cloned())
        .unwrap_or(Time(now))
}

fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let old = old
        .iter()
        .map(|c| (&*c.type_, &*c.status, c.last_transition_time.as_ref()));
    let last = transition_time(old, type_, status, now);
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(last),
        last_probe_time: None,
        ..Default::default()
    }
}

/// The four standard pod conditions for a phase and container statuses.
fn conditions(
    pod: &Pod,
    phase: Phase,
    init: &[ContainerStatus],
    main: &[ContainerStatus],
    now: Timestamp,
) -> Vec<PodCondition> {
    let old = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let incomplete: Vec<&str> = init_containers(pod)
        .iter()
        .filter(|c| {
            !init.iter().any(|s| {
                s.name == c.name
                    && s.state
                        .as_ref()
                        .and_then(|st| st.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
            })
        })
        .map(|c| c.name.as_str())
        .collect();
    // Kubelet: a pod that ran to Succeeded is initialized even if an init
    // container status got lost.
    let initialized = incomplete.is_empty() || phase == Phase::Succeeded;
    let unready: Vec<&str> = containers(pod)
        .iter()
        .filter(|c| !main.iter().any(|s| s.name == c.name && s.ready))
        .map(|c| c.name.as_str())
        .collect();
    let ready = unready.is_empty() && phase == Phase::Running;
    let (ready_reason, ready_msg) = if ready {
        (None, None)
    } else if phase.is_terminal() {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    vec![
        condition(
            &old,
            "Initialized",
            initialized,
            if initialized {
                phase.is_terminal().then_some("PodCompleted")
            } else {
                Some("ContainersNotInitialized")
            },
            (!initialized).then(|| {
                format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )
            }),
            now,
        ),
        condition(&old, "Ready", ready, ready_reason, ready_msg.clone(), now),
        condition(&old, "ContainersReady", ready, ready_reason, ready_msg, now),
        condition(&old, "PodScheduled", true, None, None, now),
    ]
}

/// Kubelet 1.20's `pastActiveDeadline`: `startTime + activeDeadlineSeconds`
/// has passed.
fn active_deadline_exceeded(pod: &Pod, start: &Time, now: Timestamp) -> bool {
    let Some(deadline) = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else {
        return false;
    };
    now.duration_since(start.0).as_secs() >= deadline
}

/// Start time: kept once set.
fn start_time(pod: &Pod, now: Timestamp) -> Time {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(now))
}

/// The statuses of `specs` in spec order (see [`kubelet_order`]): the remote one when reported,
/// else the previous local one, else a `Waiting` placeholder with `reason`.
fn merge_statuses(
    specs: &[Container],
    remote: &[ContainerStatus],
    old: Option<&Vec<ContainerStatus>>,
    init: bool,
    reason: impl Fn() -> &'static str,
) -> Vec<ContainerStatus> {
    let remote: BTreeMap<&str, &ContainerStatus> =
        remote.iter().map(|c| (c.name.as_str(), c)).collect();
    let old = old.map(Vec::as_slice).unwrap_or_default();
    specs
        .iter()
        .map(|c| match remote.get(c.name.as_str()) {
            Some(r) => sanitize_container(c, r, init),
            None => old
                .iter()
                .find(|o| o.name == c.name)
                .cloned()
                .unwrap_or_else(|| placeholder(c, reason(), None)),
        })
        .collect()
}

/// Regular containers' statuses in the kubelet's order: sorted by name
/// (init containers stay in spec order, as on a kubelet). Tools read the
/// order: `kubectl get pod` shows the reason of the first status, so a pod
/// whose `main-app` failed and whose `success-sidecar` completed reads
/// `Error`, on a real node and here.
fn kubelet_order(mut statuses: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    statuses
}

fn terminated_with(s: &ContainerStatus, check: impl Fn(&ContainerStateTerminated) -> bool) -> bool {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .is_some_and(check)
}

/// The kubelet enforces activeDeadlineSeconds itself (the remote one does it
/// for the remote pod, but the interLink status carries no pod phase or
/// reason): past the deadline an active pod is Failed, containers as they
/// are (this is only called for pods that were not terminal yet).
/// The remote kubelet may get there first: the plugin then reports the
/// remote pod's reason on its containers.
fn deadline_exceeded(
    pod: &Pod,
    phase: Phase,
    statuses: &[&ContainerStatus],
    start: &Time,
    now: Timestamp,
) -> bool {
    let remote_deadline = statuses
        .iter()
        .any(|c| terminated_with(c, |t| t.reason.as_deref() == Some("DeadlineExceeded")));
    phase != Phase::Succeeded
        && (active_deadline_exceeded(pod, start, now)
            || (remote_deadline
                && pod
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.active_deadline_seconds.is_some())))
}

/// The local status for a pod given the plugin's answer for it.
///
/// Containers the plugin did not report (yet) are shown `Waiting`: the
/// previous local status is kept if there is one, else `ContainerCreating`
/// (`PodInitializing` while init containers have not completed).
pub fn map_remote_status(
    pod: &Pod,
    remote: &RemoteStatus,
    host_ip: Option<&str>,
    now: Timestamp,
) -> LocalStatus {
    let old = pod.status.as_ref();
    let init = merge_statuses(
        init_containers(pod),
        &remote.init_containers,
        old.and_then(|o| o.init_container_statuses.as_ref()),
        true,
        || "PodInitializing",
    );
    let init_done = init
        .iter()
        .all(|s| terminated_with(s, |t| t.exit_code == 0));
    let main = merge_statuses(
        containers(pod),
        &remote.containers,
        old.and_then(|o| o.container_statuses.as_ref()),
        false,
        || {
            if init_done {
                "ContainerCreating"
            } else {
                "PodInitializing"
            }
        },
    );
    let main = kubelet_order(main);
    let mut phase = compute_phase(pod, &init, &main);
    let start = start_time(pod, now);
    let all: Vec<&ContainerStatus> = main.iter().chain(&init).collect();
    let deadline_exceeded = deadline_exceeded(pod, phase, &all, &start, now);
    if deadline_exceeded {
        phase = Phase::Failed;
    }
    LocalStatus {
        phase: Some(phase.as_str().to_string()),
        conditions: Some(conditions(pod, phase, &init, &main, now)),
        host_ip: host_ip.map(str::to_string),
        start_time: Some(start),
        reason: deadline_exceeded.then(|| "DeadlineExceeded".to_string()),
        message: deadline_exceeded
            .then(|| "Pod was active on the node longer than the specified deadline".to_string()),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(main),
        ..Default::default()
    }
}

/// How long ago the deletion of a pod was requested. Kubernetes sets
/// `deletionTimestamp` to "request time + grace period", so it lies in the
/// future during the grace period: the request was `grace - (deletionTimestamp - now)`
/// ago. Never negative.
pub fn deletion_requested_ago(
    deletion_timestamp: Timestamp,
    grace_seconds: i64,
    now: Timestamp,
) -> std::time::Duration {
    let since = now.duration_since(deletion_timestamp)
        + jiff::SignedDuration::from_secs(grace_seconds.max(0));
    if since.is_negative() {
        std::time::Duration::ZERO
    } else {
        since.unsigned_abs()
    }
}

/// Status of a pod that could not be created remotely and never will be:
/// `Failed` with the reason, every container terminated with exit code 1
/// (what interLink's VK does too, so tooling sees the same thing).
pub fn failed_status(pod: &Pod, reason: &str, message: &str, now: Timestamp) -> LocalStatus {
    let term = |c: &Container| ContainerStatus {
        name: c.name.clone(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                finished_at: Some(Time(now)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ready: false,
        restart_count: 0,
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ..Default::default()
    };
    let init: Vec<ContainerStatus> = init_containers(pod).iter().map(term).collect();
    let main = kubelet_order(containers(pod).iter().map(term).collect());
    LocalStatus {
        phase: Some("Failed".into()),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        conditions: Some(conditions(pod, Phase::Failed, &init, &main, now)),
        start_time: Some(start_time(pod, now)),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(main),
        ..Default::default()
    }
}

/// Status of a pod still waiting for something before create (a missing
/// ConfigMap or Secret): `Pending`, containers `Waiting` with the reason, the
/// way the kubelet shows `CreateContainerConfigError`.
pub fn waiting_status(pod: &Pod, reason: &str, message: &str, now: Timestamp) -> LocalStatus {
    let w = |c: &Container| placeholder(c, reason, Some(message.to_string()));
    let init: Vec<ContainerStatus> = init_containers(pod).iter().map(w).collect();
    let main = kubelet_order(containers(pod).iter().map(w).collect());
    LocalStatus {
        phase: Some("Pending".into()),
        conditions: Some(conditions(pod, Phase::Pending, &init, &main, now)),
        start_time: Some(start_time(pod, now)),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(main),
        ..Default::default()
    }
}

/// The fields of a stored status that [`map_remote_status`] produces, so the
/// controller can skip writes that would change nothing.
pub fn comparable(s: &LocalStatus) -> LocalStatus {
    LocalStatus {
        phase: s.phase.clone(),
        conditions: s.conditions.clone().map(|mut c| {
            c.sort_by(|a, b| a.type_.cmp(&b.type_));
            c
        }),
        host_ip: s.host_ip.clone(),
        start_time: s.start_time.clone(),
        reason: s.reason.clone(),
        message: s.message.clone(),
        init_container_statuses: s.init_container_statuses.clone().filter(|v| !v.is_empty()),
        container_statuses: s.container_statuses.clone(),
        ..Default::default()
    }
}

/// Whether writing `new` would change the pod's stored status.
pub fn status_changed(pod: &Pod, new: &LocalStatus) -> bool {
    let old = pod.status.clone().unwrap_or_default();
    comparable(&old) != comparable(new)
}

#[cfg(test)]
mod tests;
