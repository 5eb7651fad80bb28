//! Remote Events on the local pods: polls the plugin's `GET /events`
//! extension (`offload_wire::events`) every [`POLL`] with its cursor and
//! writes each remote event as a core/v1 Event on the local pod, with the
//! remote type, reason and message (source `offload-provider`, the node as
//! host), deduplicated and rate-limited per pod by [`mirror`].
//!
//! core/v1 Events, not kube-runtime's `Recorder`: the Recorder keys its
//! series without the message, so "Failed to pull image ..." and "Error:
//! ErrImagePull" (both reason `Failed`) would become one Event showing only
//! the first message; and the kubelet's own events, which these stand for,
//! are core/v1 with `count` and first/last timestamps, as `kubectl describe`
//! shows them.
//!
//! A plugin without the extension answers 404: said once, then checked
//! again every [`NO_EXTENSION_RECHECK`]. Only the remote event's own words
//! are written: nothing else of the remote cluster, no secret.
//! Metrics: `offload_provider_remote_events_written` and
//! `offload_provider_remote_events_dropped{reason}` (`rate_limited`,
//! `write_failed`, `unknown_pod`).

pub mod mirror;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use offload_runtime::admin::{Registrar, SharedRegistry};
use offload_runtime::kubeapi::field_manager;
use offload_wire::events::{EVENTS_PATH, EventsAnswer, RemoteEvent};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::mirror::{Decision, Mirror, SeriesKey, Write};
use crate::client::{PluginClient, PluginError};
use crate::config::PluginMode;

/// Between two polls.
pub const POLL: Duration = Duration::from_secs(2);
/// Between two checks of a plugin that has no `/events`.
pub const NO_EXTENSION_RECHECK: Duration = Duration::from_secs(300);
/// Longest wait after failed polls.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the buckets and series of pods that left are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

#[derive(Clone)]
struct EventMetrics {
    written: Counter,
    dropped: Family<DropLabels, Counter>,
}

impl EventMetrics {
    fn register(shared: &SharedRegistry) -> Self {
        shared.register("offload_provider", |r| {
            let mut m = Registrar::new(r);
            EventMetrics {
                written: m.add(
                    "remote_events_written",
                    "Remote pod events written (created or counted up) as local pod Events",
                ),
                dropped: m.add(
                    "remote_events_dropped",
                    "Remote pod events not written, by reason (rate_limited: the pod's \
                     25-burst, 1 per 5 s budget is spent; write_failed; unknown_pod)",
                ),
            }
        })
    }

