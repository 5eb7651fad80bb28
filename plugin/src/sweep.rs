//! Orphan sweep: which remote pods belong to local pods that are gone. Pure.
//!
//! interLink tells a plugin nothing when a local pod disappears without a
//! `/delete` (delete is fire-and-forget, without retry). What the plugin does
//! see is the caller asking for status: the Virtual Kubelet polls every
//! non-terminal pod every 5 s, and our provider does the same. So a remote pod
//! whose UID nobody asked about for a long time, *while the caller is
//! demonstrably alive* (other status calls keep arriving), belongs to a local
//! pod that is gone. Terminal pods are not polled any more, so they get a much
//! longer grace (their logs stay readable meanwhile). After a plugin restart
//! every pod starts with a fresh grace period, so a restart never deletes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// Thresholds of the sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepPolicy {
    /// A running/pending remote pod not mentioned for this long is an orphan.
    pub active_after: Duration,
    /// A finished remote pod not mentioned for this long is removed.
    pub finished_after: Duration,
    /// The caller counts as alive if some status call came within this window.
    pub caller_alive_within: Duration,
}

impl Default for SweepPolicy {
    fn default() -> Self {
        Self {
            active_after: Duration::from_secs(30 * 60),
            finished_after: Duration::from_secs(24 * 3600),
            caller_alive_within: Duration::from_secs(5 * 60),
        }
    }
}

/// What the sweep knows of one remote pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePodInfo {
    pub uid: String,
    pub terminal: bool,
}

/// Last time each local pod UID was mentioned by a caller.
#[derive(Debug)]
pub struct Tracker {
    started: Instant,
    last_seen: HashMap<String, Instant>,
    last_status_call: Option<Instant>,
}

impl Tracker {
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            last_seen: HashMap::new(),
            last_status_call: None,
        }
    }

    /// A create, status or logs call named this pod.
    pub fn touch(&mut self, uid: &str, now: Instant) {
        self.last_seen.insert(uid.to_string(), now);
    }

    /// A status call arrived (the caller is alive), whatever it asked for.
    pub fn status_call(&mut self, now: Instant) {
        self.last_status_call = Some(now);
    }

    /// The pod was deleted through `/delete`.
    pub fn forget(&mut self, uid: &str) {
        self.last_seen.remove(uid);
    }

    /// UIDs whose remote pods are orphans now.
    pub fn orphans(
        &self,
        pods: &[RemotePodInfo],
        policy: &SweepPolicy,
        now: Instant,
    ) -> Vec<String> {
        let alive = self
            .last_status_call
            .is_some_and(|t| now.saturating_duration_since(t) <= policy.caller_alive_within);
        if !alive {
            return vec![];
        }
        pods.iter()
            .filter(|p| {
                let seen = self.last_seen.get(&p.uid).copied().unwrap_or(self.started);
                let limit = if p.terminal {
                    policy.finished_after
                } else {
                    policy.active_after
                };
                now.saturating_duration_since(seen) > limit
            })
            .map(|p| p.uid.clone())
            .collect()
    }

    /// Drops entries of pods that no longer exist remotely. Recent entries
    /// stay even then: a pod created a moment ago may not be in the watch
    /// cache yet, and losing its entry would make it look unmentioned.
    pub fn retain(&mut self, live: &[RemotePodInfo], now: Instant, keep_recent: Duration) {
        let live: std::collections::HashSet<&str> = live.iter().map(|p| p.uid.as_str()).collect();
        self.last_seen.retain(|uid, seen| {
            live.contains(uid.as_str()) || now.saturating_duration_since(*seen) <= keep_recent
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn pod(uid: &str, terminal: bool) -> RemotePodInfo {
        RemotePodInfo {
            uid: uid.into(),
            terminal,
        }
    }

    fn policy() -> SweepPolicy {
        SweepPolicy {
            active_after: Duration::from_secs(60),
            finished_after: Duration::from_secs(600),
            caller_alive_within: Duration::from_secs(30),
        }
    }

    #[test]
    fn nothing_is_swept_while_the_caller_is_silent() {
        let t0 = Instant::now();
        let t = Tracker::new(t0);
        let later = t0 + Duration::from_secs(10_000);
        assert!(t.orphans(&[pod("a", false)], &policy(), later).is_empty());
    }

    #[test]
    fn a_restart_gives_every_pod_a_fresh_grace() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        t.status_call(t0 + Duration::from_secs(59));
        assert!(
            t.orphans(&[pod("a", false)], &policy(), t0 + Duration::from_secs(59))
                .is_empty()
        );
    }

    #[test]
    fn unmentioned_active_pods_go_after_the_active_limit_and_finished_after_theirs() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        let now = t0 + Duration::from_secs(120);
        t.touch("kept", now - Duration::from_secs(5));
        t.status_call(now);
        let pods = [pod("kept", false), pod("gone", false), pod("done", true)];
        assert_eq!(t.orphans(&pods, &policy(), now), vec!["gone".to_string()]);
        let much_later = t0 + Duration::from_secs(700);
        t.status_call(much_later);
        t.touch("kept", much_later);
        assert_eq!(
            t.orphans(&pods, &policy(), much_later),
            vec!["gone".to_string(), "done".to_string()]
        );
    }

    #[test]
    fn forget_and_retain_drop_entries_but_keep_fresh_ones() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        t.touch("a", t0);
        t.touch("b", t0);
        let now = t0 + Duration::from_secs(100);
        t.touch("just-created", now);
        t.forget("a");
        t.retain(&[pod("c", false)], now, Duration::from_secs(60));
        assert_eq!(t.last_seen.keys().collect::<Vec<_>>(), vec!["just-created"]);
    }

    #[test]
    fn a_pod_created_long_after_start_is_not_swept_before_its_grace() {
        // Created after the plugin ran for hours, not yet in the cache when a
        // sweep ran: it must keep its creation time, not fall back to start.
        let t0 = Instant::now();
        let mut t = Tracker::new(t0);
        let created = t0 + Duration::from_secs(10_000);
        t.touch("new", created);
        t.retain(
            &[],
            created + Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let now = created + Duration::from_secs(2);
        t.status_call(now);
        assert!(t.orphans(&[pod("new", false)], &policy(), now).is_empty());
    }
}
