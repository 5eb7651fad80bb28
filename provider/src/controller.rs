//! The kubelet machinery: pod watcher -> bounded work queue -> create /
//! delete through the plugin, a batched status poller, Events, and the
//! restart-safe state rebuilt from the pods on the node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus as LocalStatus, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use offload_wire::keys::ANNOTATION_JOB_ID;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::client::{PluginClient, PluginError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::payload::{self, Fetched, MissingRef};
use crate::queue::{Backoff, WorkQueue};
use crate::status::{self, Phase};
use crate::tunnel;
use gateway_manager::GatewayManager;

/// The field manager of the provider for objects (node, lease, pod annotations).
pub const FIELD_MANAGER: &str = "offload-provider";
/// The field manager for status subresources. Kubernetes 1.20 keeps no
/// per-subresource managed fields: an apply to `/status` under the same
/// manager would drop the labels and annotations that manager applied to the
/// object (the node's labels, the pod's `JobID`).
pub const STATUS_FIELD_MANAGER: &str = "offload-provider-status";

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Missing(#[from] MissingRef),
}

impl ControllerError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ControllerError::Kube(_) => "kube",
            ControllerError::Plugin(e) => e.metric_label(),
            ControllerError::Missing(_) => "missing_ref",
        }
    }
}

/// In-memory bookkeeping per pod UID (rebuilt from the cluster after a restart).
#[derive(Debug, Default)]
struct Track {
    first_seen: Option<Instant>,
    missing_reported: Option<String>,
    create_failure_reported: bool,
    delete_failure_reported: bool,
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub plugin: PluginClient,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub pods: Store<Pod>,
    pub queue: Arc<WorkQueue<ObjectRef<Pod>>>,
    pub host_ip: String,
    started: Timestamp,
    tracks: Mutex<HashMap<String, Track>>,
    /// UIDs we removed ourselves (their watch Delete needs no plugin call).
    removed: Mutex<HashSet<String>>,
    /// UIDs whose remote delete is in flight.
    deleting: Mutex<HashSet<String>>,
    /// The tunnel's local half (`--gateway-address`), if on.
    pub tunnel: Option<Arc<GatewayManager>>,
    /// Pods waiting for a free gateway port: queued again as soon as a pod
    /// gives its ports back, not only at their next backoff retry.
    port_waiters: Mutex<HashSet<Key>>,
}

type Key = ObjectRef<Pod>;

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

pub fn job_id(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_JOB_ID))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        plugin: PluginClient,
        config: Arc<Config>,
        metrics: Metrics,
        pods: Store<Pod>,
        host_ip: String,
        cancel: CancellationToken,
        tunnel: Option<Arc<GatewayManager>>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(config.node_name.clone()),
            },
        );
        let queue = WorkQueue::new(Backoff::new(config.retry_base, config.retry_max), cancel);
        Arc::new(Context {
            client,
            plugin,
            config,
            metrics,
            recorder,
            pods,
            queue,
            host_ip,
            started: Timestamp::now(),
            tracks: Mutex::default(),
            removed: Mutex::default(),
            deleting: Mutex::default(),
            tunnel,
            port_waiters: Mutex::default(),
        })
    }

    fn track<R>(&self, uid: &str, f: impl FnOnce(&mut Track) -> R) -> R {
        let mut t = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        f(t.entry(uid.to_string()).or_default())
    }

    fn untrack(&self, uid: &str) {
        self.tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn event(&self, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
        self.metrics.event(reason);
        let ev = KEvent {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// Write the pod status through the status subresource (server-side apply).
    pub async fn write_status(&self, pod: &Pod, st: &LocalStatus) -> Result<(), kube::Error> {
        let ns = pod.namespace().unwrap_or_default();
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name_any(), "namespace": ns},
            "status": st,
        });
        self.pods_api(&ns)
            .patch_status(
                &pod.name_any(),
                &PatchParams::apply(STATUS_FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        self.metrics.status_write();
        Ok(())
    }

    async fn set_job_id(&self, pod: &Pod, jid: &str) -> Result<(), kube::Error> {
        let ns = pod.namespace().unwrap_or_default();
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name_any(), "namespace": ns, "annotations": {ANNOTATION_JOB_ID: jid}},
        });
        self.pods_api(&ns)
            .patch(
                &pod.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }

    async fn fetch(&self, ns: &str, refs: &payload::PodRefs) -> Result<Fetched, kube::Error> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut f = Fetched::default();
        for name in refs.config_maps.keys() {
            f.config_maps.insert(name.clone(), cms.get_opt(name).await?);
        }
        for name in refs.secrets.keys() {
            f.secrets.insert(name.clone(), secrets.get_opt(name).await?);
        }
        Ok(f)
    }
}

