use super::*;
use k8s_openapi::api::core::v1::Probe;
use pretty_assertions::assert_eq;
use testbed::fixtures::{crash_loop, pod_spec, running, terminated, timestamp as ts};

fn pod(policy: &str, init: &[&str], main: &[&str]) -> Pod {
    Pod {
        spec: Some(pod_spec(policy, init, main)),
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

/// The waiting part of a container's current state.
fn waiting(c: &ContainerStatus) -> Option<&ContainerStateWaiting> {
    c.state.as_ref()?.waiting.as_ref()
}

/// The exit code of a (current or last) container state, if terminated.
fn exit_code(s: Option<&ContainerState>) -> Option<i32> {
    s?.terminated.as_ref().map(|t| t.exit_code)
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
        waiting(cs).and_then(|w| w.reason.as_deref()),
        Some("ContainerCreating")
    );
    assert_eq!(s.host_ip.as_deref(), Some("10.0.0.1"));
}

#[test]
fn running_then_succeeded() {
    let p = pod("Never", &[], &["c"]);
    let s = map_remote_status(&p, &remote(vec![], vec![running("c")]), None, now());
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
    assert_eq!(exit_code(b.state.as_ref()), Some(42));
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
        phase_of(&p, &remote(vec![], vec![terminated("a", 0), running("b")])),
        "Running"
    );
}

#[test]
fn init_containers_run_first() {
    let p = pod("Never", &["init"], &["c"]);
    let s = map_remote_status(&p, &remote(vec![running("init")], vec![]), None, now());
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(cond(&s, "Initialized").status, "False");
    let main = &s.container_statuses.as_ref().expect("statuses")[0];
    assert_eq!(
        waiting(main).and_then(|w| w.reason.as_deref()),
        Some("PodInitializing")
    );
    let s = map_remote_status(
        &p,
        &remote(vec![terminated("init", 0)], vec![running("c")]),
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
        phase_of(&always, &remote(vec![crash_loop("init", 3, 2)], vec![])),
        "Pending"
    );
}

#[test]
fn restartable_pods_stay_running_with_restart_counts() {
    let p = pod("Always", &[], &["c"]);
    let s = map_remote_status(
        &p,
        &remote(vec![], vec![crash_loop("c", 1, 4)]),
        None,
        now(),
    );
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let c = &s.container_statuses.as_ref().expect("statuses")[0];
    assert_eq!(c.restart_count, 4);
    assert_eq!(exit_code(c.last_state.as_ref()), Some(1));
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
        phase_of(&p, &remote(vec![], vec![crash_loop("c", 2, 1)])),
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
    let s = map_remote_status(&p, &remote(vec![], vec![running("c")]), None, now());
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Ready").status, "False");
    let mut ready = running("c");
    ready.ready = true;
    let s = map_remote_status(&p, &remote(vec![], vec![ready]), None, now());
    assert_eq!(cond(&s, "Ready").status, "True");
}

#[test]
fn newer_fields_are_dropped_and_transition_times_kept() {
    let p0 = pod("Never", &[], &["c"]);
    let mut r = running("c");
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
        waiting(c).and_then(|w| w.message.as_deref()),
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
    let mut c = running("c");
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
    let r = remote(vec![], vec![running("c")]);
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

#[test]
fn regular_statuses_are_sorted_by_name_init_ones_stay_in_spec_order() {
    // `kubectl get pod` shows the first status's reason: the kubelet's
    // order makes this pod read `Error`, not `Completed`.
    let p = pod(
        "Never",
        &["z-init", "a-init"],
        &["success-sidecar", "main-app"],
    );
    let r = remote(
        vec![terminated("z-init", 0), terminated("a-init", 0)],
        vec![terminated("success-sidecar", 0), terminated("main-app", 1)],
    );
    let s = map_remote_status(&p, &r, None, now());
    let names = |v: &Option<Vec<ContainerStatus>>| -> Vec<String> {
        v.iter().flatten().map(|c| c.name.clone()).collect()
    };
    assert_eq!(
        names(&s.container_statuses),
        ["main-app", "success-sidecar"]
    );
    assert_eq!(names(&s.init_container_statuses), ["z-init", "a-init"]);
    assert_eq!(
        exit_code(
            s.container_statuses
                .as_ref()
                .and_then(|c| c[0].state.as_ref())
        ),
        Some(1)
    );
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    for s in [
        failed_status(&p, "ProviderFailed", "m", now()),
        waiting_status(&p, "CreateContainerConfigError", "m", now()),
    ] {
        assert_eq!(
            names(&s.container_statuses),
            ["main-app", "success-sidecar"]
        );
        assert_eq!(names(&s.init_container_statuses), ["z-init", "a-init"]);
    }
}
