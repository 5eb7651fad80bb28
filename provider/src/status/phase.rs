//! Pod phases: the stored one, and kubelet 1.20's computation from the
//! container statuses.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::{containers, init_containers, restart_policy};

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
