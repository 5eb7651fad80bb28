//! Status mapping: remote pod (from the watch cache) -> interLink `PodStatus`.
//!
//! Pure. Rules the Virtual Kubelet depends on (it copies these statuses into
//! the local pod and decides from them whether the pod has ended):
//! - one entry for every container and init container of the spec, in spec
//!   order, so "all terminated" is never reached by omission;
//! - a pod that is not created yet or cannot be scheduled is *waiting*;
//! - a container that the remote kubelet will restart (restartPolicy Always,
//!   or OnFailure after a failure) is never reported as terminated, because the
//!   VK treats terminated as final.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodStatus as K8sPodStatus,
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

/// The status of one pod. The containers listed are those of the request's
/// spec; when the caller sent no spec, the remote pod's spec is used.
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
    let Some(remote) = remote else {
        let st = |c: &Container| {
            synthesized(
                c,
                waiting("ContainerCreating", "remote pod not created yet"),
            )
        };
        return status_of(id, String::new(), containers, init_containers, st, st);
    };
    let jid = remote.metadata.uid.clone().unwrap_or_default();
    let view = RemoteView::new(remote, init_containers);
    status_of(
        id,
        jid,
        containers,
        init_containers,
        |c| view.container(c, false),
        |c| view.container(c, true),
    )
}

/// A `PodStatus` echoing the local identity, one entry per container.
fn status_of(
    id: &LocalIdentity,
    jid: String,
    containers: &[Container],
    init_containers: &[Container],
    regular: impl Fn(&Container) -> ContainerStatus,
    init: impl Fn(&Container) -> ContainerStatus,
) -> PodStatus {
    PodStatus {
        name: id.name.clone(),
        uid: id.uid.clone(),
        namespace: id.namespace.clone(),
        jid,
        containers: containers.iter().map(regular).collect(),
        init_containers: init_containers.iter().map(init).collect(),
    }
}

/// What the mapping needs to know of an existing remote pod.
struct RemoteView<'a> {
    remote: &'a Pod,
    status: Option<&'a K8sPodStatus>,
    phase: &'a str,
    pod_terminal: bool,
    restart_policy: &'a str,
    statuses: &'a [ContainerStatus],
    init_statuses: &'a [ContainerStatus],
    inits_done: bool,
}

impl<'a> RemoteView<'a> {
    fn new(remote: &'a Pod, init_containers: &[Container]) -> Self {
        let status = remote.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let restart_policy = remote
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always");
        let statuses = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or(&[]);
        let init_statuses = status
            .and_then(|s| s.init_container_statuses.as_deref())
            .unwrap_or(&[]);
        let inits_done = init_containers.iter().all(|c| {
            init_statuses
                .iter()
                .find(|s| s.name == c.name)
                .and_then(|s| s.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        });
        Self {
            remote,
            status,
            phase,
            pod_terminal: phase == "Succeeded" || phase == "Failed",
            restart_policy,
            statuses,
            init_statuses,
            inits_done,
        }
    }

    /// The pod ended (evicted, deadline exceeded, ...) while a container had
    /// not run or had not terminated: failed, with the pod's reason.
    fn ended(&self) -> ContainerState {
        let reason = self
            .status
            .and_then(|s| s.reason.clone())
            .unwrap_or_else(|| self.phase.to_string());
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: if self.phase == "Succeeded" { 0 } else { 1 },
                reason: Some(reason),
                message: self.status.and_then(|s| s.message.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(&self, c: &Container, init: bool) -> ContainerStatus {
        let found = if init {
            self.init_statuses
        } else {
            self.statuses
        };
        match found.iter().find(|s| s.name == c.name) {
            Some(s) if s.state.is_some() => {
                let mut out = map_container(s, self.restart_policy, self.pod_terminal, init);
                // Kubelet 1.20 leaves the last `running` state of a container it
                // killed for activeDeadlineSeconds in the Failed pod's status
                // forever; reporting it would keep the local pod running.
                if self.pod_terminal && out.state.as_ref().is_some_and(|st| st.running.is_some()) {
                    out.state = Some(self.ended());
                    out.ready = false;
                }
                out
            }
            _ if self.pod_terminal => synthesized(c, self.ended()),
            _ => synthesized(c, pending_reason(self.remote, init, self.inits_done)),
        }
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
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let init_containers = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    status_of(id, jid.to_string(), containers, init_containers, gone, gone)
}

#[cfg(test)]
mod tests;
