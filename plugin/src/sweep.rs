//! Orphan sweep: which remote pods belong to local pods that are gone. Pure.
//!
//! interLink tells a plugin nothing when a local pod disappears without a
//! `/delete` (delete is fire-and-forget, without retry). What the plugin does
//! see is each caller asking for the status of its pods: the Virtual Kubelet
//! and our provider poll every non-terminal pod every few seconds. So a remote
//! pod its own caller has not named for a long time, *while that caller has
//! demonstrably been polling this process all that time*, belongs to a local
//! pod that is gone.
//!
//! Every remote pod carries the caller that created it
//! ([`offload_wire::keys::LABEL_CALLER`]: a hash of the authenticated
//! principal and the local virtual node) and the plugin instance
//! ([`offload_wire::keys::LABEL_PLUGIN_INSTANCE`]). Liveness is per caller:
//!
//! - a pod of another plugin instance, a pod without a caller label, a pod of
//!   a caller this process has never heard (another replica's, another local
//!   cluster's) and a pod of a caller that went silent (partitioned, down)
//!   are never orphans: an outage must not delete workloads;
//! - a caller's polling clock restarts after every silence longer than
//!   `caller_alive_within`, and after a plugin restart; a pod is an orphan only
//!   once its caller has polled this process for the whole grace, never
//!   naming it, and the pod itself is older than the grace;
//! - a pod already being deleted is left to finish.
//!
//! Assumption (documented in the README): each status round of a caller
//! reaches one process, i.e. a caller's calls are not spread over replicas
//! (one replica, or the Service's `sessionAffinity: ClientIP` the chart sets
//! with several). Our provider sends every followed pod in each round, in
//! batches of `--status-batch`; the batches of one round travel together.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

/// Thresholds of the sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepPolicy {
    /// A running/pending remote pod not named for this long is an orphan.
    pub active_after: Duration,
    /// A finished remote pod not named for this long is removed.
    pub finished_after: Duration,
    /// A caller is alive if one of its status calls came within this window;
    /// a longer silence restarts its polling clock.
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
    /// UID of the local pod (source UID label).
    pub uid: String,
    /// The caller label, if any.
    pub caller: Option<String>,
    /// The plugin-instance label, if any.
    pub instance: Option<String>,
    /// Succeeded or Failed.
    pub terminal: bool,
    /// Has a deletion timestamp.
    pub terminating: bool,
    /// Time since the remote pod was created.
    pub age: Duration,
}

/// Why a pod was not swept (metrics label and log field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kept {
    /// Named by a caller within the grace.
    Named,
    /// Another plugin instance's, or no instance label.
    ForeignInstance,
    /// No caller label (created before callers were recorded).
    NoCaller,
    /// Its caller never polled this process (another replica, another cluster).
    UnknownCaller,
    /// Its caller is silent (partition, provider down).
    SilentCaller,
    /// Its caller has not polled this process for the whole grace yet, or the
    /// pod is younger than the grace.
    Grace,
    /// Already being deleted.
    Terminating,
}

impl Kept {
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Named => "named",
            Kept::ForeignInstance => "foreign_instance",
            Kept::NoCaller => "no_caller",
            Kept::UnknownCaller => "unknown_caller",
            Kept::SilentCaller => "silent_caller",
            Kept::Grace => "grace",
            Kept::Terminating => "terminating",
        }
    }
}

/// The outcome of one sweep decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Local pod UIDs whose remote pods are orphans now.
    pub orphans: Vec<String>,
    /// How many pods were kept, by reason.
    pub kept: BTreeMap<Kept, usize>,
}

/// One caller's polling, as this process saw it.
#[derive(Clone, Copy, Debug)]
struct CallerPolling {
    /// Start of the current unbroken run of status calls.
    since: Instant,
    last: Instant,
}

/// Which callers poll this process and when each pod was last named.
#[derive(Debug)]
pub struct Tracker {
    instance: String,
    policy: SweepPolicy,
    callers: HashMap<String, CallerPolling>,
    last_named: HashMap<String, Instant>,
}

