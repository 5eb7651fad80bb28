//! `POST /stats/summary` (our extension of the interLink API): CPU and memory
//! of the caller's offloaded pods, in the kubelet's Summary shape
//! ([`offload_wire::stats`]), with every `podRef` naming the *local* pod.
//!
//! Where the figures come from: each remote kubelet's own `/stats/summary`,
//! read through the remote apiserver's node proxy
//! (`/api/v1/nodes/<node>/proxy/stats/summary`, RBAC `get` on
//! `nodes/proxy`). Not the metrics API (`metrics.k8s.io`): many clusters
//! (ours included) run no metrics-server, and it has neither the cumulative
//! CPU counter (`usageCoreNanoSeconds`) that `/metrics/resource` needs nor
//! rss/usage bytes; the kubelet's Summary has all of them, on every cluster.
//!
//! Who sees what: a remote node's Summary lists every pod of that node, so
//! only pods this plugin instance created for this caller (the principal
//! and the virtual node it names, [`crate::caller`]) are taken from it; the
//! rest never leaves the plugin. Each remote node's Summary is cached for
//! [`cache::TTL`], once per node however many callers ask ([`cache`]).

pub mod cache;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{Json, body::Bytes, extract::State};
use k8s_openapi::api::core::v1::Pod;
use offload_wire::{
    keys,
    stats::{PodReference, PodStats, StatsAnswer, StatsRequest, Summary},
};
use tracing::{debug, instrument, warn};

pub use self::cache::NodeCache;
use crate::{
    caller::{Principal, labels_of},
    error::ApiError,
    http::AppState,
    naming::{NameKind, remote_name},
    remote::{Ownership, ownership},
};

/// The local pod a remote pod was created for, when it was created by this
/// plugin `instance` for `caller`; `None` for anything else.
pub fn owned_identity(pod: &Pod, caller: &str, instance: &str) -> Option<PodReference> {
    let labels = pod.metadata.labels.as_ref()?;
    let ann = pod.metadata.annotations.as_ref()?;
    let get = |k: &str| ann.get(k).filter(|v| !v.is_empty()).cloned();
    let id = PodReference {
        name: get(keys::ANNOTATION_SOURCE_NAME)?,
        namespace: get(keys::ANNOTATION_SOURCE_NAMESPACE)?,
        uid: get(keys::ANNOTATION_SOURCE_UID)?,
    };
    let (pod_caller, _) = labels_of(pod);
    (ownership(labels, &id.uid, instance) == Ownership::Ours
        && pod_caller.as_deref() == Some(caller))
    .then_some(id)
}

/// The figures of remote pod `remote` in its node's `summary`, renamed for
/// the local pod `local`; `None` when the kubelet has none for it (yet).
/// The remote UID must match too: a pod recreated under the same name is
/// another pod.
pub fn local_stats(summary: &Summary, remote: &Pod, local: PodReference) -> Option<PodStats> {
    let m = &remote.metadata;
    let found = summary.pods.iter().find(|p| {
        Some(&p.pod_ref.name) == m.name.as_ref()
            && Some(&p.pod_ref.namespace) == m.namespace.as_ref()
            && m.uid.as_ref().is_none_or(|u| *u == p.pod_ref.uid)
    })?;
    let mut out = found.clone();
    out.pod_ref = local;
    out.fill_pod_level();
    Some(out)
}

/// The remote node a pod runs on, if it is scheduled.
fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The handler of `POST /stats/summary` (GET with a body too, as `/status`).
pub async fn summary(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    body: Bytes,
) -> Result<Json<StatsAnswer>, ApiError> {
    let req: StatsRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("stats request: {e}")))?;
    if req.node_name.is_empty() {
        return Err(ApiError::bad_request(
            "stats request: nodeName (the caller's virtual node) is required",
        ));
    }
    if !state.remote.is_ready() && !state.remote.wait_ready(Duration::from_secs(20)).await {
        return Err(ApiError::unavailable(
            "not_ready",
            "the remote pod cache is not synced yet; retry",
        ));
    }
    answer(&state, &principal, req).await.map(Json)
}

#[instrument(name = "stats", skip_all, fields(node = %req.node_name, pods = req.pods.as_ref().map(Vec::len)))]
async fn answer(
    state: &AppState,
    principal: &Principal,
    req: StatsRequest,
) -> Result<StatsAnswer, ApiError> {
    let caller = principal.caller(&req.node_name);
    let instance = state
        .tracker
        .lock()
        .map(|t| t.instance().to_string())
        .map_err(|_| ApiError::internal("state lock poisoned"))?;
    let targets = targets(state, &req, &caller, &instance);
    // One read per remote node, all nodes at once.
    let mut by_node: BTreeMap<String, Vec<(PodReference, Arc<Pod>)>> = BTreeMap::new();
    for (id, pod) in targets {
        if let Some(n) = node_of(&pod) {
            by_node.entry(n.to_string()).or_default().push((id, pod));
        }
    }
    let client = state.remote.client().clone();
    let reads = by_node.keys().map(|node| {
        let client = client.clone();
        let metrics = state.metrics.clone();
        async move {
            state
                .stats
                .get(node, || async move {
                    metrics.remote_call("node_stats");
                    let read = cache::fetch_node(&client, node).await;
                    // Logged once per read (not per caller served from the cache).
                    if let Err(e) = &read {
                        metrics.remote_call("node_stats_failed");
                        warn!(remote_node = %node, error = %e.detail, "remote kubelet stats unavailable");
                    }
                    read
                })
                .await
        }
    });
    let summaries = futures::future::join_all(reads).await;
    let mut pods = Vec::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for ((node, members), summary) in by_node.into_iter().zip(summaries) {
        match summary {
            Ok(s) => pods.extend(
                members
                    .into_iter()
                    .filter_map(|(id, pod)| local_stats(&s, &pod, id)),
            ),
            Err(e) => {
                // The node's name stays in the plugin's log (at the read):
                // the caller learns the reason, not the remote cluster's layout.
                debug!(remote_node = %node, error = %e.detail, "no figures for this node's pods");
                *failed.entry(e.reason).or_default() += members.len();
            }
        }
    }
    debug!(pods = pods.len(), "stats answered");
    Ok(StatsAnswer {
        summary: Summary::for_virtual_node(&req.node_name, pods),
        errors: failed
            .into_iter()
            .map(|(reason, n)| format!("no figures for {n} pod(s): {reason}"))
            .collect(),
    })
}

/// The remote pods asked for that are this caller's: the named ones, or
/// all of them.
fn targets(
    state: &AppState,
    req: &StatsRequest,
    caller: &str,
    instance: &str,
) -> Vec<(PodReference, Arc<Pod>)> {
    match &req.pods {
        None => state
            .remote
            .store()
            .state()
            .into_iter()
            .filter_map(|p| owned_identity(&p, caller, instance).map(|id| (id, p)))
            .collect(),
        Some(wanted) => wanted
            .iter()
            .filter_map(|id| {
                let ns = state.translate.namespaces.remote(&id.namespace);
                let name = remote_name(NameKind::Pod, &id.name, &id.uid);
                let pod = state
                    .remote
                    .cached(&ns, &name)
                    .or_else(|| state.remote.cached_by_uid(&id.uid))?;
                // Another caller's pod, or another local pod's: as absent.
                let owner = owned_identity(&pod, caller, instance)?;
                (owner == *id).then_some((owner, pod))
            })
            .collect(),
    }
}
