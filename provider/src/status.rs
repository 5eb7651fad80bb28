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

/// A pod phase, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Pending,
        Phase::Running,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }

    pub fn parse(s: &str) -> Phase {
        match s {
            "Pending" => Phase::Pending,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            _ => Phase::Unknown,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The local phase of a pod as stored (`Pending` when absent).
pub fn local_phase(pod: &Pod) -> Phase {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .map(Phase::parse)
        .unwrap_or(Phase::Pending)
}

/// Whether the status loop must keep polling this pod. Terminal pods are
/// final (their containers will never run again); everything else, including
/// restartable pods whose containers crashed, keeps being followed.
pub fn needs_polling(pod: &Pod) -> bool {
    !local_phase(pod).is_terminal()
}

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

/// Kubelet 1.20's `getPhase`, over our (complete) list of statuses.
pub fn compute_phase(pod: &Pod, init: &[ContainerStatus], main: &[ContainerStatus]) -> Phase {
    let by_name = |list: &'_ [ContainerStatus], name: &str| -> Option<ContainerStatus> {
        list.iter().find(|c| c.name == name).cloned()
    };
    let mut pending_init = 0;
    let mut failed_init = 0;
    for c in init_containers(pod) {
        let Some(st) = by_name(init, &c.name) else {
            pending_init += 1;
            continue;
        };
        let state = st.state.unwrap_or_default();
        let last_term = st.last_state.and_then(|l| l.terminated);
        if state.running.is_some() {
            pending_init += 1;
        } else if let Some(t) = state.terminated {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if state.waiting.is_some() {
            match last_term {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut unknown, mut running, mut waiting_n, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in containers(pod) {
        let Some(st) = by_name(main, &c.name) else {
            unknown += 1;
            continue;
        };
        let state = st.state.unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            if st.last_state.and_then(|l| l.terminated).is_some() {
                stopped += 1;
            } else {
                waiting_n += 1;
            }
        } else {
            unknown += 1;
        }
    }
    let policy = restart_policy(pod);
    if failed_init > 0 && policy == "Never" {
        return Phase::Failed;
    }
    if pending_init > 0 || waiting_n > 0 {
        return Phase::Pending;
    }
    if running > 0 && unknown == 0 {
        return Phase::Running;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if policy == "Always" {
            return Phase::Running;
        }
        if stopped == succeeded {
            return Phase::Succeeded;
        }
        if policy == "Never" {
            return Phase::Failed;
        }
        return Phase::Running;
    }
    Phase::Pending
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
    let last = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
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
    let old = pod.status.clone().unwrap_or_default();
    let old_init = old.init_container_statuses.clone().unwrap_or_default();
    let old_main = old.container_statuses.clone().unwrap_or_default();
    let remote_init: BTreeMap<&str, &ContainerStatus> = remote
        .init_containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let remote_main: BTreeMap<&str, &ContainerStatus> = remote
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();

    let init: Vec<ContainerStatus> = init_containers(pod)
        .iter()
        .map(|c| match remote_init.get(c.name.as_str()) {
            Some(r) => sanitize_container(c, r, true),
            None => old_init
                .iter()
                .find(|o| o.name == c.name)
                .cloned()
                .unwrap_or_else(|| placeholder(c, "PodInitializing", None)),
        })
        .collect();
    let init_done = init.iter().all(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    });
    let main: Vec<ContainerStatus> = containers(pod)
        .iter()
        .map(|c| match remote_main.get(c.name.as_str()) {
            Some(r) => sanitize_container(c, r, false),
            None => old_main
                .iter()
                .find(|o| o.name == c.name)
                .cloned()
                .unwrap_or_else(|| {
                    placeholder(
                        c,
                        if init_done {
                            "ContainerCreating"
                        } else {
                            "PodInitializing"
                        },
                        None,
                    )
                }),
        })
        .collect();
    let mut phase = compute_phase(pod, &init, &main);
    let start = start_time(pod, now);
    // The kubelet enforces activeDeadlineSeconds itself (the remote one does it
    // for the remote pod, but the interLink status carries no pod phase or
    // reason): past the deadline an active pod is Failed, containers as they
    // are (this is only called for pods that were not terminal yet).
    // The remote kubelet may get there first: the plugin then reports the
    // remote pod's reason on its containers.
    let remote_deadline = main.iter().chain(&init).any(|c| {
        c.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("DeadlineExceeded"))
    });
    let deadline_exceeded = phase != Phase::Succeeded
        && (active_deadline_exceeded(pod, &start, now)
            || (remote_deadline
                && pod
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.active_deadline_seconds.is_some())));
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

/// Status of a pod that could not be created remotely and never will be:
/// `Failed` with the reason, every container terminated with exit code 1
/// (what interLink's VK does too, so tooling sees the same thing).
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
    let main: Vec<ContainerStatus> = containers(pod).iter().map(term).collect();
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
    let main: Vec<ContainerStatus> = containers(pod).iter().map(w).collect();
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
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStateRunning, PodSpec, Probe};
    use pretty_assertions::assert_eq;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn pod(policy: &str, init: &[&str], main: &[&str]) -> Pod {
        let c = |n: &&str| Container {
            name: n.to_string(),
            image: Some("busybox:1".into()),
            ..Default::default()
        };
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
                containers: main.iter().map(c).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn running(name: &str, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(ts("2026-01-01T00:00:00Z"))),
                }),
                ..Default::default()
            }),
            restart_count: restarts,
            image: "busybox:1".into(),
            ..Default::default()
        }
    }

    fn terminated(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                    started_at: Some(Time(ts("2026-01-01T00:00:00Z"))),
                    finished_at: Some(Time(ts("2026-01-01T00:00:05Z"))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn crashloop(name: &str, last_code: i32, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(waiting("CrashLoopBackOff", None)),
            last_state: terminated(name, last_code).state,
            restart_count: restarts,
            ..Default::default()
        }
    }

    fn remote(init: Vec<ContainerStatus>, main: Vec<ContainerStatus>) -> RemoteStatus {
        RemoteStatus {
            name: "p".into(),
            uid: "u".into(),
            namespace: "n".into(),
            jid: "j".into(),
            containers: main,
            init_containers: init,
        }
    }

    fn now() -> Timestamp {
        ts("2026-01-01T00:01:00Z")
    }

    fn phase_of(p: &Pod, r: &RemoteStatus) -> String {
        map_remote_status(p, r, None, now())
            .phase
            .expect("phase set")
    }

    fn cond<'a>(s: &'a LocalStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == t))
            .expect("condition")
    }

    #[test]
    fn nothing_reported_yet_stays_pending_not_succeeded() {
        let p = pod("Never", &[], &["c"]);
        let s = map_remote_status(&p, &remote(vec![], vec![]), Some("10.0.0.1"), now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let cs = &s.container_statuses.expect("statuses")[0];
        assert_eq!(
            cs.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref()),
            Some("ContainerCreating")
        );
        assert_eq!(s.host_ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn running_then_succeeded() {
        let p = pod("Never", &[], &["c"]);
        let s = map_remote_status(&p, &remote(vec![], vec![running("c", 0)]), None, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        let c = &s.container_statuses.as_ref().expect("statuses")[0];
        assert!(c.ready);
        assert_eq!(c.started, Some(true));
        let s = map_remote_status(&p, &remote(vec![], vec![terminated("c", 0)]), None, now());
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        let t = s.container_statuses.expect("statuses")[0]
            .state
            .clone()
            .and_then(|s| s.terminated)
            .expect("terminated");
        assert_eq!(t.reason.as_deref(), Some("Completed"));
        assert_eq!(t.finished_at, Some(Time(ts("2026-01-01T00:00:05Z"))));
    }

    #[test]
    fn failing_container_keeps_exit_code_and_fails_the_pod() {
        let p = pod("Never", &[], &["a", "b"]);
        let s = map_remote_status(
            &p,
            &remote(vec![], vec![terminated("a", 0), terminated("b", 42)]),
            None,
            now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let b = &s.container_statuses.expect("statuses")[1];
        assert_eq!(
            b.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
            Some(42)
        );
    }

    #[test]
    fn partial_report_is_not_completion() {
        // One of two containers terminated, the other unreported: not done.
        let p = pod("Never", &[], &["a", "b"]);
        assert_eq!(
            phase_of(&p, &remote(vec![], vec![terminated("a", 0)])),
            "Pending"
        );
        // One running, one terminated: Running.
        assert_eq!(
            phase_of(
                &p,
                &remote(vec![], vec![terminated("a", 0), running("b", 0)])
            ),
            "Running"
        );
    }

    #[test]
    fn init_containers_run_first() {
        let p = pod("Never", &["init"], &["c"]);
        let s = map_remote_status(&p, &remote(vec![running("init", 0)], vec![]), None, now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Initialized").status, "False");
        let main = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(
            main.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref()),
            Some("PodInitializing")
        );
        let s = map_remote_status(
            &p,
            &remote(vec![terminated("init", 0)], vec![running("c", 0)]),
            None,
            now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Initialized").status, "True");
        let init = &s.init_container_statuses.expect("init statuses")[0];
        assert!(init.ready);
        assert_eq!(init.started, None);
    }

    #[test]
    fn failed_init_container_fails_a_never_pod_but_not_an_always_pod() {
        let never = pod("Never", &["init"], &["c"]);
        assert_eq!(
            phase_of(&never, &remote(vec![terminated("init", 3)], vec![])),
            "Failed"
        );
        let always = pod("Always", &["init"], &["c"]);
        assert_eq!(
            phase_of(&always, &remote(vec![crashloop("init", 3, 2)], vec![])),
            "Pending"
        );
    }

    #[test]
    fn restartable_pods_stay_running_with_restart_counts() {
        let p = pod("Always", &[], &["c"]);
        let s = map_remote_status(&p, &remote(vec![], vec![crashloop("c", 1, 4)]), None, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let c = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(c.restart_count, 4);
        assert_eq!(
            c.last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
            Some(1)
        );
        assert!(!c.ready);
        // Even a terminated report does not end an Always pod: it is followed on.
        assert_eq!(
            phase_of(&p, &remote(vec![], vec![terminated("c", 0)])),
            "Running"
        );
        let mut followed = p.clone();
        followed.status = Some(s);
        assert!(needs_polling(&followed));
    }

    #[test]
    fn on_failure_pod_succeeds_or_keeps_running() {
        let p = pod("OnFailure", &[], &["c"]);
        assert_eq!(
            phase_of(&p, &remote(vec![], vec![terminated("c", 0)])),
            "Succeeded"
        );
        assert_eq!(
            phase_of(&p, &remote(vec![], vec![crashloop("c", 2, 1)])),
            "Running"
        );
    }

    #[test]
    fn terminal_pods_stop_being_polled() {
        let mut p = pod("Never", &[], &["c"]);
        assert!(needs_polling(&p));
        p.status = Some(map_remote_status(
            &p,
            &remote(vec![], vec![terminated("c", 1)]),
            None,
            now(),
        ));
        assert!(!needs_polling(&p));
    }

    #[test]
    fn readiness_probe_means_remote_readiness_counts() {
        let mut p = pod("Always", &[], &["c"]);
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].readiness_probe = Some(Probe::default());
        }
        let s = map_remote_status(&p, &remote(vec![], vec![running("c", 0)]), None, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "False");
        let mut ready = running("c", 0);
        ready.ready = true;
        let s = map_remote_status(&p, &remote(vec![], vec![ready]), None, now());
        assert_eq!(cond(&s, "Ready").status, "True");
    }

    #[test]
    fn newer_fields_are_dropped_and_transition_times_kept() {
        let p0 = pod("Never", &[], &["c"]);
        let mut r = running("c", 0);
        r.allocated_resources = Some(Default::default());
        r.user = Some(Default::default());
        r.volume_mounts = Some(vec![]);
        let s = map_remote_status(&p0, &remote(vec![], vec![r.clone()]), None, now());
        let c = &s.container_statuses.as_ref().expect("statuses")[0];
        assert!(c.allocated_resources.is_none() && c.user.is_none() && c.volume_mounts.is_none());
        let json = serde_json::to_value(&s).expect("json");
        assert!(json.get("hostIPs").is_none() && json.get("podIPs").is_none());
        // A later mapping keeps the Ready transition time and the start time.
        let mut p1 = p0.clone();
        p1.status = Some(s.clone());
        let later = ts("2026-01-01T00:09:00Z");
        let s2 = map_remote_status(&p1, &remote(vec![], vec![r]), None, later);
        assert_eq!(
            cond(&s2, "Ready").last_transition_time,
            cond(&s, "Ready").last_transition_time
        );
        assert_eq!(s2.start_time, s.start_time);
        assert!(!status_changed(&p1, &s2));
    }

    #[test]
    fn failed_and_waiting_statuses() {
        let p = pod("Always", &["i"], &["c"]);
        let f = failed_status(&p, "ProviderFailed", "boom", now());
        assert_eq!(f.phase.as_deref(), Some("Failed"));
        assert_eq!(f.reason.as_deref(), Some("ProviderFailed"));
        assert_eq!(f.init_container_statuses.as_ref().map(Vec::len), Some(1));
        let w = waiting_status(
            &p,
            "CreateContainerConfigError",
            "configmap \"x\" not found",
            now(),
        );
        assert_eq!(w.phase.as_deref(), Some("Pending"));
        let c = &w.container_statuses.expect("statuses")[0];
        assert_eq!(
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.message.as_deref()),
            Some("configmap \"x\" not found")
        );
    }

    #[test]
    fn deletion_requested_ago_counts_from_the_request_not_the_deadline() {
        let at = |s: &str| -> Timestamp { s.parse().expect("ts") };
        let secs = std::time::Duration::from_secs;
        // Deleted at 12:00:00 with a 30 s grace: deletionTimestamp 12:00:30.
        let deadline = at("2026-01-01T12:00:30Z");
        assert_eq!(
            deletion_requested_ago(deadline, 30, at("2026-01-01T12:00:00Z")),
            secs(0)
        );
        assert_eq!(
            deletion_requested_ago(deadline, 30, at("2026-01-01T12:00:10Z")),
            secs(10)
        );
        assert_eq!(
            deletion_requested_ago(deadline, 30, at("2026-01-01T12:01:30Z")),
            secs(90)
        );
        // Grace 0: the timestamp is the request time.
        assert_eq!(
            deletion_requested_ago(at("2026-01-01T12:00:00Z"), 0, at("2026-01-01T12:00:05Z")),
            secs(5)
        );
        // Clock skew (timestamp further ahead than the grace): zero, not a wrap-around.
        assert_eq!(
            deletion_requested_ago(deadline, 0, at("2026-01-01T12:00:00Z")),
            secs(0)
        );
    }

    #[test]
    fn a_startup_probe_holds_started_and_ready_back_as_reported() {
        let mut p = pod("Always", &[], &["c"]);
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].startup_probe = Some(Probe::default());
        }
        let mut c = running("c", 0);
        c.started = Some(false);
        let s = map_remote_status(&p, &remote(vec![], vec![c.clone()]), None, now());
        let cs = &s.container_statuses.clone().expect("statuses")[0];
        assert_eq!((cs.started, cs.ready), (Some(false), false));
        assert_eq!(cond(&s, "Ready").status, "False");
        c.started = Some(true);
        c.ready = true;
        let s = map_remote_status(&p, &remote(vec![], vec![c.clone()]), None, now());
        let cs = &s.container_statuses.clone().expect("statuses")[0];
        assert_eq!((cs.started, cs.ready), (Some(true), true));
        // A plugin that does not report `started`: not started before ready.
        c.started = None;
        c.ready = false;
        let s = map_remote_status(&p, &remote(vec![], vec![c]), None, now());
        let cs = &s.container_statuses.expect("statuses")[0];
        assert_eq!(cs.started, Some(false));
    }

    #[test]
    fn past_active_deadline_the_pod_fails_with_deadline_exceeded() {
        let mut p = pod("Always", &[], &["c"]);
        if let Some(spec) = p.spec.as_mut() {
            spec.active_deadline_seconds = Some(10);
        }
        p.status = Some(LocalStatus {
            start_time: Some(Time(ts("2026-01-01T00:00:55Z"))),
            ..Default::default()
        });
        let r = remote(vec![], vec![running("c", 0)]);
        let s = map_remote_status(&p, &r, None, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.reason, None);
        p.status = Some(LocalStatus {
            start_time: Some(Time(ts("2026-01-01T00:00:50Z"))),
            ..Default::default()
        });
        let s = map_remote_status(&p, &r, None, now());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(cond(&s, "Ready").status, "False");

        // The remote kubelet noticed first (the plugin puts the remote pod's
        // reason on the containers it stopped).
        p.status = Some(LocalStatus {
            start_time: Some(Time(ts("2026-01-01T00:00:55Z"))),
            ..Default::default()
        });
        let mut stopped = terminated("c", 1);
        if let Some(t) = stopped.state.as_mut().and_then(|st| st.terminated.as_mut()) {
            t.reason = Some("DeadlineExceeded".into());
        }
        let s = map_remote_status(&p, &remote(vec![], vec![stopped]), None, now());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
    }
}
