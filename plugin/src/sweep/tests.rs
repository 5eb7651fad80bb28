use super::*;
use pretty_assertions::assert_eq;

const ME: &str = "inst-a";
const S: fn(u64) -> Duration = Duration::from_secs;

fn pod(uid: &str, caller: &str) -> RemotePodInfo {
    RemotePodInfo {
        uid: uid.into(),
        caller: Some(caller.into()),
        instance: Some(ME.into()),
        terminal: false,
        terminating: false,
        age: S(10_000),
    }
}

fn policy() -> SweepPolicy {
    SweepPolicy {
        active_after: S(60),
        finished_after: S(600),
        caller_alive_within: S(30),
    }
}

/// `caller` polls every 5 s from `from` to `to` (inclusive), naming `named`.
fn poll(t: &mut Tracker, caller: &str, named: &[&str], from: Instant, to: Instant) {
    let mut now = from;
    while now <= to {
        t.status_call(caller, now);
        for u in named {
            t.touch(u, now);
        }
        now += S(5);
    }
}

fn kept(d: &Decision, why: Kept) -> usize {
    d.kept.get(&why).copied().unwrap_or(0)
}

#[test]
fn nothing_is_swept_for_a_caller_never_heard() {
    // The bug of issue 11: another replica's / instance's / cluster's pods,
    // unknown here, were counted as last seen at the process start.
    let t0 = Instant::now();
    let mut t = Tracker::new(ME, policy());
    poll(&mut t, "c1", &[], t0, t0 + S(10_000));
    let d = t.decide(&[pod("a", "c2")], t0 + S(10_000));
    assert!(d.orphans.is_empty());
    assert_eq!(kept(&d, Kept::UnknownCaller), 1);
}

#[test]
fn a_silent_callers_pods_survive_while_another_caller_polls() {
    let t0 = Instant::now();
    let mut t = Tracker::new(ME, policy());
    // Both poll for a while, then c2 goes silent (partition) and c1 goes on.
    poll(&mut t, "c1", &["p1"], t0, t0 + S(100));
    poll(&mut t, "c2", &["p2"], t0, t0 + S(100));
    poll(&mut t, "c1", &["p1"], t0 + S(100), t0 + S(1000));
    let now = t0 + S(1000);
    let d = t.decide(&[pod("p1", "c1"), pod("p2", "c2")], now);
    assert!(d.orphans.is_empty(), "{d:?}");
    assert_eq!(kept(&d, Kept::SilentCaller), 1);
    assert_eq!(kept(&d, Kept::Named), 1);
}

#[test]
fn a_caller_that_polls_past_the_grace_without_naming_a_pod_loses_it() {
    let t0 = Instant::now();
    let mut t = Tracker::new(ME, policy());
    t.touch("gone", t0);
    poll(&mut t, "c1", &["kept"], t0, t0 + S(55));
    let pods = [pod("kept", "c1"), pod("gone", "c1")];
    assert!(t.decide(&pods, t0 + S(55)).orphans.is_empty());
    poll(&mut t, "c1", &["kept"], t0 + S(60), t0 + S(65));
    assert_eq!(
        t.decide(&pods, t0 + S(65)).orphans,
        vec!["gone".to_string()]
    );
}

#[test]
fn the_polling_clock_restarts_after_a_silence_and_after_a_restart() {
    let t0 = Instant::now();
    let mut t = Tracker::new(ME, policy());
    poll(&mut t, "c1", &[], t0, t0 + S(100));
    // Silent for 40 s (> 30 s window): back at 140, clock restarts.
    poll(&mut t, "c1", &[], t0 + S(140), t0 + S(190));
    let d = t.decide(&[pod("x", "c1")], t0 + S(190));
    assert_eq!(kept(&d, Kept::Grace), 1);
    poll(&mut t, "c1", &[], t0 + S(195), t0 + S(200));
    assert_eq!(t.decide(&[pod("x", "c1")], t0 + S(200)).orphans, vec!["x"]);
    // A new process (restart) knows no caller: a fresh clock.
    let mut fresh = Tracker::new(ME, policy());
    poll(&mut fresh, "c1", &[], t0 + S(200), t0 + S(255));
    assert!(
        fresh
            .decide(&[pod("x", "c1")], t0 + S(255))
            .orphans
            .is_empty()
    );
}

#[test]
fn foreign_instances_terminating_pods_and_unlabelled_pods_are_never_swept() {
    let t0 = Instant::now();
    let mut t = Tracker::new(ME, policy());
    poll(&mut t, "c1", &[], t0, t0 + S(1000));
    let mut foreign = pod("f", "c1");
    foreign.instance = Some("inst-b".into());
    let mut unlabelled = pod("u", "c1");
    unlabelled.instance = None;
    let mut terminating = pod("t", "c1");
    terminating.terminating = true;
    let mut no_caller = pod("n", "c1");
    no_caller.caller = None;
    let d = t.decide(&[foreign, unlabelled, terminating, no_caller], t0 + S(1000));
    assert!(d.orphans.is_empty());
    assert_eq!(kept(&d, Kept::ForeignInstance), 2);
    assert_eq!(kept(&d, Kept::Terminating), 1);
    assert_eq!(kept(&d, Kept::NoCaller), 1);
}

#[test]
fn young_pods_and_finished_pods_get_their_grace() {
    let t0 = Instant::now();
    let mut t = Tracker::new(ME, policy());
    poll(&mut t, "c1", &[], t0, t0 + S(700));
    let mut young = pod("y", "c1");
    young.age = S(30);
    let mut done = pod("d", "c1");
    done.terminal = true;
    done.age = S(300);
    let d = t.decide(&[young.clone(), done.clone()], t0 + S(700));
    assert!(d.orphans.is_empty());
    assert_eq!(kept(&d, Kept::Grace), 2);
    done.age = S(700);
    young.age = S(61);
    assert_eq!(
        t.decide(&[young, done], t0 + S(700)).orphans,
        vec!["y".to_string(), "d".to_string()]
    );
}

#[test]
fn forget_and_retain_drop_entries_but_keep_fresh_ones_and_live_callers() {
    let t0 = Instant::now();
    let mut t = Tracker::new(ME, policy());
    t.touch("a", t0);
    t.touch("b", t0);
    t.status_call("old", t0);
    let now = t0 + S(100);
    t.touch("just-created", now);
    t.status_call("live", now);
    t.forget("a");
    t.retain(&[pod("c", "live")], now);
    assert_eq!(
        t.last_named.keys().collect::<Vec<_>>(),
        vec!["just-created"]
    );
    assert_eq!(t.callers.keys().collect::<Vec<_>>(), vec!["live"]);
    assert_eq!(t.alive_callers(now), 1);
}
