//! Local status writes of the changes the plugin streams: at most
//! `--status-write-concurrency` at once, never two for one pod, and the
//! changes of a pod that arrive before its write starts coalesced into one
//! write of the latest, so the local apiserver sees at most one request per
//! status change (none when the change does not alter the local status).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::ObjectRef;
use offload_wire::PodStatus as RemoteStatus;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::status_metrics::StatusMetrics;
use super::{Context, job_id, uid};
use crate::status::coalesce::{Coalescer, Pushed};
use crate::status::stream::gone_status;
use crate::status::{self, map_remote_status, status_changed};
use crate::tunnel;

/// Attempts of one write before it is left to the next change or resync.
const WRITE_ATTEMPTS: u32 = 5;
/// How often changes of pods not offloaded yet are tried again.
const PARKED_RETRY: Duration = Duration::from_secs(1);
/// How long such a change is kept (then the resync has it).
const PARK_AT_MOST: Duration = Duration::from_secs(600);

/// One remote change of one pod.
#[derive(Clone, Debug)]
pub struct Update {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's remote status; `None`: its remote pod is gone.
    pub remote: Option<RemoteStatus>,
    /// `watch` or `resync` (metrics).
    pub source: &'static str,
    /// When the first change not written yet arrived.
    pub received: Instant,
}

impl Update {
    pub fn status(remote: RemoteStatus, source: &'static str) -> Update {
        Update {
            namespace: remote.namespace.clone(),
            name: remote.name.clone(),
            uid: remote.uid.clone(),
            remote: Some(remote),
            source,
            received: Instant::now(),
        }
    }

    pub fn gone(namespace: String, name: String, uid: String) -> Update {
        Update {
            namespace,
            name,
            uid,
            remote: None,
            source: "watch",
            received: Instant::now(),
        }
    }
}

/// Hands changes to the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusWriter {
    tx: UnboundedSender<Update>,
}

impl StatusWriter {
    pub fn submit(&self, u: Update) {
        // Closed only when the provider stops.
        let _ = self.tx.send(u);
    }
}

/// The writer and its task (run it until `cancel`).
pub fn status_writer(
    ctx: Arc<Context>,
    metrics: StatusMetrics,
    cancel: CancellationToken,
) -> (StatusWriter, impl Future<Output = ()>) {
    let (tx, rx) = unbounded_channel();
    (StatusWriter { tx }, dispatch(ctx, metrics, rx, cancel))
}

/// Whether `u` says more than "still waiting": its remote pod is gone, or a
/// container runs or ended.
fn urgent(u: &Update) -> bool {
    let Some(r) = &u.remote else {
        return true;
    };
    r.containers
        .iter()
        .chain(r.init_containers.iter())
        .filter_map(|c| c.state.as_ref())
        .any(|s| s.running.is_some() || s.terminated.is_some())
}

/// The newer change wins; the lag counts from the first one.
fn merge(old: Update, new: Update) -> Update {
    Update {
        received: old.received.min(new.received),
        ..new
    }
}

async fn dispatch(
    ctx: Arc<Context>,
    metrics: StatusMetrics,
    mut rx: UnboundedReceiver<Update>,
    cancel: CancellationToken,
) {
    let limit = ctx.config.status_write_concurrency.max(1);
    // A pod that started, ended or vanished is written before the pods
    // that are still pending remotely: during a burst of thousands of
    // creates, their waiting reasons must not delay a transition.
    let mut queue: Coalescer<Update> = Coalescer::with_priority(urgent);
    let mut running = FuturesUnordered::new();
    // Changes of pods whose job id is not in the store yet (the remote pod
    // changed before the create's annotation came back, or a restarted
    // provider has not adopted it yet): tried again every second.
    let mut parked: HashMap<String, Update> = HashMap::new();
    let mut retry = tokio::time::interval(PARKED_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while running.len() < limit {
            let Some((key, u)) = queue.take() else { break };
            running.push(write_one(Arc::clone(&ctx), metrics.clone(), key, u));
        }
        metrics.pending(queue.pending() + parked.len());
        tokio::select! {
            _ = cancel.cancelled() => return,
            u = rx.recv() => match u {
                Some(u) => {
                    let key = u.uid.clone();
                    // A newer change supersedes a parked one.
                    parked.remove(&key);
                    if queue.push(&key, u, merge) == Pushed::Coalesced {
                        metrics.coalesced();
                    }
                }
                None => return,
            },
            Some((key, park)) = running.next(), if !running.is_empty() => {
                queue.done(&key);
                // Not when a newer change came meanwhile: it would be
                // written after it.
                let park = park.filter(|u| u.received.elapsed() < PARK_AT_MOST);
                if let Some(u) = park.filter(|_| !queue.contains(&key)) {
                    parked.insert(key, u);
                }
            }
            _ = retry.tick(), if !parked.is_empty() => {
                for (key, u) in parked.drain() {
                    // A change queued meanwhile is newer: it stays.
                    queue.push(&key, u, |queued, _parked| queued);
                }
            }
        }
    }
}

/// Where the change of `u` goes.
enum Target {
    /// The pod, followed: write.
    Followed(Arc<Pod>),
    /// The pod is there, live, but not offloaded yet (no job id in the
    /// store): keep the change for later.
    NotYet,
    /// Gone, another pod of that name, final, or being deleted.
    Skip,
}

