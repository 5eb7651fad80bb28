//! Status mapping: remote pod (from the watch cache) -> interLink `PodStatus`.
//!
//! Pure. Rules the Virtual Kubelet depends on (interLink's status contract):
//! - one entry for every container and init container of the spec, in spec
//!   order, so "all terminated" is never reached by omission;
//! - a pod that is not created yet or cannot be scheduled is *waiting*;
//! - a container that the remote kubelet will restart (restartPolicy Always,
//!   or OnFailure after a failure) is never reported as terminated, because the
//!   VK treats terminated as final.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod,
};
use offload_wire::PodStatus;

/// Identity of the local pod the caller asked about, echoed verbatim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

fn waiting(reason: &str, message: impl Into<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: Some(message.into()),
        }),
        ..Default::default()
    }
}

fn synthesized(c: &Container, state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(state),
        ..Default::default()
    }
}

/// Why a remote pod has no status for a container yet.
fn pending_reason(remote: &Pod, init: bool, inits_done: bool) -> ContainerState {
    let status = remote.status.as_ref();
    if let Some(cond) = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        && cond.status == "False"
    {
        let reason = cond.reason.as_deref().unwrap_or("Unschedulable");
        return waiting(
            reason,
            cond.message
                .clone()
                .unwrap_or_else(|| "remote pod not scheduled yet".into()),
        );
    }
    if !init && !inits_done {
        return waiting("PodInitializing", "waiting for init containers");
    }
    waiting("ContainerCreating", "remote container not started yet")
}

/// A terminated state the remote kubelet will not restart from.
fn is_final(restart_policy: &str, t: &ContainerStateTerminated, init: bool) -> bool {
    match restart_policy {
        "Never" => true,
        "OnFailure" => t.exit_code == 0,
        // Always: regular containers restart even after success; init
        // containers only after a failure.
        _ => init && t.exit_code == 0,
    }
}

/// Copies one remote container status, turning a terminated state that will be
/// restarted into waiting (with the termination kept as `lastState`).
fn map_container(
    remote_status: &ContainerStatus,
    restart_policy: &str,
    pod_terminal: bool,
    init: bool,
) -> ContainerStatus {
    let mut out = remote_status.clone();
    let terminated = out.state.as_ref().and_then(|s| s.terminated.clone());
    if let Some(t) = terminated
        && !pod_terminal
        && !is_final(restart_policy, &t, init)
    {
        out.state = Some(waiting(
            "Restarting",
            format!(
                "container exited with code {} ({}); the remote kubelet restarts it (restartPolicy {restart_policy})",
                t.exit_code,
                t.reason.as_deref().unwrap_or("no reason"),
            ),
        ));
        out.last_state = Some(ContainerState {
            terminated: Some(t),
            ..Default::default()
        });
        out.ready = false;
    }
    out
}

