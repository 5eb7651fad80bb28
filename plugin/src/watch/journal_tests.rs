use offload_wire::watch::WatchEvent;

use super::*;

fn journal(capacity: usize, buffer: usize) -> Journal {
    Journal::new("e1".into(), capacity, buffer, JournalCounters::default())
}

fn observed(name: &str, caller: &str, image: &str) -> Observed {
    let id = LocalIdentity {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("uid-{name}"),
    };
    Observed {
        key: ("offloading-default".into(), name.into()),
        caller: caller.into(),
        status: PodStatus {
            name: id.name.clone(),
            uid: id.uid.clone(),
            namespace: id.namespace.clone(),
            jid: image.into(),
            ..Default::default()
        },
        id,
    }
}

fn parse(line: &Bytes) -> WatchEvent {
    assert_eq!(line.last(), Some(&b'\n'), "one event per line");
    serde_json::from_slice(line).expect("a WatchEvent")
}

fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<WatchEvent> {
    let mut out = vec![];
    while let Ok(l) = rx.try_recv() {
        out.push(parse(&l));
    }
    out
}

fn names(events: &[WatchEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            WatchEvent::Status { status, .. } => format!("status:{}:{}", status.name, status.jid),
            WatchEvent::Gone { name, .. } => format!("gone:{name}"),
            WatchEvent::Synced { resume } => format!("synced:{resume}"),
            WatchEvent::Bookmark { resume } => format!("bookmark:{resume}"),
        })
        .collect()
}

#[test]
fn changes_reach_only_their_callers_subscribers_numbered_in_order() {
    let j = journal(100, 10);
    let mut a = j.subscribe("caller-a", None);
    let mut b = j.subscribe("caller-b", None);
    assert!(matches!(a.start, Start::Full { seq: 0 }));
    j.apply(Step::Applied(Box::new(observed("p1", "caller-a", "v1"))));
    j.apply(Step::Applied(Box::new(observed("p2", "caller-b", "v1"))));
    j.apply(Step::Applied(Box::new(observed("p1", "caller-a", "v2"))));
    let got = drain(&mut a.rx);
    assert_eq!(names(&got), ["status:p1:v1", "status:p1:v2"]);
    assert_eq!(got[0].resume(), "e1:1");
    assert_eq!(got[1].resume(), "e1:3");
    assert_eq!(names(&drain(&mut b.rx)), ["status:p2:v1"]);
}

#[test]
fn an_unchanged_status_is_no_change() {
    let j = journal(100, 10);
    let mut a = j.subscribe("c", None);
    j.apply(Step::Applied(Box::new(observed("p1", "c", "v1"))));
    j.apply(Step::Applied(Box::new(observed("p1", "c", "v1"))));
    assert_eq!(drain(&mut a.rx).len(), 1);
    assert_eq!(j.token(1), "e1:1");
}

#[test]
fn deletes_and_pods_missing_from_a_relist_are_gone_once() {
    let j = journal(100, 10);
    let mut a = j.subscribe("c", None);
    j.apply(Step::Applied(Box::new(observed("p1", "c", "v1"))));
    j.apply(Step::Applied(Box::new(observed("p2", "c", "v1"))));
    j.apply(Step::Deleted(("offloading-default".into(), "p1".into())));
    // A delete of a pod never seen, or seen gone already: nothing.
    j.apply(Step::Deleted(("offloading-default".into(), "p1".into())));
    j.apply(Step::RelistStart);
    j.apply(Step::Applied(Box::new(observed("p3", "c", "v1"))));
    j.apply(Step::RelistDone);
    assert_eq!(
        names(&drain(&mut a.rx)),
        [
            "status:p1:v1",
            "status:p2:v1",
            "gone:p1",
            "status:p3:v1",
            "gone:p2"
        ]
    );
}

#[test]
fn a_token_of_this_process_resumes_with_the_later_changes_of_that_caller() {
    let j = journal(100, 10);
    j.apply(Step::Applied(Box::new(observed("p1", "c", "v1"))));
    j.apply(Step::Applied(Box::new(observed("x", "other", "v1"))));
    j.apply(Step::Applied(Box::new(observed("p1", "c", "v2"))));
    j.apply(Step::Applied(Box::new(observed("p2", "c", "v1"))));
    let s = j.subscribe("c", Some("e1:1"));
    let Start::Resumed { lines, seq } = s.start else {
        panic!("resumed expected");
    };
    assert_eq!(seq, 4);
    let events: Vec<_> = lines.iter().map(parse).collect();
    assert_eq!(
        names(&events),
        ["status:p1:v2", "status:p2:v1", "bookmark:e1:4"]
    );
}

#[test]
fn foreign_future_malformed_and_evicted_tokens_mean_a_full_replay() {
    let j = journal(2, 10);
    for v in ["v1", "v2", "v3", "v4"] {
        j.apply(Step::Applied(Box::new(observed("p1", "c", v))));
    }
    // Ring holds 3 and 4: resuming after 2 is possible, after 1 is not.
    assert!(matches!(
        j.subscribe("c", Some("e1:2")).start,
        Start::Resumed { .. }
    ));
    for t in ["e1:1", "e0:4", "e1:5", "e1:replay", "garbage", ""] {
        assert!(
            matches!(j.subscribe("c", Some(t)).start, Start::Full { seq: 4 }),
            "{t}"
        );
    }
    assert!(
        j.replay_line(PodStatus::default())
            .starts_with(b"{\"type\":\"status\"")
    );
    assert_eq!(
        parse(&j.replay_line(PodStatus::default())).resume(),
        "e1:replay"
    );
    assert_eq!(parse(&j.synced_line(4)).resume(), "e1:4");
}

#[test]
fn a_slow_subscriber_is_cut_others_go_on() {
    let j = journal(100, 2);
    let slow = j.subscribe("c", None);
    let mut fast = j.subscribe("c", None);
    for v in ["v1", "v2", "v3"] {
        j.apply(Step::Applied(Box::new(observed("p1", "c", v))));
        let _ = drain(&mut fast.rx);
    }
    assert_eq!(j.subscribers(), 1, "the slow one is dropped");
    assert_eq!(j.counters.slow_disconnects.get(), 1);
    let mut slow_rx = slow.rx;
    // What it had queued still arrives, then the stream ends.
    assert_eq!(
        names(&drain(&mut slow_rx)),
        ["status:p1:v1", "status:p1:v2"]
    );
    assert!(slow_rx.is_closed());
    assert_eq!(j.counters.changes.get(), 3);
}

#[test]
fn bookmarks_carry_the_current_position_and_gone_subscribers_are_forgotten() {
    let j = journal(100, 10);
    let mut a = j.subscribe("c", None);
    let b = j.subscribe("d", None);
    drop(b);
    j.apply(Step::Applied(Box::new(observed("x", "other", "v1"))));
    j.bookmark();
    assert_eq!(names(&drain(&mut a.rx)), ["bookmark:e1:1"]);
    assert_eq!(j.subscribers(), 1);
    assert_ne!(Journal::new_epoch(), Journal::new_epoch());
}