fn target(ctx: &Context, u: &Update) -> Target {
    let Some(pod) = ctx.pods.get(&ObjectRef::new(&u.name).within(&u.namespace)) else {
        return Target::Skip;
    };
    if uid(&pod) != u.uid
        || pod.metadata.deletion_timestamp.is_some()
        || !status::needs_polling(&pod)
    {
        Target::Skip
    } else if job_id(&pod).is_none() {
        Target::NotYet
    } else {
        Target::Followed(pod)
    }
}

/// Write the status of one pod (retried a few times on apiserver errors;
/// the pod stays in flight meanwhile, so a newer change waits for it and is
/// written after). Returns the pod's key, and the change when it must wait
/// for the pod's job id.
async fn write_one(
    ctx: Arc<Context>,
    metrics: StatusMetrics,
    key: String,
    u: Update,
) -> (String, Option<Update>) {
    for attempt in 0..WRITE_ATTEMPTS {
        let pod = match target(&ctx, &u) {
            Target::Followed(pod) => pod,
            Target::NotYet => return (key, Some(u)),
            Target::Skip => break,
        };
        let remote = u.remote.clone().unwrap_or_else(|| gone_status(&pod));
        let now = Timestamp::now();
        let mut st = map_remote_status(&pod, &remote, Some(&ctx.host_ip), now);
        if let Some(gm) = &ctx.tunnel {
            tunnel::add_condition(gm, &pod, &mut st, now);
        }
        if !status_changed(&pod, &st) {
            break;
        }
        match ctx.write_status(&pod, &st).await {
            Ok(()) => {
                metrics.write(u.source);
                metrics.write_delay(u.received.elapsed());
                if let Some(lag) = new_transition_lag(&pod, &remote, Timestamp::now()) {
                    metrics.lag(lag);
                }
                break;
            }
            Err(e) if attempt + 1 < WRITE_ATTEMPTS => {
                debug!(pod = %u.name, namespace = %u.namespace, error = %e, "status write failed; retrying");
                tokio::time::sleep(ctx.retry.jittered(attempt)).await;
            }
            Err(e) => {
                warn!(pod = %u.name, namespace = %u.namespace, error = %e, "cannot write status; the next change or resync writes it");
            }
        }
    }
    (key, None)
}

/// The latest container start or finish time of `statuses`.
fn latest_transition<'a>(statuses: impl Iterator<Item = &'a ContainerStatus>) -> Option<Timestamp> {
    statuses
        .filter_map(|c| c.state.as_ref())
        .flat_map(|s| {
            let running = s.running.as_ref().and_then(|r| r.started_at.as_ref());
            let finished = s.terminated.as_ref().and_then(|t| t.finished_at.as_ref());
            [running, finished]
        })
        .flatten()
        .map(|t: &Time| t.0)
        .max()
}

/// How long ago the remote transition that this write shows happened: only
/// when the remote status carries a container start or finish newer than any
/// in the local status (other writes show no new transition).
fn new_transition_lag(
    local: &Pod,
    remote: &RemoteStatus,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let remote_at = latest_transition(remote.containers.iter().chain(&remote.init_containers))?;
    let st = local.status.as_ref();
    let local_at = latest_transition(
        st.and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .chain(
                st.and_then(|s| s.init_container_statuses.as_ref())
                    .into_iter()
                    .flatten(),
            ),
    );
    if local_at.is_some_and(|l| l >= remote_at) {
        return None;
    }
    let lag = now.duration_since(remote_at);
    Some(if lag.is_negative() {
        std::time::Duration::ZERO
    } else {
        lag.unsigned_abs()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use testbed::fixtures::{running, terminated};

    #[test]
    fn merge_keeps_the_newest_change_and_the_first_arrival() {
        let first = Update::gone("ns".into(), "p".into(), "u".into());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = Update::status(
            RemoteStatus {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                ..Default::default()
            },
            "watch",
        );
        let m = merge(first.clone(), second);
        assert!(m.remote.is_some(), "the newer change");
        assert_eq!(m.received, first.received);
    }

    #[test]
    fn lag_is_observed_only_for_a_newer_transition() {
        let mut pod = testbed::fixtures::pod("p")
            .container(testbed::fixtures::container("main"))
            .build();
        let remote = RemoteStatus {
            containers: vec![terminated("main", 3)],
            ..Default::default()
        };
        let finished = latest_transition(remote.containers.iter()).expect("a finish time");
        let now = finished + jiff::SignedDuration::from_millis(1500);
        assert_eq!(
            new_transition_lag(&pod, &remote, now),
            Some(std::time::Duration::from_millis(1500))
        );
        // Already shown locally: no new transition.
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            container_statuses: Some(remote.containers.clone()),
            ..Default::default()
        });
        assert_eq!(new_transition_lag(&pod, &remote, now), None);
        // A remote clock ahead of ours counts as no lag, not a negative one.
        let fresh = RemoteStatus {
            containers: vec![running("main")],
            ..Default::default()
        };
        let started = latest_transition(fresh.containers.iter()).expect("a start time");
        let before = started - jiff::SignedDuration::from_secs(10);
        let other = testbed::fixtures::pod("q").build();
        assert_eq!(
            new_transition_lag(&other, &fresh, before),
            Some(std::time::Duration::ZERO)
        );
    }
}
