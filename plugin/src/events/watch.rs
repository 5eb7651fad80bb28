//! The watch of remote Events about pods (kube-runtime watcher, field
//! selector `involvedObject.kind=Pod` on the server): each one about a pod
//! of the plugin's cache is translated and kept in the ring. Events carry no
//! labels, so they cannot be label-selected like our pods; the pod cache is
//! the filter, and nothing else is kept.
//!
//! An event can arrive before its pod reaches the cache (the scheduler
//! writes one right after the create): such events, if in a namespace this
//! plugin's mapping can produce, wait (a bounded number of them, for a short
//! while) and are matched again. Events of other namespaces never wait.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use offload_runtime::admin::{Registrar, SharedRegistry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{EventRing, translate};
use crate::{naming::NamespaceMapper, remote::Remote};

/// Events waiting for their pod at most.
const PENDING_MAX: usize = 1024;
/// How long an event waits for its pod.
const PENDING_FOR: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// `offload_plugin_remote_events{outcome}`: kept, unchanged (seen already),
/// not_ours (no pod of ours), dropped (no room to wait for the pod).
#[derive(Clone)]
struct EventMetrics(Family<OutcomeLabels, Counter>);

impl EventMetrics {
    fn register(shared: &SharedRegistry) -> Self {
        shared.register("offload_plugin", |r| {
            Self(Registrar::new(r).add(
                "remote_events",
                "Remote pod Events seen by the event watch, by outcome \
                 (kept, unchanged, not_ours, dropped)",
            ))
        })
    }

    fn count(&self, outcome: &'static str) {
        self.0.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// Starts the watch; it ends with `cancel`.
pub fn spawn(
    remote: Arc<Remote>,
    ring: Arc<EventRing>,
    instance: String,
    namespaces: NamespaceMapper,
    registry: &SharedRegistry,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let metrics = EventMetrics::register(registry);
    let api: Api<Event> = Api::all(remote.client().clone());
    let cfg = watcher::Config::default().fields("involvedObject.kind=Pod");
    let stream = watcher(api, cfg).default_backoff().applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut pending: VecDeque<(Instant, Event)> = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let keep = |e: &Event, pending: &mut VecDeque<(Instant, Event)>, first: bool| {
            match capture(&remote, &ring, e, &instance) {
                Some(kept) => metrics.count(if kept { "kept" } else { "unchanged" }),
                None if first && !may_own(&namespaces, e) => metrics.count("not_ours"),
                None if first && pending.len() < PENDING_MAX => {
                    pending.push_back((Instant::now(), e.clone()))
                }
                None if first => metrics.count("dropped"),
                None => return false,
            }
            true
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let waiting = std::mem::take(&mut pending);
                    for (since, e) in waiting {
                        if keep(&e, &mut pending, false) {
                            continue;
                        }
                        if since.elapsed() < PENDING_FOR {
                            pending.push_back((since, e));
                        } else {
                            metrics.count("not_ours");
                        }
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(e)) => {
                        keep(&e, &mut pending, true);
                    }
                    Some(Err(e)) => warn!(error = %e, "remote event watch error (retrying with backoff)"),
                    None => break,
                }
            }
        }
    })
}

/// Whether the event's namespace is one our mapping can produce.
fn may_own(namespaces: &NamespaceMapper, e: &Event) -> bool {
    e.involved_object
        .namespace
        .as_deref()
        .is_some_and(|ns| namespaces.may_own(ns))
}

/// Some(kept?) when the event is about a cached pod of ours, else None.
fn capture(remote: &Remote, ring: &EventRing, e: &Event, instance: &str) -> Option<bool> {
    let obj = &e.involved_object;
    let pod = remote.cached(obj.namespace.as_deref()?, obj.name.as_deref()?)?;
    let captured = translate(e, &pod, instance)?;
    debug!(
        pod = %captured.event.pod.name,
        namespace = %captured.event.pod.namespace,
        reason = %captured.event.reason,
        count = captured.event.count,
        "remote event"
    );
    Some(ring.push(captured))
}
