//! Where statuses come from: the plugin's status-change stream when it
//! offers one (`offload_wire::watch`), else `/status` polling as interLink
//! does (`status_poll.rs`, unchanged).
//!
//! Per connection the plugin is asked for its capabilities once. With
//! `statusWatch`, one stream is held for the node with the last processed
//! resume token; it is reconnected with a jittered backoff and that token
//! (the plugin replays what was missed, or everything and `Synced`), and
//! treated as dead after 3 x `BOOKMARK_SECONDS` without a line. Every
//! `--status-resync` the whole node is read again through `/status` (pod
//! identities only) as a safety net. Every `--status-follow-interval` the
//! plugin is told which pods the node follows (`/status/follow`, with
//! `statusFollow`): a count and a digest, the UIDs only when the plugin's
//! differ; it is its orphan sweep's sign of life. Against a plugin without
//! `statusFollow` the resync runs at least every [`UNFOLLOWED_RESYNC`]
//! instead, since only `/status` calls keep its sweep going. Without the
//! stream the poller runs, and the plugin is asked again every
//! `--status-resync` (at most [`RECHECK`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use offload_wire::watch::{
    BOOKMARK_SECONDS, FollowRequest, STATUS_FOLLOW, STATUS_WATCH, WatchEvent, WatchQuery,
    follow_digest,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::status_metrics::{Source, StatusMetrics};
use super::status_poll::{followed, is_followed, record_gauges, run_status_poller};
use super::status_writer::{StatusWriter, Update, status_writer};
use super::{Context, uid};
use crate::client::PluginError;
use crate::client::watch::identity;
use crate::retry::{Backoff, jittered_period};
use crate::status::stream::{Step, StreamState};

/// A stream without a line for this long is dead.
const SILENCE: Duration = Duration::from_secs(3 * BOOKMARK_SECONDS);
/// How often the pod gauges are refreshed while streaming (the poller does
/// it every round).
const GAUGES_EVERY: Duration = Duration::from_secs(5);
/// The resync period against a plugin without `statusFollow`: under its
/// default `--caller-alive-within` (5 min), so that its orphan sweep still
/// sees this provider name its pods.
const UNFOLLOWED_RESYNC: Duration = Duration::from_secs(4 * 60);
/// While polling, the plugin is asked at least this often whether it offers
/// the stream now.
const RECHECK: Duration = Duration::from_secs(5 * 60);

/// Follow the statuses of the node's pods until `cancel`.
pub async fn run_status_updates(ctx: Arc<Context>, cancel: CancellationToken) {
    if !ctx.config.status_watch {
        return run_status_poller(ctx, cancel).await;
    }
    let metrics = StatusMetrics::register(ctx.metrics.registry());
    let (writer, writing) = status_writer(Arc::clone(&ctx), metrics.clone(), cancel.clone());
    let follow = follow(ctx, writer, metrics, cancel);
    tokio::join!(writing, follow);
}

async fn follow(
    ctx: Arc<Context>,
    writer: StatusWriter,
    metrics: StatusMetrics,
    cancel: CancellationToken,
) {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut stream = StreamState::default();
    let mut failures = 0;
    while !cancel.is_cancelled() {
        match ctx.plugin.capabilities().await {
            Ok(c) if c.offers(STATUS_WATCH) => {
                metrics.source(Source::Watch);
                let follows = c.offers(STATUS_FOLLOW);
                let opened = watch(&ctx, &writer, &metrics, &mut stream, follows, &cancel).await;
                failures = if opened { 0 } else { failures + 1 };
            }
            Ok(_) => {
                info!("the plugin does not offer the status stream: polling /status");
                metrics.source(Source::Poll);
                poll_for(&ctx, ctx.config.status_resync.min(RECHECK), &cancel).await;
                failures = 0;
                continue;
            }
            Err(e) => {
                debug!(error = %e, "cannot ask the plugin's capabilities");
                failures += 1;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.jittered(failures.min(16))) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Today's poller for `period`, then stop it after its round.
async fn poll_for(ctx: &Arc<Context>, period: Duration, cancel: &CancellationToken) {
    let stop = cancel.child_token();
    let poller = run_status_poller(Arc::clone(ctx), stop.clone());
    tokio::pin!(poller);
    tokio::select! {
        _ = &mut poller => return,
        _ = tokio::time::sleep(jittered_period(period)) => {}
    }
    stop.cancel();
    poller.await;
}

/// One stream connection, until it ends, goes silent or `cancel`. Whether
/// it opened.
async fn watch(
    ctx: &Arc<Context>,
    writer: &StatusWriter,
    metrics: &StatusMetrics,
    stream: &mut StreamState,
    follows: bool,
    cancel: &CancellationToken,
) -> bool {
    let query = WatchQuery {
        node: ctx.config.node_name.clone(),
        resume: stream.token().map(str::to_owned),
    };
    let mut events = match ctx.plugin.watch_status(&query, SILENCE).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot open the plugin's status stream");
            return false;
        }
    };
    info!(resume = query.resume.is_some(), "status stream open");
    stream.connected();
    metrics.connected(true);
    let resyncing = Arc::new(AtomicBool::new(false));
    let every = if follows {
        ctx.config.status_resync
    } else {
        ctx.config.status_resync.min(UNFOLLOWED_RESYNC)
    };
    let mut resync =
        tokio::time::interval_at(tokio::time::Instant::now() + jittered_period(every), every);
    let following = Arc::new(AtomicBool::new(false));
    // The first one at once: a plugin that restarted learns at once that
    // this caller is alive.
    let mut follow_tick = tokio::time::interval(ctx.config.status_follow_interval);
    let mut gauges = tokio::time::interval(GAUGES_EVERY);
    let tunnels_refreshing = Arc::new(AtomicBool::new(false));
    let mut tunnels = tokio::time::interval(super::tunnel_status::REFRESH_EVERY);
    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break None,
            _ = gauges.tick() => record_gauges(ctx, &ctx.pods.state()),
            _ = resync.tick() => spawn_resync(ctx, writer, &resyncing),
            _ = follow_tick.tick(), if follows => spawn_follow(ctx, &following),
            _ = tunnels.tick() => super::tunnel_status::spawn_refresh(ctx, &tunnels_refreshing),
            line = tokio::time::timeout(SILENCE, events.next()) => match line {
                Err(_) => break Some(format!("no line for {}s", SILENCE.as_secs())),
                Ok(None) => break Some("closed by the plugin".into()),
                Ok(Some(Err(e))) => break Some(e.to_string()),
                Ok(Some(Ok(ev))) => apply(ctx, writer, metrics, stream, ev),
            },
        }
    };
    metrics.connected(false);
    if let Some(why) = end {
        warn!(reason = %why, "status stream ended; reconnecting");
    }
    true
}

