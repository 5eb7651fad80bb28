//! The orphan sweep task: every interval, asks the pure [`crate::sweep`]
//! which cached remote pods are orphans and deletes them.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    metrics::Metrics,
    naming,
    remote::Remote,
    sweep::{RemotePodInfo, SweepPolicy, Tracker},
};

fn pod_info(p: &k8s_openapi::api::core::v1::Pod) -> Option<RemotePodInfo> {
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
                t.orphans(&infos, &policy, Instant::now())
            }
            Err(_) => continue,
        };
        for uid in orphans {
            let Some(p) = pods
                .iter()
                .find(|p| pod_info(p).is_some_and(|i| i.uid == uid))
            else {
                continue;
            };
            let (Some(ns), Some(name)) =
                (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
            else {
                continue;
            };
            info!(uid = %uid, pod = name, namespace = ns, "orphan sweep: deleting remote pod");
            match remote.delete(ns, name, &uid).await {
                Ok(_) => {
                    metrics.orphans_deleted.inc();
                    if let Ok(mut t) = tracker.lock() {
                        t.forget(&uid);
                    }
                }
                Err(e) => warn!(uid = %uid, error = %e, "orphan sweep: delete failed"),
            }
        }
    }
}
