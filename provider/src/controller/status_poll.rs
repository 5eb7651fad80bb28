//! The status poller: every `--status-interval`, the plugin is asked for the
//! status of every followed pod (offloaded, not terminal, not being deleted),
//! in batches, and what changed is written to the local pods.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodStatus as LocalStatus};
use kube::ResourceExt;
use offload_wire::PodStatus as RemoteStatus;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Context, job_id, key, uid};
use crate::retry::jittered_period;
use crate::status::{self, Phase};
use crate::tunnel;

/// How many status batches are asked at once.
const PARALLEL_BATCHES: usize = 4;

/// Poll until `cancel`, every `--status-interval` give or take a tenth (so
/// the providers of many nodes do not ask the plugin in step). A round whose
/// plugin calls fail (an outage) changes nothing: the pods keep their last
/// known status until the plugin answers again.
pub async fn run_status_poller(ctx: Arc<Context>, cancel: CancellationToken) {
    let mut next = tokio::time::Instant::now() + jittered_period(ctx.config.status_interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = cancel.cancelled() => return,
        }
        let started = tokio::time::Instant::now();
        poll_once(&ctx).await;
        let period = jittered_period(ctx.config.status_interval);
        // A round slower than the period is not made up for with a burst.
        next = (started + period).max(tokio::time::Instant::now() + period / 4);
    }
}

/// One status round. Public for tests and the benchmark.
pub async fn poll_once(ctx: &Arc<Context>) {
    let all = ctx.pods.state();
    record_gauges(ctx, &all);
    let followed = followed(&all);
    if followed.is_empty() {
        return;
    }
    let answers = ask(ctx, &followed).await;
    let writes = changes(ctx, followed, &answers, Timestamp::now());
    futures::stream::iter(writes)
        .map(|(p, st)| {
            let ctx = Arc::clone(ctx);
            async move { ctx.write_status_or_warn(&p, &st).await }
        })
        .buffer_unordered(ctx.config.workers.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// Pods per phase, and the Controller's queue.
pub(super) fn record_gauges(ctx: &Context, all: &[Arc<Pod>]) {
    let mut counts: HashMap<Phase, i64> = HashMap::new();
    for p in all {
        *counts.entry(status::local_phase(p)).or_default() += 1;
    }
    ctx.metrics
        .set_pods(&counts.into_iter().collect::<Vec<_>>());
    let (waiting, in_flight) = ctx.queue_counts();
    ctx.metrics.set_queue(waiting, in_flight);
}

/// Whether the remote status of `p` is followed: offloaded, not terminal,
/// not being deleted.
pub(super) fn is_followed(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && job_id(p).is_some() && status::needs_polling(p)
}

/// The pods whose remote status is followed, without their managed fields
/// (the plugin does not need them).
pub(super) fn followed(all: &[Arc<Pod>]) -> Vec<Pod> {
    all.iter()
        .filter(|p| is_followed(p))
        .map(|p| {
            let mut p = (**p).clone();
            p.metadata.managed_fields = None;
            p
        })
        .collect()
}

/// The plugin's answers by pod UID (a failed batch is skipped: next round).
async fn ask(ctx: &Context, followed: &[Pod]) -> HashMap<String, RemoteStatus> {
    let batches: Vec<Vec<Pod>> = followed
        .chunks(ctx.config.status_batch.max(1))
        .map(<[Pod]>::to_vec)
        .collect();
    let answers = futures::stream::iter(batches)
        .map(|b| {
            let plugin = ctx.plugin.clone();
            async move { plugin.status(&b).await }
        })
        .buffer_unordered(PARALLEL_BATCHES)
        .collect::<Vec<_>>()
        .await;
    let mut by_uid = HashMap::new();
    for a in answers {
        match a {
            Ok(list) => by_uid.extend(list.into_iter().map(|s| (s.uid.clone(), s))),
            Err(e) => debug!(error = %e, "status poll failed"),
        }
    }
    by_uid
}

/// The statuses that changed, on the freshest copy of each pod.
fn changes(
    ctx: &Context,
    followed: Vec<Pod>,
    by_uid: &HashMap<String, RemoteStatus>,
    now: Timestamp,
) -> Vec<(Pod, LocalStatus)> {
    followed
        .into_iter()
        .filter_map(|p| {
            let r = by_uid.get(&uid(&p))?;
            // Echo check: interLink matches by uid + namespace + name.
            if r.name != p.name_any() || r.namespace != p.namespace().unwrap_or_default() {
                return None;
            }
            // The store may be fresher than the copy we sent.
            let current = ctx.pods.get(&key(&p)).map(|p| (*p).clone()).unwrap_or(p);
            let mut st = status::map_remote_status(&current, r, Some(&ctx.host_ip), now);
            if let Some(gm) = &ctx.tunnel {
                tunnel::add_condition(gm, &current, &mut st, now);
            }
            status::status_changed(&current, &st).then_some((current, st))
        })
        .collect()
}
