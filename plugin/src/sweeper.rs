//! The orphan sweep task: every interval, asks the pure [`crate::sweep`]
//! which cached remote pods are orphans and deletes them.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    caller,
    metrics::{Metrics, ReasonLabels},
    naming,
    remote::Remote,
    sweep::{Decision, Kept, RemotePodInfo, Tracker},
};

/// The sweep's view of a remote pod; `None` for a pod without the source
/// UID label.
fn pod_info(p: &Pod, now: jiff::Timestamp) -> Option<RemotePodInfo> {
    let uid = p
        .metadata
        .labels
        .as_ref()?
        .get(offload_wire::keys::LABEL_SOURCE_POD_UID)?
        .clone();
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    let (caller, instance) = caller::labels_of(p);
    // No creation time (never from an apiserver): as young as can be.
    let age = p
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
        .unwrap_or(Duration::ZERO);
    Some(RemotePodInfo {
        uid,
        caller,
        instance,
        terminal: phase == "Succeeded" || phase == "Failed",
        terminating: p.metadata.deletion_timestamp.is_some(),
        age,
    })
}

/// Periodically deletes remote pods whose local pod is gone (see [`crate::sweep`]).
pub(crate) async fn run(
    remote: Arc<Remote>,
    namespaces: naming::NamespaceMapper,
    tracker: Arc<Mutex<Tracker>>,
    every: Duration,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut deleted: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !remote.is_ready() {
            continue;
        }
        metrics.sweep_runs.inc();
        // Remote pods this task deleted, until the cache drops them: the
        // watch may not have shown their deletion timestamp yet, and a pod
        // is deleted once, not once per sweep while it terminates.
        let cached: HashSet<String> = remote
            .store()
            .state()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        deleted.retain(|u| cached.contains(u));
        for (uid, pod) in orphans(&remote, &namespaces, &tracker, &metrics) {
            let Some(remote_uid) = pod.metadata.uid.clone() else {
                continue;
            };
            if deleted.contains(&remote_uid) {
                continue;
            }
            if delete_orphan(&remote, &tracker, &metrics, &uid, &pod).await {
                deleted.insert(remote_uid);
            }
        }
    }
}

/// The cached remote pods the sweep policy calls orphans now, with the UID
/// of their local pod.
fn orphans(
    remote: &Remote,
    namespaces: &naming::NamespaceMapper,
    tracker: &Mutex<Tracker>,
    metrics: &Metrics,
) -> Vec<(String, Arc<Pod>)> {
    let now = jiff::Timestamp::now();
    let pods: Vec<_> = remote
        .store()
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata
                .namespace
                .as_deref()
                .is_some_and(|ns| namespaces.may_own(ns))
        })
        .collect();
    let infos: Vec<RemotePodInfo> = pods.iter().filter_map(|p| pod_info(p, now)).collect();
    let decision = match tracker.lock() {
        Ok(mut t) => {
            let now = Instant::now();
            t.retain(&infos, now);
            metrics.sweep_callers_alive.set(t.alive_callers(now) as i64);
            t.decide(&infos, now)
        }
        Err(_) => return vec![],
    };
    record(metrics, &decision);
    decision
        .orphans
        .into_iter()
        .filter_map(|uid| {
            let pod = pods
                .iter()
                .find(|p| pod_info(p, now).is_some_and(|i| i.uid == uid))?
                .clone();
            Some((uid, pod))
        })
        .collect()
}

fn record(metrics: &Metrics, d: &Decision) {
    for why in [
        Kept::Named,
        Kept::Grace,
        Kept::SilentCaller,
        Kept::UnknownCaller,
        Kept::ForeignInstance,
        Kept::NoCaller,
        Kept::Terminating,
    ] {
        let n = d.kept.get(&why).copied().unwrap_or(0);
        metrics
            .sweep_pods_kept
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .set(n as i64);
    }
    let kept = |w| d.kept.get(&w).copied().unwrap_or(0);
    debug!(
        orphans = d.orphans.len(),
        named = kept(Kept::Named),
        grace = kept(Kept::Grace),
        silent_caller = kept(Kept::SilentCaller),
        unknown_caller = kept(Kept::UnknownCaller),
        foreign_instance = kept(Kept::ForeignInstance),
        "orphan sweep"
    );
}

async fn delete_orphan(
    remote: &Remote,
    tracker: &Mutex<Tracker>,
    metrics: &Metrics,
    uid: &str,
    pod: &Pod,
) -> bool {
    let (Some(ns), Some(name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return false;
    };
    let (caller, _) = caller::labels_of(pod);
    let caller = caller.unwrap_or_default();
    info!(uid = %uid, pod = name, namespace = ns, caller = %caller, "orphan sweep: deleting remote pod its caller no longer names");
    match remote.delete(ns, name, uid).await {
        Ok(_) => {
            metrics.orphans_deleted.inc();
            if let Ok(mut t) = tracker.lock() {
                t.forget(uid);
            }
            true
        }
        Err(e) => {
            metrics.orphan_delete_errors.inc();
            warn!(uid = %uid, error = %e, "orphan sweep: delete failed");
            false
        }
    }
}
