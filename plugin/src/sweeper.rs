//! The orphan sweep task: every interval, asks the pure [`crate::sweep`]
//! which cached remote pods are orphans and deletes them.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    metrics::Metrics,
    naming,
    remote::Remote,
    sweep::{RemotePodInfo, SweepPolicy, Tracker},
};

/// The sweep's view of a remote pod: its local pod's UID (label) and
/// whether it has ended; `None` for a pod without the label.
fn pod_info(p: &Pod) -> Option<RemotePodInfo> {
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
    Some(RemotePodInfo {
        uid,
        terminal: phase == "Succeeded" || phase == "Failed",
    })
}

/// Periodically deletes remote pods whose local pod is gone (see [`sweep`]).
pub(crate) async fn run(
    remote: Arc<Remote>,
    namespaces: naming::NamespaceMapper,
    tracker: Arc<Mutex<Tracker>>,
    policy: SweepPolicy,
    every: Duration,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
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
        for (uid, pod) in orphans(&remote, &namespaces, &tracker, &policy) {
            delete_orphan(&remote, &tracker, &metrics, &uid, &pod).await;
        }
    }
}

/// The cached remote pods the sweep policy calls orphans now, with the UID
/// of their local pod.
fn orphans(
    remote: &Remote,
    namespaces: &naming::NamespaceMapper,
    tracker: &Mutex<Tracker>,
    policy: &SweepPolicy,
) -> Vec<(String, Arc<Pod>)> {
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
    let infos: Vec<RemotePodInfo> = pods.iter().filter_map(|p| pod_info(p)).collect();
    let orphans = match tracker.lock() {
        Ok(mut t) => {
            t.retain(
                &infos,
                Instant::now(),
                policy.active_after.min(policy.finished_after),
            );
            t.orphans(&infos, policy, Instant::now())
        }
        Err(_) => return vec![],
    };
    orphans
        .into_iter()
        .filter_map(|uid| {
            let pod = pods
                .iter()
                .find(|p| pod_info(p).is_some_and(|i| i.uid == uid))?
                .clone();
            Some((uid, pod))
        })
        .collect()
}

async fn delete_orphan(
    remote: &Remote,
    tracker: &Mutex<Tracker>,
    metrics: &Metrics,
    uid: &str,
    pod: &Pod,
) {
    let (Some(ns), Some(name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return;
    };
    info!(uid = %uid, pod = name, namespace = ns, "orphan sweep: deleting remote pod");
    match remote.delete(ns, name, uid).await {
        Ok(_) => {
            metrics.orphans_deleted.inc();
            if let Ok(mut t) = tracker.lock() {
                t.forget(uid);
            }
        }
        Err(e) => warn!(uid = %uid, error = %e, "orphan sweep: delete failed"),
    }
}