/// One pass over a queued pod.
pub async fn reconcile(ctx: &Arc<Context>, key: &Key) {
    let Some(pod) = ctx.pods.get(key) else {
        return;
    };
    let span = info_span!("reconcile", namespace = %key.namespace.as_deref().unwrap_or(""), pod = %key.name, uid = %uid(&pod));
    async {
        if pod.metadata.deletion_timestamp.is_some() {
            handle_delete(ctx, key, &pod).await;
        } else if status::local_phase(&pod).is_terminal() {
            // Final: nothing serves on its ports any more.
            if ctx.tunnel.as_ref().is_some_and(|gm| gm.knows(&uid(&pod))) {
                release_tunnel(ctx, &pod).await;
            }
        } else if job_id(&pod).is_none() {
            handle_create(ctx, key, &pod).await;
        }
    }
    .instrument(span)
    .await
}

async fn handle_create(ctx: &Arc<Context>, key: &Key, pod: &Pod) {
    let pod_uid = uid(pod);
    let first_seen = ctx.track(&pod_uid, |t| *t.first_seen.get_or_insert_with(Instant::now));
    debug!(attempt = ctx.queue.failures(key), "create");

    // A pod that existed before we started may have been created remotely by
    // a previous run that died before recording the job id: ask first, so
    // nothing is created twice even with a non-idempotent plugin.
    let created_before_start = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|t| t.0 < ctx.started);
    if created_before_start
        && ctx.queue.failures(key) == 0
        && let Ok(answer) = ctx.plugin.status(std::slice::from_ref(pod)).await
        && let Some(s) = answer
            .iter()
            .find(|s| s.uid == pod_uid && !s.jid.is_empty())
    {
        info!(jid = %s.jid, "adopting remote job created by a previous run");
        match ctx.set_job_id(pod, &s.jid).await {
            Ok(()) => ctx.queue.forget(key),
            Err(e) => {
                warn!(error = %e, "cannot record job id");
                ctx.queue.retry(key.clone());
            }
        }
        return;
    }

    // Tunnel first: the annotations must travel with the pod to the plugin.
    let tunneled;
    let pod = match prepare_tunnel(ctx, key, pod).await {
        Some(Some(p)) => {
            tunneled = p;
            &tunneled
        }
        Some(None) => pod,
        None => return,
    };
    let ns = pod.namespace().unwrap_or_default();
    let refs = payload::references(pod);
    let fetched = match ctx.fetch(&ns, &refs).await {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "cannot read referenced objects");
            ctx.queue.retry(key.clone());
            return;
        }
    };
    let data = match payload::build_payload(
        pod,
        &refs,
        &fetched,
        ctx.config.ship_service_account_tokens,
    ) {
        Ok(d) => d,
        Err(missing) => {
            let msg = missing.to_string();
            if first_seen.elapsed() > ctx.config.missing_ref_timeout {
                fail_pod(
                    ctx,
                    pod,
                    "ConfigNotFound",
                    &format!("{msg} after {:?}", ctx.config.missing_ref_timeout),
                )
                .await;
                ctx.queue.forget(key);
                return;
            }
            let new = ctx.track(&pod_uid, |t| {
                let new = t.missing_reported.as_deref() != Some(msg.as_str());
                t.missing_reported = Some(msg.clone());
                new
            });
            if new {
                info!(%msg, "waiting for a referenced object");
                let st = status::waiting_status(
                    pod,
                    "CreateContainerConfigError",
                    &msg,
                    Timestamp::now(),
                );
                if let Err(e) = ctx.write_status(pod, &st).await {
                    warn!(error = %e, "cannot write status");
                }
                ctx.event(
                    pod,
                    EventType::Warning,
                    "MissingReference",
                    "Create",
                    format!("{msg}; retrying"),
                )
                .await;
            }
            ctx.queue.retry(key.clone());
            return;
        }
    };
    match ctx.plugin.create(&data).await {
        Ok(cs) => {
            if !cs.pod_uid.is_empty() && cs.pod_uid != pod_uid {
                warn!(answer_uid = %cs.pod_uid, "plugin answered create for another pod uid");
            }
            let jid = if cs.pod_jid.is_empty() {
                pod_uid.clone()
            } else {
                cs.pod_jid.clone()
            };
            if let Err(e) = ctx.set_job_id(pod, &jid).await {
                // Retried; the plugin create is idempotent by pod uid.
                warn!(error = %e, "cannot record job id");
                ctx.queue.retry(key.clone());
                return;
            }
            ctx.queue.forget(key);
            ctx.track(&pod_uid, |t| {
                t.missing_reported = None;
                t.create_failure_reported = false;
            });
            info!(%jid, "offloaded");
            ctx.event(
                pod,
                EventType::Normal,
                "Offloaded",
                "Create",
                format!("created remotely, job id {jid}"),
            )
            .await;
        }
        Err(PluginError::Status { status, body })
            if (400..500).contains(&status) && status != 408 && status != 429 =>
        {
            // The plugin refused the pod (policy, invalid spec): final.
            fail_pod(
                ctx,
                pod,
                "OffloadFailed",
                &format!("plugin refused the pod (HTTP {status}): {body}"),
            )
            .await;
            ctx.queue.forget(key);
        }
        Err(e) => {
            let report = ctx.track(&pod_uid, |t| {
                !std::mem::replace(&mut t.create_failure_reported, true)
            });
            let delay = ctx.queue.retry(key.clone());
            warn!(error = %e, retry_in = ?delay, "create failed");
            if report {
                ctx.event(
                    pod,
                    EventType::Warning,
                    "OffloadFailed",
                    "Create",
                    format!("{e}; retrying"),
                )
                .await;
            }
        }
    }
}

