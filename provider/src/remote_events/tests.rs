use std::collections::HashSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use offload_wire::events::{EventPod, RemoteEvent};

use super::local_event;
use super::mirror::*;

fn ev(id: &str, pod_uid: &str, reason: &str, message: &str, count: i32) -> RemoteEvent {
    RemoteEvent {
        id: id.into(),
        pod: EventPod {
            namespace: "team".into(),
            name: "web".into(),
            uid: pod_uid.into(),
        },
        type_: "Warning".into(),
        reason: reason.into(),
        message: message.into(),
        count,
        field_path: Some("spec.containers{main}".into()),
        ..Default::default()
    }
}

const S: Duration = Duration::from_secs(1);

#[test]
fn one_local_event_per_series_counted_up_and_replays_write_nothing() {
    let t0 = Instant::now();
    let mut m = Mirror::default();
    let pull = ev("r1", "p1", "Failed", "Failed to pull image \"nope\"", 1);
    assert_eq!(
        m.observe(&pull, t0),
        Decision::Write(Write::Create { count: 1 })
    );
    m.written(&SeriesKey::of(&pull), 1);
    // The same remote event again (a replayed ring): nothing.
    assert_eq!(m.observe(&pull, t0 + S), Decision::Unchanged);
    // Its count grew remotely: the local count follows.
    let again = RemoteEvent {
        count: 3,
        ..pull.clone()
    };
    assert_eq!(
        m.observe(&again, t0 + S),
        Decision::Write(Write::Update { count: 3 })
    );
    m.written(&SeriesKey::of(&again), 3);
    // Another remote Event with the same words (a new remote series): one
    // local Event, the counts add up.
    let other = RemoteEvent {
        id: "r2".into(),
        count: 2,
        ..pull.clone()
    };
    assert_eq!(
        m.observe(&other, t0 + S),
        Decision::Write(Write::Update { count: 5 })
    );
    // Same reason, other message: another local Event.
    let err = ev("r3", "p1", "Failed", "Error: ErrImagePull", 1);
    assert_eq!(
        m.observe(&err, t0 + S),
        Decision::Write(Write::Create { count: 1 })
    );
    assert_ne!(
        SeriesKey::of(&err).event_name("web"),
        SeriesKey::of(&pull).event_name("web")
    );
    assert_eq!(m.series_len(), 2);
}

#[test]
fn a_failed_write_is_tried_again_with_the_next_occurrence() {
    let t0 = Instant::now();
    let mut m = Mirror::default();
    let e = ev(
        "r1",
        "p1",
        "BackOff",
        "Back-off restarting failed container",
        1,
    );
    assert_eq!(
        m.observe(&e, t0),
        Decision::Write(Write::Create { count: 1 })
    );
    // Not marked written (the create failed): the next one creates.
    let e2 = RemoteEvent {
        count: 2,
        ..e.clone()
    };
    assert_eq!(
        m.observe(&e2, t0 + S),
        Decision::Write(Write::Create { count: 2 })
    );
    m.written(&SeriesKey::of(&e2), 2);
    m.lost(&SeriesKey::of(&e2));
    let e3 = RemoteEvent { count: 3, ..e };
    assert_eq!(
        m.observe(&e3, t0 + S),
        Decision::Write(Write::Create { count: 3 })
    );
}

