//! `GET /stats/summary` and `GET /metrics/resource` of the virtual node:
//! CPU and memory of its offloaded pods as the remote kubelets measure them,
//! carried by the plugin's `/stats/summary` extension
//! ([`offload_wire::stats`]), and node figures that are the sums over the
//! pods (a virtual node has no machine of its own). Authorized like the
//! kubelet's: `nodes/stats` and `nodes/metrics` ([`super::authz`]).
//!
//! A plugin without the extension (404, or an interLink API server) gives
//! empty figures (zeros for the node, no pods), never an error per scrape;
//! a plugin that fails gives the kubelet's answers to a failed collection:
//! 500 on `/stats/summary`, `scrape_error 1` on `/metrics/resource`.

pub mod text;

use std::collections::HashSet;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use offload_wire::stats::{PodReference, StatsRequest, Summary};
use tracing::{Instrument, debug, info_span, warn};

use super::{KubeletState, text as plain};
use crate::client::PluginError;

/// What one collection found: the Summary, and whether every pod's
/// figures could be read.
pub struct Collected {
    pub summary: Summary,
    pub complete: bool,
}

/// The local pods of this node, as the plugin is asked about them.
fn local_pods(st: &KubeletState) -> Vec<PodReference> {
    st.pods
        .state()
        .iter()
        .filter_map(|p| {
            let m = &p.metadata;
            Some(PodReference {
                name: m.name.clone()?,
                namespace: m.namespace.clone()?,
                uid: m.uid.clone()?,
            })
        })
        .collect()
}

/// Asks the plugin about this node's pods and sums them into the node.
pub async fn collect(st: &KubeletState) -> Result<Collected, PluginError> {
    let pods = local_pods(st);
    let now = Time(jiff::Timestamp::now());
    let mut complete = true;
    let mut figures = Vec::new();
    if !pods.is_empty() {
        let known: HashSet<PodReference> = pods.iter().cloned().collect();
        let req = StatsRequest {
            node_name: st.node_name.clone(),
            pods: Some(pods),
        };
        match st.plugin.stats_summary(&req).await? {
            None => debug!("the plugin offers no stats: empty figures"),
            Some(answer) => {
                for e in &answer.errors {
                    warn!(error = %e, "plugin: some pods have no figures");
                }
                complete = answer.errors.is_empty();
                // Only pods of this node, whatever the plugin answers.
                figures = answer
                    .summary
                    .pods
                    .into_iter()
                    .filter(|p| known.contains(&p.pod_ref))
                    .collect();
            }
        }
    }
    let mut summary = Summary::for_virtual_node(&st.node_name, figures);
    text::zero_node_figures(&mut summary.node, now);
    Ok(Collected { summary, complete })
}

/// `GET /stats/summary` (the `only_cpu_and_memory` query of metrics-server
/// changes nothing: CPU and memory are all there is).
pub async fn summary(State(st): State<KubeletState>) -> Response {
    let span = info_span!("statsSummary", node = %st.node_name);
    async move {
        match collect(&st).await {
            Ok(c) => axum::Json(c.summary).into_response(),
            Err(e) => {
                warn!(error = %e, "stats summary: plugin call failed");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Internal Error: failed to get node stats from the plugin: {e}"),
                )
            }
        }
    }
    .instrument(span)
    .await
}

/// `GET /metrics/resource`: the kubelet's resource metrics, Prometheus
/// text format.
pub async fn resource_metrics(State(st): State<KubeletState>) -> Response {
    let span = info_span!("metricsResource", node = %st.node_name);
    async move {
        let body = match collect(&st).await {
            Ok(c) => text::resource_metrics(&c.summary, !c.complete),
            Err(e) => {
                warn!(error = %e, "resource metrics: plugin call failed");
                text::scrape_failed()
            }
        };
        ([(header::CONTENT_TYPE, text::CONTENT_TYPE)], body).into_response()
    }
    .instrument(span)
    .await
}
