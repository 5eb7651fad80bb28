use super::*;
use k8s_openapi::api::core::v1::PodCondition;
use pretty_assertions::assert_eq;
use testbed::fixtures::{self, pod_spec, state_of as reason, terminated};

fn local_pod(containers: &[&str], inits: &[&str]) -> Pod {
    fixtures::pod("p")
        .spec(pod_spec("Never", inits, containers))
        .build()
}

fn id() -> LocalIdentity {
    LocalIdentity {
        name: "p".into(),
        namespace: "ns".into(),
        uid: "u".into(),
    }
}

/// Running, ready, after two restarts.
fn running(name: &str) -> ContainerStatus {
    ContainerStatus {
        ready: true,
        restart_count: 2,
        ..fixtures::running(name)
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
    let mut p = fixtures::pod("p-remote")
        .uid("remote-uid")
        .spec(pod_spec(restart, init_names, containers))
        .phase(phase);
    for s in inits {
        p = p.init_container_status(s);
    }
    for s in cs {
        p = p.container_status(s);
    }
    p.build()
}

/// The status of a one-container pod `a` whose remote status is `a`.
fn one_container(restart: &str, phase: &str, a: ContainerStatus) -> PodStatus {
    let remote = remote_pod(restart, phase, vec![], vec![a], &["a"], &[]);
    pod_status(&id(), Some(&local_pod(&["a"], &[])), Some(&remote))
}

/// The status of a `Never` pod with init container `init` and containers
/// `a`, `b`, from the remote statuses `inits` and `cs`.
fn init_then_two(phase: &str, inits: Vec<ContainerStatus>, cs: Vec<ContainerStatus>) -> PodStatus {
    let remote = remote_pod("Never", phase, inits, cs, &["a", "b"], &["init"]);
    pod_status(
        &id(),
        Some(&local_pod(&["a", "b"], &["init"])),
        Some(&remote),
    )
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
    let st = init_then_two("Pending", vec![running("init")], vec![]);
    assert_eq!(st.containers.len(), 2);
    assert_eq!(
        reason(&st.containers[1]),
        ("waiting", Some("PodInitializing"))
    );
    assert_eq!(reason(&st.init_containers[0]), ("running", None));
}

#[test]
fn real_states_are_copied_with_exit_codes_and_restart_counts() {
    let st = init_then_two(
        "Failed",
        vec![terminated("init", 0)],
        vec![terminated("a", 42), terminated("b", 0)],
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
    let st = one_container("Always", "Running", terminated("a", 1));
    assert_eq!(reason(&st.containers[0]), ("waiting", Some("Restarting")));
    let last = st.containers[0]
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(1));

    // OnFailure + success is final.
    let st = one_container("OnFailure", "Running", terminated("a", 0));
    assert_eq!(reason(&st.containers[0]), ("terminated", Some("Completed")));

    // Running keeps its restart count.
    let st = one_container("Always", "Running", running("a"));
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
    waiting_main.state = Some(fixtures::waiting_state("PodInitializing"));
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