fn event_type(ev: &WatchEvent) -> &'static str {
    match ev {
        WatchEvent::Status { .. } => "status",
        WatchEvent::Gone { .. } => "gone",
        WatchEvent::Synced { .. } => "synced",
        WatchEvent::Bookmark { .. } => "bookmark",
    }
}

fn apply(
    ctx: &Arc<Context>,
    writer: &StatusWriter,
    metrics: &StatusMetrics,
    stream: &mut StreamState,
    ev: WatchEvent,
) {
    metrics.event(event_type(&ev));
    let followed_uids = || followed(&ctx.pods.state()).iter().map(uid).collect();
    match stream.apply(ev, followed_uids) {
        Step::Status(st) => writer.submit(Update::status(st, "watch")),
        Step::Gone {
            namespace,
            name,
            uid,
        } => writer.submit(Update::gone(namespace, name, uid)),
        Step::Unmentioned(uids) if !uids.is_empty() => {
            info!(
                pods = uids.len(),
                "pods the replay did not mention: asking /status"
            );
            let pods = pods_of(ctx, &uids.into_iter().collect());
            let (ctx, writer) = (Arc::clone(ctx), writer.clone());
            // Full pods: the plugin answers for a vanished pod with the
            // containers of the spec it is sent.
            tokio::spawn(async move { ask_status(&ctx, &writer, pods, "resync").await });
        }
        Step::Unmentioned(_) | Step::Nothing => {}
    }
}

/// The followed pods among `uids`, as sent to the plugin (no managed fields).
fn pods_of(ctx: &Context, uids: &HashSet<String>) -> Vec<Pod> {
    followed(&ctx.pods.state())
        .into_iter()
        .filter(|p| uids.contains(&uid(p)))
        .collect()
}

/// The safety net: every followed pod through `/status`, identities only;
/// one at a time.
fn spawn_resync(ctx: &Arc<Context>, writer: &StatusWriter, running: &Arc<AtomicBool>) {
    if running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (ctx, writer, running) = (Arc::clone(ctx), writer.clone(), Arc::clone(running));
    tokio::spawn(async move {
        let pods: Vec<Pod> = followed(&ctx.pods.state()).iter().map(identity).collect();
        debug!(pods = pods.len(), "status resync");
        ask_status(&ctx, &writer, pods, "resync").await;
        running.store(false, Ordering::Release);
    });
}

/// Tell the plugin which pods this node follows: a count and a digest,
/// then the UIDs if the plugin's pods differ. One at a time.
fn spawn_follow(ctx: &Arc<Context>, running: &Arc<AtomicBool>) {
    if running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (ctx, running) = (Arc::clone(ctx), Arc::clone(running));
    tokio::spawn(async move {
        let uids: Vec<String> = ctx
            .pods
            .state()
            .iter()
            .filter(|p| is_followed(p))
            .map(|p| uid(p))
            .collect();
        let mut req = FollowRequest {
            node: ctx.config.node_name.clone(),
            count: uids.len() as u64,
            digest: follow_digest(uids.iter().map(String::as_str)),
            uids: None,
        };
        let answer = match ctx.plugin.follow(&req).await {
            Ok(a) if a.matched => Ok(a),
            Ok(_) => {
                debug!(
                    pods = uids.len(),
                    "the plugin's pods differ: sending the followed UIDs"
                );
                req.uids = Some(uids);
                ctx.plugin.follow(&req).await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(a) => debug!(
                pods = req.count,
                matched = a.matched,
                "told the plugin which pods are followed"
            ),
            Err(e) => {
                warn!(error = %e, "cannot tell the plugin which pods are followed; the next round tries again")
            }
        }
        running.store(false, Ordering::Release);
    });
}

/// Ask `/status` about `pods` in batches of `--status-batch`, one batch at
/// a time, and hand the answers to the writer (which skips what changes
/// nothing).
async fn ask_status(ctx: &Context, writer: &StatusWriter, pods: Vec<Pod>, source: &'static str) {
    for batch in pods.chunks(ctx.config.status_batch.max(1)) {
        match ctx.plugin.status(batch).await {
            Ok(list) => {
                for st in list {
                    writer.submit(Update::status(st, source));
                }
            }
            Err(e) => {
                log_failed(&e);
                return;
            }
        }
    }
}

fn log_failed(e: &PluginError) {
    warn!(error = %e, "status resync failed; the next one tries again");
}