/// The status of one pod. `local_spec_containers` are taken from the request;
/// when the caller sent no spec, the remote pod's spec is used.
pub fn pod_status(id: &LocalIdentity, local: Option<&Pod>, remote: Option<&Pod>) -> PodStatus {
    let local_spec = local.and_then(|p| p.spec.as_ref());
    let remote_spec = remote.and_then(|p| p.spec.as_ref());
    let spec = match local_spec {
        Some(s) if !s.containers.is_empty() => Some(s),
        _ => remote_spec,
    };
    let containers: &[Container] = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let init_containers: &[Container] = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);

    let jid = remote
        .and_then(|p| p.metadata.uid.clone())
        .unwrap_or_default();

    let Some(remote) = remote else {
        let st = || waiting("ContainerCreating", "remote pod not created yet");
        return PodStatus {
            name: id.name.clone(),
            uid: id.uid.clone(),
            namespace: id.namespace.clone(),
            jid,
            containers: containers.iter().map(|c| synthesized(c, st())).collect(),
            init_containers: init_containers
                .iter()
                .map(|c| synthesized(c, st()))
                .collect(),
        };
    };

    let status = remote.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let pod_terminal = phase == "Succeeded" || phase == "Failed";
    let restart_policy = remote_spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let remote_cs = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let remote_ics = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or(&[]);
    let inits_done = init_containers.iter().all(|c| {
        remote_ics
            .iter()
            .find(|s| s.name == c.name)
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    });

    // The pod ended (evicted, deadline exceeded, ...) while a container had
    // not run or had not terminated: failed, with the pod's reason.
    let ended = || {
        let reason = status
            .and_then(|s| s.reason.clone())
            .unwrap_or_else(|| phase.to_string());
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: if phase == "Succeeded" { 0 } else { 1 },
                reason: Some(reason),
                message: status.and_then(|s| s.message.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let map = |c: &Container, found: &[ContainerStatus], init: bool| -> ContainerStatus {
        match found.iter().find(|s| s.name == c.name) {
            Some(s) if s.state.is_some() => {
                let mut out = map_container(s, restart_policy, pod_terminal, init);
                // Kubelet 1.20 leaves the last `running` state of a container it
                // killed for activeDeadlineSeconds in the Failed pod's status
                // forever; reporting it would keep the local pod running.
                if pod_terminal && out.state.as_ref().is_some_and(|st| st.running.is_some()) {
                    out.state = Some(ended());
                    out.ready = false;
                }
                out
            }
            _ if pod_terminal => synthesized(c, ended()),
            _ => synthesized(c, pending_reason(remote, init, inits_done)),
        }
    };

    PodStatus {
        name: id.name.clone(),
        uid: id.uid.clone(),
        namespace: id.namespace.clone(),
        jid,
        containers: containers
            .iter()
            .map(|c| map(c, remote_cs, false))
            .collect(),
        init_containers: init_containers
            .iter()
            .map(|c| map(c, remote_ics, true))
            .collect(),
    }
}

/// The status of a pod whose remote pod was seen before and has disappeared
/// without a `/delete` (deleted or evicted on the remote cluster, namespace
/// removed): every container terminated, so the local pod fails instead of
/// showing its last state forever.
pub fn vanished_status(id: &LocalIdentity, local: Option<&Pod>, jid: &str) -> PodStatus {
    let spec = local.and_then(|p| p.spec.as_ref());
    let gone = |c: &Container| {
        synthesized(
            c,
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some("RemotePodDeleted".into()),
                    message: Some(
                        "the remote pod disappeared (deleted or evicted on the remote cluster)"
                            .into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    };
    PodStatus {
        name: id.name.clone(),
        uid: id.uid.clone(),
        namespace: id.namespace.clone(),
        jid: jid.to_string(),
        containers: spec
            .map(|s| s.containers.iter().map(gone).collect())
            .unwrap_or_default(),
        init_containers: spec
            .and_then(|s| s.init_containers.as_ref())
            .map(|v| v.iter().map(gone).collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerStateRunning, PodCondition, PodSpec, PodStatus as K8sPodStatus,
    };
    use pretty_assertions::assert_eq;

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    fn spec(containers: &[&str], inits: &[&str], restart: &str) -> PodSpec {
        PodSpec {
            containers: containers.iter().map(|n| container(n)).collect(),
            init_containers: if inits.is_empty() {
                None
            } else {
                Some(inits.iter().map(|n| container(n)).collect())
            },
            restart_policy: Some(restart.into()),
            ..Default::default()
        }
    }

    fn local_pod(containers: &[&str], inits: &[&str]) -> Pod {
        Pod {
            spec: Some(spec(containers, inits, "Never")),
            ..Default::default()
        }
    }

    fn id() -> LocalIdentity {
        LocalIdentity {
            name: "p".into(),
            namespace: "ns".into(),
            uid: "u".into(),
        }
    }

    fn terminated(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_count: 0,
            ..Default::default()
        }
    }

    fn running(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready: true,
            restart_count: 2,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn remote_pod(
        restart: &str,
        phase: &str,
        inits: Vec<ContainerStatus>,
        cs: Vec<ContainerStatus>,
        containers: &[&str],
        init_names: &[&str],
    ) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                uid: Some("remote-uid".into()),
                ..Default::default()
            },
            spec: Some(spec(containers, init_names, restart)),
            status: Some(K8sPodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(cs),
                init_container_statuses: Some(inits),
                ..Default::default()
            }),
        }
    }

    fn reason(s: &ContainerStatus) -> (&str, Option<&str>) {
        let st = s.state.as_ref().expect("state");
        if let Some(w) = &st.waiting {
            ("waiting", w.reason.as_deref())
        } else if let Some(t) = &st.terminated {
            ("terminated", t.reason.as_deref())
        } else {
            ("running", None)
        }
    }

    #[test]
    fn not_created_yet_reports_every_container_waiting() {
        let local = local_pod(&["a", "b"], &["init"]);
        let st = pod_status(&id(), Some(&local), None);
        assert_eq!(st.name, "p");
        assert_eq!(st.uid, "u");
        assert_eq!(st.namespace, "ns");
        assert_eq!(st.containers.len(), 2);
        assert_eq!(st.init_containers.len(), 1);
        for c in st.containers.iter().chain(&st.init_containers) {
            assert_eq!(reason(c), ("waiting", Some("ContainerCreating")));
        }
    }

    #[test]
    fn unschedulable_is_waiting_with_the_scheduler_message() {
        let mut remote = remote_pod("Never", "Pending", vec![], vec![], &["a"], &[]);
        remote.status.as_mut().expect("status").conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/1 nodes are available: 1 node(s) were unschedulable.".into()),
            ..Default::default()
        }]);
        let st = pod_status(&id(), Some(&local_pod(&["a"], &[])), Some(&remote));
        assert_eq!(
            reason(&st.containers[0]),
            ("waiting", Some("Unschedulable"))
        );
        let msg = st.containers[0]
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.message.clone());
        assert!(msg.unwrap_or_default().contains("unschedulable"));
        assert_eq!(st.jid, "remote-uid");
    }

    #[test]
    fn missing_statuses_are_filled_and_regular_containers_wait_for_inits() {
        let remote = remote_pod(
            "Never",
            "Pending",
            vec![running("init")],
            vec![],
            &["a", "b"],
            &["init"],
        );
        let st = pod_status(
            &id(),
            Some(&local_pod(&["a", "b"], &["init"])),
            Some(&remote),
        );
        assert_eq!(st.containers.len(), 2);
        assert_eq!(
            reason(&st.containers[1]),
            ("waiting", Some("PodInitializing"))
        );
        assert_eq!(reason(&st.init_containers[0]), ("running", None));
    }

    #[test]
    fn real_states_are_copied_with_exit_codes_and_restart_counts() {
        let remote = remote_pod(
            "Never",
            "Failed",
            vec![terminated("init", 0)],
            vec![terminated("a", 42), terminated("b", 0)],
            &["a", "b"],
            &["init"],
        );
        let st = pod_status(
            &id(),
            Some(&local_pod(&["a", "b"], &["init"])),
            Some(&remote),
        );
        let code = |s: &ContainerStatus| {
            s.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
        };
        assert_eq!(code(&st.containers[0]), Some(42));
        assert_eq!(code(&st.containers[1]), Some(0));
        assert_eq!(code(&st.init_containers[0]), Some(0));
    }

    #[test]
    fn restartable_terminated_container_is_reported_waiting_with_last_state() {
        let remote = remote_pod(
            "Always",
            "Running",
            vec![],
            vec![terminated("a", 1)],
            &["a"],
            &[],
        );
        let st = pod_status(&id(), Some(&local_pod(&["a"], &[])), Some(&remote));
        assert_eq!(reason(&st.containers[0]), ("waiting", Some("Restarting")));
        let last = st.containers[0]
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref());
        assert_eq!(last.map(|t| t.exit_code), Some(1));

        // OnFailure + success is final.
        let remote = remote_pod(
            "OnFailure",
            "Running",
            vec![],
            vec![terminated("a", 0)],
            &["a"],
            &[],
        );
        let st = pod_status(&id(), Some(&local_pod(&["a"], &[])), Some(&remote));
        assert_eq!(reason(&st.containers[0]), ("terminated", Some("Completed")));

        // Running keeps its restart count.
        let remote = remote_pod("Always", "Running", vec![], vec![running("a")], &["a"], &[]);
        let st = pod_status(&id(), Some(&local_pod(&["a"], &[])), Some(&remote));
        assert_eq!(st.containers[0].restart_count, 2);
    }

    #[test]
    fn terminal_pod_without_container_status_is_failed_not_waiting() {
        let mut remote = remote_pod("Always", "Failed", vec![], vec![], &["a"], &[]);
        remote.status.as_mut().expect("status").reason = Some("Evicted".into());
        let st = pod_status(&id(), Some(&local_pod(&["a"], &[])), Some(&remote));
        assert_eq!(reason(&st.containers[0]), ("terminated", Some("Evicted")));
    }

    #[test]
    fn terminal_pod_with_a_stale_running_container_reports_it_terminated() {
        let mut remote = remote_pod("Never", "Failed", vec![], vec![running("a")], &["a"], &[]);
        remote.status.as_mut().expect("status").reason = Some("DeadlineExceeded".into());
        let st = pod_status(&id(), Some(&local_pod(&["a"], &[])), Some(&remote));
        assert_eq!(
            reason(&st.containers[0]),
            ("terminated", Some("DeadlineExceeded"))
        );
        assert!(!st.containers[0].ready);
        assert_eq!(st.containers[0].restart_count, 2, "the rest is kept");

        // A container that never started (its init container failed) stays
        // waiting, as the kubelet shows it.
        let mut waiting_main = running("a");
        waiting_main.state = Some(waiting("PodInitializing", ""));
        let remote = remote_pod(
            "Never",
            "Failed",
            vec![terminated("i", 7)],
            vec![waiting_main],
            &["a"],
            &["i"],
        );
        let st = pod_status(&id(), Some(&local_pod(&["a"], &["i"])), Some(&remote));
        assert_eq!(
            reason(&st.containers[0]),
            ("waiting", Some("PodInitializing"))
        );
    }

    #[test]
    fn vanished_pod_is_terminated_for_every_container() {
        let st = vanished_status(&id(), Some(&local_pod(&["a", "b"], &["i"])), "j");
        assert_eq!(st.containers.len(), 2);
        assert_eq!(st.init_containers.len(), 1);
        for c in st.containers.iter().chain(&st.init_containers) {
            assert_eq!(reason(c), ("terminated", Some("RemotePodDeleted")));
        }
        assert_eq!(st.jid, "j");
    }

    #[test]
    fn spec_taken_from_remote_when_caller_sent_none() {
        let remote = remote_pod("Never", "Running", vec![], vec![running("a")], &["a"], &[]);
        let st = pod_status(&id(), None, Some(&remote));
        assert_eq!(st.containers.len(), 1);
        assert_eq!(st.containers[0].name, "a");
    }
}