/// Gateway ports, annotations and Services for the pod before it is
/// offloaded. `Some(Some(pod))`: send this annotated pod; `Some(None)`: no
/// tunnel (off, or no TCP port); `None`: not now, the pod was requeued (ports
/// exhausted: a Warning event and a waiting status say so).
async fn prepare_tunnel(ctx: &Arc<Context>, key: &Key, pod: &Pod) -> Option<Option<Pod>> {
    let Some(gm) = &ctx.tunnel else {
        return Some(None);
    };
    let result = gm.prepare_pod(pod).await;
    if !matches!(result, Err(gateway_manager::Error::Alloc(_))) {
        ctx.port_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
    match result {
        Ok(Some(t)) => Some(Some(tunnel::annotated(pod, &t))),
        Ok(None) => Some(None),
        Err(gateway_manager::Error::Alloc(e)) => {
            ctx.port_waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone());
            // gateway-manager recorded the Warning event on the pod.
            ctx.metrics.event("TunnelPortsExhausted");
            let msg = format!("waiting for gateway ports: {e}");
            let new = ctx.track(&uid(pod), |t| {
                let new = t.missing_reported.as_deref() != Some(msg.as_str());
                t.missing_reported = Some(msg.clone());
                new
            });
            let delay = ctx.queue.retry(key.clone());
            warn!(error = %e, retry_in = ?delay, "no gateway ports for the pod");
            if new {
                let st =
                    status::waiting_status(pod, "TunnelPortsExhausted", &msg, Timestamp::now());
                if let Err(e) = ctx.write_status(pod, &st).await {
                    warn!(error = %e, "cannot write status");
                }
            }
            None
        }
        Err(e) => {
            let delay = ctx.queue.retry(key.clone());
            warn!(error = %e, retry_in = ?delay, "cannot prepare the tunnel");
            None
        }
    }
}

/// Give the pod's gateway ports back and remove its tunnel Services.
async fn release_tunnel(ctx: &Arc<Context>, pod: &Pod) {
    if let Some(gm) = &ctx.tunnel
        && tunnel::has_tunnel(gm, pod)
    {
        match gm.release_pod(pod).await {
            Ok(()) => wake_port_waiters(ctx),
            Err(e) => warn!(pod = %pod.name_any(), error = %e, "cannot release the tunnel"),
        }
    }
}

/// Ports were given back: pods waiting for some try again now.
fn wake_port_waiters(ctx: &Context) {
    let waiting: Vec<Key> = ctx
        .port_waiters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    for k in waiting {
        ctx.queue.add(k);
    }
}

async fn fail_pod(ctx: &Arc<Context>, pod: &Pod, reason: &str, msg: &str) {
    warn!(reason, %msg, "pod failed before offload");
    let st = status::failed_status(pod, reason, msg, Timestamp::now());
    if let Err(e) = ctx.write_status(pod, &st).await {
        warn!(error = %e, "cannot write status");
    }
    ctx.event(
        pod,
        EventType::Warning,
        "OffloadFailed",
        "Create",
        msg.to_string(),
    )
    .await;
}