    fn drop(&self, reason: &'static str) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }
}

/// What the loop works with.
pub struct RemoteEvents {
    pub client: kube::Client,
    pub plugin: PluginClient,
    pub node: String,
    /// The Controller's pod store (the node's pods).
    pub pods: Store<Pod>,
    /// Set once that store has its first full list (the provider's `/readyz`).
    pub synced: Arc<AtomicBool>,
}

/// Polls until `cancel`. In interLink mode (no such extension) it returns
/// at once.
pub async fn run(ctx: RemoteEvents, registry: SharedRegistry, cancel: CancellationToken) {
    if ctx.plugin.mode() != PluginMode::Plugin {
        info!("remote events: off (the interLink API server has no /events extension)");
        return;
    }
    let metrics = EventMetrics::register(&registry);
    // Events are matched against the node's pods: before the pod cache is
    // synced every event would look like one of an unknown pod. The flag,
    // not `Store::wait_until_ready`, which wakes only one of its waiters
    // (the Controller's).
    while !ctx.synced.load(Ordering::Relaxed) {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let mut mirror = Mirror::default();
    let mut cursor: Option<String> = None;
    let mut failures = 0u32;
    let mut told_missing = false;
    let mut pruned = Instant::now();
    loop {
        let wait = match fetch(&ctx.plugin, &ctx.node, cursor.as_deref()).await {
            Ok(answer) => {
                failures = 0;
                told_missing = false;
                for e in &answer.events {
                    apply(&ctx, &mut mirror, &metrics, e).await;
                }
                cursor = Some(answer.cursor);
                if answer.more { Duration::ZERO } else { POLL }
            }
            Err(PluginError::Status { status: 404, .. }) => {
                if !told_missing {
                    info!(
                        recheck = ?NO_EXTENSION_RECHECK,
                        "remote events: the plugin has no /events extension; remote pod events are not shown"
                    );
                    told_missing = true;
                }
                NO_EXTENSION_RECHECK
            }
            Err(e) => {
                if failures == 0 {
                    warn!(error = %e, "remote events: polling the plugin failed (retrying)");
                } else {
                    debug!(error = %e, failures, "remote events: poll failed");
                }
                failures = failures.saturating_add(1);
                POLL.saturating_mul(1 << failures.min(4)).min(MAX_BACKOFF)
            }
        };
        if pruned.elapsed() >= PRUNE_EVERY {
            let alive: HashSet<String> = ctx
                .pods
                .state()
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            mirror.retain_pods(&alive);
            pruned = Instant::now();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One page of events after `since`.
async fn fetch(
    plugin: &PluginClient,
    node: &str,
    since: Option<&str>,
) -> Result<EventsAnswer, PluginError> {
    // Node names are DNS subdomains and our plugin's cursors are
    // `<hex>.<digits>`: nothing to escape. A cursor with anything else is not
    // sent (the plugin then answers everything it holds; the mirror absorbs
    // the repeats).
    let mut path = format!("{EVENTS_PATH}?node={node}");
    if let Some(c) = since.filter(|c| {
        c.len() <= 253
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    }) {
        path.push_str("&since=");
        path.push_str(c);
    }
    let resp = plugin
        .call::<()>(
            "events",
            Method::GET,
            &path,
            None,
            Some(Duration::from_secs(10)),
        )
        .await?;
    plugin.json(resp).await
}

/// Writes one remote event on its local pod, if the mirror says so.
async fn apply(ctx: &RemoteEvents, mirror: &mut Mirror, metrics: &EventMetrics, e: &RemoteEvent) {
    let Some(pod) = ctx
        .pods
        .get(&ObjectRef::new(&e.pod.name).within(&e.pod.namespace))
        .filter(|p| p.metadata.uid.as_deref() == Some(e.pod.uid.as_str()))
    else {
        // Deleted since, or not (or no longer) on this node.
        metrics.drop("unknown_pod");
        return;
    };
    let write = match mirror.observe(e, Instant::now()) {
        Decision::Unchanged => return,
        Decision::RateLimited => {
            debug!(pod = %e.pod.name, namespace = %e.pod.namespace, reason = %e.reason, "remote event dropped: rate limit");
            metrics.drop("rate_limited");
            return;
        }
        Decision::Write(w) => w,
    };
    let key = SeriesKey::of(e);
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &e.pod.namespace);
    let name = key.event_name(&e.pod.name);
    let result = match write {
        Write::Create { count } => create(&api, &name, ctx, &pod, e, count).await,
        Write::Update { count } => match raise(&api, &name, e, count).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                // Expired (the apiserver's Event TTL): write it anew.
                mirror.lost(&key);
                create(&api, &name, ctx, &pod, e, count).await
            }
            other => other.map(|_| count),
        },
    };
    match result {
        Ok(count) => {
            mirror.written(&key, count);
            metrics.written.inc();
        }
        Err(err) => {
            metrics.drop("write_failed");
            warn!(pod = %e.pod.name, namespace = %e.pod.namespace, reason = %e.reason, error = %err, "cannot write a remote event on the local pod");
        }
    }
}

/// Creates the local Event; if it exists already (a restarted provider),
/// raises its count unless it says more. Returns the count it has now.
async fn create(
    api: &Api<Event>,
    name: &str,
    ctx: &RemoteEvents,
    pod: &Pod,
    e: &RemoteEvent,
    count: i32,
) -> Result<i32, kube::Error> {
    let ev = local_event(name, &ctx.node, pod, e, count);
    match api.create(&PostParams::default(), &ev).await {
        Ok(_) => Ok(count),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // An empty merge patch reads it (the provider may create and
            // patch Events, not get them).
            let existing = api
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({})),
                )
                .await?;
            let has = existing.count.unwrap_or(1);
            if has >= count {
                return Ok(has);
            }
            raise(api, name, e, count).await.map(|_| count)
        }
        Err(err) => Err(err),
    }
}

/// Sets the local Event's count and last time.
async fn raise(
    api: &Api<Event>,
    name: &str,
    e: &RemoteEvent,
    count: i32,
) -> Result<(), kube::Error> {
    let last = e.last_timestamp.clone().unwrap_or_else(now);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"count": count, "lastTimestamp": last})),
    )
    .await
    .map(|_| ())
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The core/v1 Event of remote event `e` on local `pod`.
pub fn local_event(name: &str, node: &str, pod: &Pod, e: &RemoteEvent, count: i32) -> Event {
    let last = e.last_timestamp.clone().unwrap_or_else(now);
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: pod.metadata.namespace.clone(),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: e.field_path.clone(),
        },
        type_: Some(e.type_.clone()),
        reason: Some(e.reason.clone()),
        message: Some(e.message.clone()),
        count: Some(count),
        first_timestamp: Some(e.first_timestamp.clone().unwrap_or_else(|| last.clone())),
        last_timestamp: Some(last),
        source: Some(EventSource {
            component: Some(field_manager::PROVIDER.into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some(field_manager::PROVIDER.into()),
        reporting_instance: Some(node.to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
