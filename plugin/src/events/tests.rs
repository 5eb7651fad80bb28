use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Event, ObjectReference, Pod, PodSpec};
use offload_wire::events::MAX_MESSAGE_BYTES;
use offload_wire::keys;

use super::*;

const LOCAL_UID: &str = "6f1c1f1e-0000-4000-8000-000000000001";

fn remote_pod(caller: &str, instance: Option<&str>) -> Pod {
    let mut labels = BTreeMap::from([
        (
            keys::LABEL_MANAGED_BY.to_string(),
            keys::MANAGED_BY_PLUGIN.to_string(),
        ),
        (
            keys::LABEL_SOURCE_POD_UID.to_string(),
            LOCAL_UID.to_string(),
        ),
        (keys::LABEL_CALLER.to_string(), caller.to_string()),
    ]);
    if let Some(i) = instance {
        labels.insert(keys::LABEL_PLUGIN_INSTANCE.into(), i.into());
    }
    let mut p = Pod::default();
    p.metadata.name = Some(format!("web-{LOCAL_UID}"));
    p.metadata.namespace = Some("offloading-team".into());
    p.metadata.uid = Some("remote-uid".into());
    p.metadata.labels = Some(labels);
    p.metadata.annotations = Some(BTreeMap::from([
        (keys::ANNOTATION_SOURCE_NAME.to_string(), "web".to_string()),
        (
            keys::ANNOTATION_SOURCE_NAMESPACE.to_string(),
            "team".to_string(),
        ),
        (
            keys::ANNOTATION_SOURCE_UID.to_string(),
            LOCAL_UID.to_string(),
        ),
    ]));
    p.spec = Some(PodSpec {
        containers: vec![Container {
            name: "main".into(),
            ..Default::default()
        }],
        init_containers: Some(vec![Container {
            name: "setup".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

fn event(id: &str, reason: &str, message: &str, count: i32) -> Event {
    Event {
        metadata: kube::api::ObjectMeta {
            uid: Some(id.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("offloading-team".into()),
            name: Some(format!("web-{LOCAL_UID}")),
            uid: Some("remote-uid".into()),
            field_path: Some("spec.containers{main}".into()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        count: Some(count),
        ..Default::default()
    }
}

#[test]
fn an_event_of_our_pod_is_about_the_local_pod() {
    let pod = remote_pod("c1", Some("inst"));
    let msg = format!("Successfully assigned offloading-team/web-{LOCAL_UID} to remote-node");
    let c = translate(&event("e1", "Scheduled", &msg, 3), &pod, "inst").expect("ours");
    assert_eq!(c.caller, "c1");
    let e = c.event;
    assert_eq!(
        (
            e.pod.namespace.as_str(),
            e.pod.name.as_str(),
            e.pod.uid.as_str()
        ),
        ("team", "web", LOCAL_UID)
    );
    assert_eq!(e.message, "Successfully assigned team/web to remote-node");
    let kubelet = format!(
        "pod: \"web-{LOCAL_UID}_offloading-team(remote-uid)\". kubelet does not have ClusterDNS IP"
    );
    let c = translate(&event("e2", "MissingClusterDNS", &kubelet, 1), &pod, "inst").expect("ours");
    assert_eq!(
        c.event.message,
        format!("pod: \"web_team({LOCAL_UID})\". kubelet does not have ClusterDNS IP")
    );
    assert_eq!(
        (e.type_.as_str(), e.reason.as_str(), e.count),
        ("Warning", "Scheduled", 3)
    );
    assert_eq!(e.field_path.as_deref(), Some("spec.containers{main}"));
    assert_eq!(e.id, "e1");
}

#[test]
fn field_paths_name_only_containers_of_the_pod() {
    let pod = remote_pod("c1", None);
    let with_path = |p: &str| {
        let mut e = event("e1", "Pulling", "m", 1);
        e.involved_object.field_path = Some(p.into());
        translate(&e, &pod, "inst").expect("ours").event.field_path
    };
    assert_eq!(
        with_path("spec.initContainers{setup}").as_deref(),
        Some("spec.initContainers{setup}")
    );
    assert_eq!(with_path("spec.containers{other}"), None);
    assert_eq!(with_path("metadata.name"), None);
    assert_eq!(with_path("spec.containers{main"), None);
}

#[test]
fn events_not_about_our_pod_are_not_translated() {
    let pod = remote_pod("c1", Some("inst"));
    assert!(translate(&event("e", "R", "m", 1), &pod, "other-instance").is_none());
    let mut older = event("e", "R", "m", 1);
    older.involved_object.uid = Some("an-earlier-pod".into());
    assert!(translate(&older, &pod, "inst").is_none());
    let mut elsewhere = event("e", "R", "m", 1);
    elsewhere.involved_object.namespace = Some("x".into());
    assert!(translate(&elsewhere, &pod, "inst").is_none());
    let mut no_caller = pod.clone();
    no_caller
        .metadata
        .labels
        .as_mut()
        .map(|l| l.remove(keys::LABEL_CALLER));
    assert!(translate(&event("e", "R", "m", 1), &no_caller, "inst").is_none());
    let mut foreign = pod.clone();
    foreign
        .metadata
        .labels
        .as_mut()
        .map(|l| l.insert(keys::LABEL_MANAGED_BY.into(), "someone".into()));
    assert!(translate(&event("e", "R", "m", 1), &foreign, "inst").is_none());
    let mut node_event = event("e", "R", "m", 1);
    node_event.involved_object.kind = Some("Node".into());
    assert!(translate(&node_event, &pod, "inst").is_none());
}

#[test]
fn long_messages_are_cut_and_counts_are_at_least_one() {
    let pod = remote_pod("c1", None);
    let long = "x".repeat(5000);
    let c = translate(&event("e", "Failed", &long, 0), &pod, "inst").expect("ours");
    assert_eq!(c.event.message.len(), MAX_MESSAGE_BYTES);
    assert_eq!(c.event.count, 1);
}

fn captured(caller: &str, id: &str, count: i32) -> Captured {
    let pod = remote_pod(caller, None);
    translate(&event(id, "BackOff", "Back-off", count), &pod, "inst").expect("ours")
}

#[test]
fn a_caller_pages_through_its_own_events_only() {
    let ring = EventRing::new(100);
    for i in 0..5 {
        assert!(ring.push(captured("a", &format!("a{i}"), 1)));
        assert!(ring.push(captured("b", &format!("b{i}"), 1)));
    }
    let first = ring.page("a", None, 3);
    let ids: Vec<_> = first.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a0", "a1", "a2"]);
    assert!(first.more);
    let second = ring.page("a", Some(&first.cursor), 3);
    let ids: Vec<_> = second.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a3", "a4"]);
    assert!(!second.more);
    let none = ring.page("a", Some(&second.cursor), 3);
    assert!(none.events.is_empty());
    assert_eq!(none.cursor, second.cursor);
    assert!(ring.page("c", None, 100).events.is_empty());
    // A new occurrence (count 2) comes after the cursor.
    assert!(ring.push(captured("a", "a1", 2)));
    let next = ring.page("a", Some(&none.cursor), 3);
    assert_eq!(next.events.len(), 1);
    assert_eq!(next.events[0].count, 2);
}

#[test]
fn the_same_event_unchanged_is_kept_once() {
    let ring = EventRing::new(100);
    assert!(ring.push(captured("a", "e", 4)));
    assert!(!ring.push(captured("a", "e", 4)));
    assert_eq!(ring.len(), 1);
}

#[test]
fn unknown_cursors_read_everything_held_and_the_ring_is_bounded() {
    let ring = EventRing::new(3);
    for i in 0..10 {
        ring.push(captured("a", &format!("e{i}"), 1));
    }
    assert_eq!(ring.len(), 3);
    for cursor in [
        None,
        Some("other-epoch.5"),
        Some("garbage"),
        Some("x.99999"),
    ] {
        let ids: Vec<_> = ring
            .page("a", cursor, 100)
            .events
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["e7", "e8", "e9"], "cursor {cursor:?}");
    }
    // An evicted event seen again is kept again.
    assert!(ring.push(captured("a", "e0", 1)));
}