async fn handle_delete(ctx: &Arc<Context>, key: &Key, pod: &Pod) {
    let pod_uid = uid(pod);
    // Kubernetes' deletionTimestamp is "request + grace": count from the request.
    let waited = pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| {
            status::deletion_requested_ago(
                t.0,
                pod.metadata.deletion_grace_period_seconds.unwrap_or(0),
                Timestamp::now(),
            )
        })
        .unwrap_or_default();
    // Already deleted remotely by an earlier pass (the store can lag behind
    // our own local delete): only make sure the local pod is gone.
    let done_remotely = ctx
        .removed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&pod_uid);
    let remote = if done_remotely {
        Ok(())
    } else {
        // A terminal pod is removed by the apiserver at once: its watch
        // Delete must not send a second delete while this one is in flight.
        ctx.deleting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod_uid.clone());
        let r = ctx.plugin.delete(pod).await;
        ctx.deleting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pod_uid);
        r
    };
    let remote = match remote {
        Ok(()) => true,
        Err(e) => {
            if waited < ctx.config.delete_timeout {
                let report = ctx.track(&pod_uid, |t| {
                    !std::mem::replace(&mut t.delete_failure_reported, true)
                });
                let delay = ctx.queue.retry(key.clone());
                warn!(error = %e, retry_in = ?delay, "remote delete failed");
                if report {
                    ctx.event(
                        pod,
                        EventType::Warning,
                        "DeleteFailed",
                        "Delete",
                        format!("remote delete failed: {e}; retrying"),
                    )
                    .await;
                }
                return;
            }
            ctx.event(
                pod,
                EventType::Warning,
                "DeleteTimeout",
                "Delete",
                format!("remote delete not confirmed after {:?} ({e}); removing the pod locally, the remote side may keep leftovers", ctx.config.delete_timeout),
            )
            .await;
            false
        }
    };
    ctx.removed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pod_uid.clone());
    if let Some(gm) = &ctx.tunnel
        && tunnel::has_tunnel(gm, pod)
    {
        if let Err(e) = gm.release_pod(pod).await {
            warn!(error = %e, "cannot release the tunnel");
            ctx.queue.retry(key.clone());
            return;
        }
        wake_port_waiters(ctx);
    }
    let ns = pod.namespace().unwrap_or_default();
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(pod_uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match ctx.pods_api(&ns).delete(&pod.name_any(), &dp).await {
        Ok(_) => {
            info!(remote_confirmed = remote, "pod removed");
            ctx.queue.forget(key);
            ctx.untrack(&pod_uid);
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            ctx.queue.forget(key);
            ctx.untrack(&pod_uid);
        }
        Err(e) => {
            warn!(error = %e, "cannot remove the local pod");
            ctx.queue.retry(key.clone());
        }
    }
}

/// A pod vanished from the API without us (force-deleted): delete it
/// remotely too, with retries, in the background.
fn on_vanished(ctx: &Arc<Context>, pod: Pod) {
    let pod_uid = uid(&pod);
    ctx.untrack(&pod_uid);
    let ours = ctx
        .removed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pod_uid);
    let in_flight = ctx
        .deleting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&pod_uid);
    if ours || in_flight {
        return;
    }
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let backoff = Backoff::new(ctx.config.retry_base, ctx.config.retry_max);
        let deadline = Instant::now() + ctx.config.delete_timeout;
        let mut attempt = 0;
        release_tunnel(&ctx, &pod).await;
        while let Err(e) = ctx.plugin.delete(&pod).await {
            if Instant::now() > deadline {
                warn!(pod = %pod.name_any(), error = %e, "giving up remote delete of a force-deleted pod");
                return;
            }
            tokio::time::sleep(backoff.delay(attempt)).await;
            attempt += 1;
        }
        info!(pod = %pod.name_any(), "force-deleted pod removed remotely");
    });
}