#[test]
fn each_pod_gets_25_writes_at_once_then_one_per_5_seconds() {
    let t0 = Instant::now();
    let mut m = Mirror::default();
    let msg = |i: usize| format!("Readiness probe failed: attempt {i}");
    let mut written = 0;
    for i in 0..40 {
        if let Decision::Write(_) =
            m.observe(&ev(&format!("r{i}"), "p1", "Unhealthy", &msg(i), 1), t0)
        {
            written += 1;
        }
    }
    assert_eq!(written, BURST as usize);
    assert_eq!(
        m.observe(&ev("x", "p1", "Unhealthy", "late", 1), t0 + 4 * S),
        Decision::RateLimited
    );
    assert!(matches!(
        m.observe(&ev("y", "p1", "Unhealthy", "later", 1), t0 + 5 * S),
        Decision::Write(_)
    ));
    // Another pod has its own bucket.
    assert!(matches!(
        m.observe(&ev("z", "p2", "Unhealthy", "m", 1), t0 + 5 * S),
        Decision::Write(_)
    ));
    // A dropped count-up is written in full by the next occurrence.
    let mut m = Mirror::default();
    let e = ev("r", "p3", "BackOff", "Back-off", 1);
    for i in 0..BURST as i32 {
        let d = m.observe(
            &RemoteEvent {
                count: i + 1,
                ..e.clone()
            },
            t0,
        );
        assert!(matches!(d, Decision::Write(_)), "{i}: {d:?}");
        m.written(&SeriesKey::of(&e), i + 1);
    }
    let e30 = RemoteEvent {
        count: 30,
        ..e.clone()
    };
    assert_eq!(m.observe(&e30, t0), Decision::RateLimited);
    let e31 = RemoteEvent { count: 31, ..e };
    assert_eq!(
        m.observe(&e31, t0 + 5 * S),
        Decision::Write(Write::Update { count: 31 })
    );
}

#[test]
fn memory_is_bounded_and_pods_that_left_are_forgotten() {
    let t0 = Instant::now();
    let mut m = Mirror::new(3);
    for i in 0..10 {
        m.observe(&ev("r", &format!("p{i}"), "Pulling", "m", 1), t0 + i * S);
    }
    assert_eq!(m.series_len(), 3);
    // The newest are kept, with what was written of them.
    let p9 = ev("r", "p9", "Pulling", "m", 1);
    m.written(&SeriesKey::of(&p9), 1);
    assert_eq!(m.observe(&p9, t0 + 10 * S), Decision::Unchanged);
    m.retain_pods(&HashSet::from(["p9".to_string()]));
    assert_eq!(m.series_len(), 1);

    // A large mirror makes room by the oldest eighth at once.
    let mut m = Mirror::new(64);
    for i in 0..64 {
        m.observe(&ev("r", &format!("p{i}"), "Pulling", "m", 1), t0 + i * S);
    }
    assert_eq!(m.series_len(), 64);
    m.observe(&ev("r", "late", "Pulling", "m", 1), t0 + 64 * S);
    assert_eq!(m.series_len(), 64 - 8 + 1);
    let oldest_kept = ev("r", "p8", "Pulling", "m", 1);
    m.written(&SeriesKey::of(&oldest_kept), 1);
    assert_eq!(m.observe(&oldest_kept, t0 + 65 * S), Decision::Unchanged);
}

#[test]
fn event_names_are_valid_and_stable() {
    let e = ev("r", "p1", "Pulling", "Pulling image \"busybox\"", 1);
    let k = SeriesKey::of(&e);
    assert_eq!(k.event_name("web"), k.event_name("web"));
    let long = "a".repeat(253);
    let name = k.event_name(&long);
    assert!(name.len() <= 253, "{}", name.len());
    assert!(name.starts_with("aaa") && name.contains(".r"));
}

#[test]
fn the_local_event_says_what_the_remote_one_says_about_the_local_pod() {
    let mut pod = Pod::default();
    pod.metadata.name = Some("web".into());
    pod.metadata.namespace = Some("team".into());
    pod.metadata.uid = Some("p1".into());
    let e = ev("r", "p1", "Failed", "Error: ErrImagePull", 4);
    let local = local_event("web.r1", "vn", &pod, &e, 4);
    assert_eq!(local.type_.as_deref(), Some("Warning"));
    assert_eq!(local.reason.as_deref(), Some("Failed"));
    assert_eq!(local.message.as_deref(), Some("Error: ErrImagePull"));
    assert_eq!(local.count, Some(4));
    assert_eq!(local.involved_object.uid.as_deref(), Some("p1"));
    assert_eq!(
        local.involved_object.field_path.as_deref(),
        Some("spec.containers{main}")
    );
    assert_eq!(local.metadata.namespace.as_deref(), Some("team"));
    assert!(local.first_timestamp.is_some() && local.last_timestamp.is_some());
    assert_eq!(
        local.source.and_then(|s| s.component).as_deref(),
        Some("offload-provider")
    );
}