impl Tracker {
    /// A tracker for the plugin instance `instance` (its pods carry it).
    pub fn new(instance: impl Into<String>, policy: SweepPolicy) -> Self {
        Self {
            instance: instance.into(),
            policy,
            callers: HashMap::new(),
            last_named: HashMap::new(),
        }
    }

    /// The plugin instance this tracker sweeps for.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The thresholds it judges by.
    pub fn policy(&self) -> &SweepPolicy {
        &self.policy
    }

    /// A create, status or logs call named this pod.
    pub fn touch(&mut self, uid: &str, now: Instant) {
        self.last_named.insert(uid.to_string(), now);
    }

    /// A status call of `caller` arrived, whatever it asked for.
    pub fn status_call(&mut self, caller: &str, now: Instant) {
        let policy = &self.policy;
        match self.callers.get_mut(caller) {
            Some(c) if now.saturating_duration_since(c.last) <= policy.caller_alive_within => {
                c.last = c.last.max(now);
            }
            _ => {
                self.callers.insert(
                    caller.to_string(),
                    CallerPolling {
                        since: now,
                        last: now,
                    },
                );
            }
        }
    }

    /// The pod was deleted through `/delete` or by the sweep.
    pub fn forget(&mut self, uid: &str) {
        self.last_named.remove(uid);
    }

    /// Callers heard within the liveness window.
    pub fn alive_callers(&self, now: Instant) -> usize {
        let policy = &self.policy;
        self.callers
            .values()
            .filter(|c| now.saturating_duration_since(c.last) <= policy.caller_alive_within)
            .count()
    }

    /// Sorts `pods` into orphans and kept pods.
    pub fn decide(&self, pods: &[RemotePodInfo], now: Instant) -> Decision {
        let mut d = Decision::default();
        for p in pods {
            match self.judge(p, now) {
                None => d.orphans.push(p.uid.clone()),
                Some(why) => *d.kept.entry(why).or_default() += 1,
            }
        }
        d
    }

    /// `None` if the pod is an orphan, else why it is kept.
    fn judge(&self, p: &RemotePodInfo, now: Instant) -> Option<Kept> {
        let policy = &self.policy;
        if p.instance.as_deref() != Some(self.instance.as_str()) {
            return Some(Kept::ForeignInstance);
        }
        if p.terminating {
            return Some(Kept::Terminating);
        }
        let Some(caller) = p.caller.as_deref() else {
            return Some(Kept::NoCaller);
        };
        let Some(c) = self.callers.get(caller) else {
            return Some(Kept::UnknownCaller);
        };
        if now.saturating_duration_since(c.last) > policy.caller_alive_within {
            return Some(Kept::SilentCaller);
        }
        let grace = if p.terminal {
            policy.finished_after
        } else {
            policy.active_after
        };
        if let Some(t) = self.last_named.get(&p.uid)
            && now.saturating_duration_since(*t) <= grace
        {
            return Some(Kept::Named);
        }
        if now.saturating_duration_since(c.since) < grace || p.age < grace {
            return Some(Kept::Grace);
        }
        None
    }

    /// Drops entries of pods that no longer exist remotely (recent entries
    /// stay: a pod created a moment ago may not be in the watch cache yet)
    /// and callers silent for longer than the liveness window (their clock
    /// restarts anyway when they come back).
    pub fn retain(&mut self, live: &[RemotePodInfo], now: Instant) {
        let policy = self.policy.clone();
        let keep_recent = policy.active_after.min(policy.finished_after);
        let live: std::collections::HashSet<&str> = live.iter().map(|p| p.uid.as_str()).collect();
        self.last_named.retain(|uid, seen| {
            live.contains(uid.as_str()) || now.saturating_duration_since(*seen) <= keep_recent
        });
        self.callers
            .retain(|_, c| now.saturating_duration_since(c.last) <= policy.caller_alive_within);
    }
}

#[cfg(test)]
mod tests;