/// The watch (only pods with `spec.nodeName` = our node) feeding the store
/// and the queue.
pub async fn run_watcher(
    ctx: Arc<Context>,
    writer: reflector::store::Writer<Pod>,
    cancel: CancellationToken,
) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let stream = watcher(api, cfg).default_backoff().reflect(writer);
    let mut stream = std::pin::pin!(stream);
    // The reflector only publishes a (re)list into the store at `InitDone`:
    // keys seen during the list are queued then, or workers would find
    // nothing in the store and drop them (fatal for pods that get no later
    // event, e.g. never-created pods after a restart).
    let mut listed: Vec<Key> = vec![];
    loop {
        let ev = tokio::select! {
            ev = stream.try_next() => ev,
            _ = cancel.cancelled() => return,
        };
        match ev {
            Ok(Some(watcher::Event::Apply(p))) => ctx.queue.add(ObjectRef::from_obj(&p)),
            Ok(Some(watcher::Event::InitApply(p))) => listed.push(ObjectRef::from_obj(&p)),
            Ok(Some(watcher::Event::Init)) => listed.clear(),
            Ok(Some(watcher::Event::InitDone)) => {
                for k in listed.drain(..) {
                    ctx.queue.add(k);
                }
            }
            Ok(Some(watcher::Event::Delete(p))) => on_vanished(&ctx, p),
            Ok(None) => return,
            Err(e) => warn!(error = %e, "pod watch error"),
        }
    }
}

/// The bounded pool of workers.
pub async fn run_workers(ctx: Arc<Context>) {
    let n = ctx.config.workers.max(1);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let ctx = Arc::clone(&ctx);
        set.spawn(async move {
            while let Some(key) = ctx.queue.next().await {
                reconcile(&ctx, &key).await;
                ctx.queue.done(&key);
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Poll the plugin for the status of every followed pod, in batches, and
/// write what changed.
pub async fn run_status_poller(ctx: Arc<Context>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        poll_once(&ctx).await;
    }
}

/// One status round. Public for tests and the benchmark.
pub async fn poll_once(ctx: &Arc<Context>) {
    let all = ctx.pods.state();
    let mut counts: HashMap<Phase, i64> = HashMap::new();
    for p in &all {
        *counts.entry(status::local_phase(p)).or_default() += 1;
    }
    ctx.metrics
        .set_pods(&counts.into_iter().collect::<Vec<_>>());
    ctx.metrics
        .set_queue(ctx.queue.depth(), ctx.queue.in_flight());

    let followed: Vec<Pod> = all
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && job_id(p).is_some()
                && status::needs_polling(p)
        })
        .map(|p| {
            let mut p = (**p).clone();
            p.metadata.managed_fields = None;
            p
        })
        .collect();
    if followed.is_empty() {
        return;
    }
    let batches: Vec<Vec<Pod>> = followed
        .chunks(ctx.config.status_batch.max(1))
        .map(<[Pod]>::to_vec)
        .collect();
    let answers = futures::stream::iter(batches)
        .map(|b| {
            let plugin = ctx.plugin.clone();
            async move { plugin.status(&b).await }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let mut by_uid = HashMap::new();
    for a in answers {
        match a {
            Ok(list) => {
                for s in list {
                    by_uid.insert(s.uid.clone(), s);
                }
            }
            Err(e) => debug!(error = %e, "status poll failed"),
        }
    }
    let now = Timestamp::now();
    let writes: Vec<(Pod, LocalStatus)> = followed
        .into_iter()
        .filter_map(|p| {
            let r = by_uid.get(&uid(&p))?;
            // Echo check: interLink matches by uid + namespace + name.
            if r.name != p.name_any() || r.namespace != p.namespace().unwrap_or_default() {
                return None;
            }
            // The store may be fresher than the copy we sent.
            let current = ctx
                .pods
                .get(&ObjectRef::from_obj(&p))
                .map(|p| (*p).clone())
                .unwrap_or(p);
            let mut st = status::map_remote_status(&current, r, Some(&ctx.host_ip), now);
            if let Some(gm) = &ctx.tunnel {
                tunnel::add_condition(gm, &current, &mut st, now);
            }
            status::status_changed(&current, &st).then_some((current, st))
        })
        .collect();
    futures::stream::iter(writes)
        .map(|(p, st)| {
            let ctx = Arc::clone(ctx);
            async move {
                if let Err(e) = ctx.write_status(&p, &st).await {
                    warn!(pod = %p.name_any(), error = %e, "cannot write status");
                }
            }
        })
        .buffer_unordered(ctx.config.workers.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// Wait until the store has seen the initial list.
pub async fn wait_ready(store: &Store<Pod>) {
    let _ = store.wait_until_ready().await;
}

/// Used by tests: the phase counts in the store.
pub fn phases(store: &Store<Pod>) -> Vec<(String, Phase)> {
    store
        .state()
        .iter()
        .map(|p| (p.name_any(), status::local_phase(p)))
        .collect()
}
