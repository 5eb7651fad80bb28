//! What the bench sees of the pods, from watches on both clusters (not from
//! the provider): when each remote pod appeared, started, finished and went,
//! and when the local pod showed each of those. All times are this
//! process's clock at the watch event, so the two sides compare directly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use offload_wire::keys::LABEL_SOURCE_POD_UID;

#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub exists: Option<Instant>,
    pub running: Option<Instant>,
    pub finished: Option<Instant>,
    pub exit_code: Option<i32>,
    pub gone: Option<Instant>,
}

/// By local pod UID.
#[derive(Debug, Default)]
pub struct Observed {
    pub remote: HashMap<String, Seen>,
    pub local: HashMap<String, Seen>,
}

pub type Shared = Arc<Mutex<Observed>>;

fn first_container(p: &Pod) -> (bool, Option<i32>) {
    let st = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref());
    let running = st.is_some_and(|s| s.running.is_some());
    let code = st.and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
    (running, code)
}

fn note(seen: &mut Seen, p: &Pod, terminal_phase: bool, now: Instant) {
    seen.exists.get_or_insert(now);
    let (running, code) = first_container(p);
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if running || phase == Some("Running") {
        seen.running.get_or_insert(now);
    }
    // Remote: the container terminated; local: the pod's phase is final
    // (what a user waits for).
    let done = if terminal_phase {
        matches!(phase, Some("Succeeded" | "Failed"))
    } else {
        code.is_some()
    };
    if done && seen.finished.is_none() {
        seen.finished = Some(now);
        seen.exit_code = code;
    }
}

/// Watch `api` until the task is aborted; `key` gives the local UID.
///
/// After a re-list (the watch expired or broke, common under this load) a
/// pod that was deleted meanwhile has no `Delete` event: it is simply not
/// in the new list, and counts as gone when the list is complete.
pub fn spawn_watch(api: Api<Pod>, obs: Shared, remote: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        let mut listed: Option<HashSet<String>> = None;
        while let Some(ev) = s.next().await {
            let now = Instant::now();
            let Ok(ev) = ev else { continue };
            let mut o = obs.lock().unwrap_or_else(|e| e.into_inner());
            let side = if remote { &mut o.remote } else { &mut o.local };
            match ev {
                watcher::Event::Apply(p) => {
                    if let Some(k) = key(&p, remote) {
                        note(side.entry(k).or_default(), &p, !remote, now);
                    }
                }
                watcher::Event::InitApply(p) => {
                    if let Some(k) = key(&p, remote) {
                        note(side.entry(k.clone()).or_default(), &p, !remote, now);
                        listed.get_or_insert_with(HashSet::new).insert(k);
                    }
                }
                watcher::Event::Init => listed = Some(HashSet::new()),
                watcher::Event::InitDone => {
                    let present = listed.take().unwrap_or_default();
                    for (k, seen) in side.iter_mut() {
                        if !present.contains(k) && seen.gone.is_none() {
                            seen.gone = Some(now);
                        }
                    }
                }
                watcher::Event::Delete(p) => {
                    if let Some(k) = key(&p, remote) {
                        side.entry(k).or_default().gone.get_or_insert(now);
                    }
                }
            }
        }
    })
}

fn key(p: &Pod, remote: bool) -> Option<String> {
    if remote {
        p.metadata
            .labels
            .as_ref()?
            .get(LABEL_SOURCE_POD_UID)
            .cloned()
    } else {
        p.metadata.uid.clone()
    }
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Milliseconds from the remote `from` to the local `to` of `uids`.
pub fn lags(o: &Observed, uids: &[String], pick: impl Fn(&Seen) -> Option<Instant>) -> Vec<f64> {
    let mut v: Vec<f64> = uids
        .iter()
        .filter_map(|u| {
            let r = pick(o.remote.get(u)?)?;
            let l = pick(o.local.get(u)?)?;
            Some(l.saturating_duration_since(r).as_secs_f64() * 1000.0)
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}
