//! The kubelet machinery on kube-runtime's [`Controller`]: the pods bound to
//! our node (field selector `spec.nodeName=<node>`) are reconciled by at most
//! `--workers` tasks at a time (never two at once for one pod), failures are
//! retried with a jittered exponential backoff (`error_policy`), and pods
//! waiting for a free gateway port are reconciled again as soon as ports are
//! given back (`reconcile_on`).
//!
//! - [`reconcile`] dispatches to the create steps (`create.rs`: adopt,
//!   tunnel, gather, create) or the delete steps (`delete.rs`: remote
//!   delete, release tunnel, remove local); each step ends in an [`Outcome`]
//!   that `reconcile` turns into an [`Action`];
//! - `vanished.rs`: force-deleted pods (the Controller never reconciles a
//!   pod that is gone: the `Delete` events of its watch stream are tapped);
//! - `status_watch.rs`: where statuses come from: the plugin's status-change
//!   stream when it offers one (`status_writer.rs` writes the changes,
//!   coalesced, `status_metrics.rs` counts them), else `status_poll.rs`, the
//!   batched status poller;
//! - `context.rs`: [`Context`], built with a struct literal.
//!
//! Every step is idempotent and restart-safe: the cluster (the `JobID`
//! annotation) and the plugin (its remote pods) are the state, [`Context`]
//! only holds bookkeeping that avoids repeated events and calls.

mod context;
mod create;
mod delete;
mod slim;
mod status_metrics;
mod status_poll;
mod status_watch;
mod status_writer;
mod tunnel_status;
mod vanished;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{self as kcontroller, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use offload_wire::keys::ANNOTATION_JOB_ID;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::client::PluginError;
use crate::payload::MissingRef;
use crate::status::{self, Phase};

pub use context::{Context, State, recorder};
pub use status_poll::{poll_once, run_status_poller};
pub use status_watch::run_status_updates;
pub use vanished::run_vanished;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Missing(#[from] MissingRef),
    #[error("tunnel: {0}")]
    Tunnel(#[from] gateway_manager::Error),
}

impl ControllerError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ControllerError::Kube(_) => "kube",
            ControllerError::Plugin(e) => e.metric_label(),
            ControllerError::Missing(_) => "missing_ref",
            ControllerError::Tunnel(_) => "tunnel",
        }
    }
}

/// How a reconcile ended (errors go to [`error_policy`] instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more to do until the pod changes.
    Done,
    /// Not now (a referenced object or a gateway port is missing): try
    /// again after the pod's backoff.
    Retry,
}

pub(crate) fn uid(p: &Pod) -> String {
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

/// One pass over a pod of our node.
pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let pod_uid = uid(&pod);
    let span = info_span!("reconcile", namespace = %pod.namespace().unwrap_or_default(), pod = %pod.name_any(), uid = %pod_uid);
    let _running = ctx.start_reconcile(&pod_uid);
    let outcome = async {
        if pod.metadata.deletion_timestamp.is_some() {
            delete::handle_delete(&ctx, &pod).await
        } else if ctx.has_vanished(&pod_uid) {
            // The force-delete watch saw it go before our store did.
            Ok(Outcome::Done)
        } else if status::local_phase(&pod).is_terminal() {
            // Final: nothing serves on its ports any more.
            delete::release_finished(&ctx, &pod).await;
            Ok(Outcome::Done)
        } else if job_id(&pod).is_none() {
            create::handle_create(&ctx, &pod).await
        } else {
            Ok(Outcome::Done)
        }
    }
    .instrument(span)
    .await?;
    Ok(match outcome {
        Outcome::Done => {
            ctx.forget_failures(&pod_uid);
            Action::await_change()
        }
        Outcome::Retry => Action::requeue(ctx.next_retry(&pod_uid)),
    })
}

/// A failed reconcile is retried after the pod's backoff (jittered).
pub fn error_policy(pod: Arc<Pod>, err: &ControllerError, ctx: Arc<Context>) -> Action {
    let delay = ctx.next_retry(&uid(&pod));
    warn!(pod = %pod.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// What the Controller's pod watch tells besides the pods to reconcile.
pub struct Taps {
    /// Turns `true` once the store holds the initial list.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// Pods that left the API (force-deleted, or removed by us).
    pub gone: UnboundedReceiver<Pod>,
}

/// The Controller over the pods of our node, before it runs: its store is
/// what [`Context::pods`] must be. Its watch stream is ours (a reflector
/// feeding the Controller) so that the events the Controller does not act
/// on, the initial list being complete and pods vanishing, are seen too, in
/// order with the store.
pub fn pod_controller(
    client: &kube::Client,
    node: &str,
    workers: usize,
    wake: UnboundedReceiver<ObjectRef<Pod>>,
) -> (Controller<Pod>, Taps) {
    let api: Api<Pod> = Api::all(client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let (store, writer) = reflector::store();
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let (gone_tx, gone) = tokio::sync::mpsc::unbounded_channel();
    // After a re-list (watch expired or desynced) the Controller looks the
    // listed pods up before the store has swapped its list in (at
    // `InitDone`), so a pod bound while the watch was down would be dropped
    // as not found. Every pod of the new list is queued again once it is in
    // the store. The first list needs none of this: the Controller waits for
    // the store before it starts.
    let (relist_tx, relist) = tokio::sync::mpsc::unbounded_channel();
    let listed = store.clone();
    let pods = watcher(api, cfg)
        .default_backoff()
        // Nothing reads the managed fields, and once a pod is offloaded
        // (it has its job id) most of its spec is not read again: at
        // 10,000 pods they would be most of the store.
        .modify(|p| {
            p.metadata.managed_fields = None;
            if job_id(p).is_some() && p.metadata.deletion_timestamp.is_none() {
                slim::slim(p);
            }
        })
        .reflect(writer)
        .inspect_ok(move |ev| match ev {
            watcher::Event::InitDone => {
                let relisted = synced_tx.send_replace(true);
                if relisted {
                    for p in listed.state() {
                        let _ = relist_tx.send(ObjectRef::from_obj(p.as_ref()));
                    }
                }
            }
            watcher::Event::Delete(p) => {
                // Closed only when the provider stops.
                let _ = gone_tx.send(p.clone());
            }
            _ => {}
        })
        .applied_objects();
    let concurrency = u16::try_from(workers.max(1)).unwrap_or(u16::MAX);
    let controller = Controller::for_stream(pods, store)
        .with_config(kcontroller::Config::default().concurrency(concurrency))
        .reconcile_on(UnboundedReceiverStream::new(wake))
        .reconcile_on(UnboundedReceiverStream::new(relist));
    (controller, Taps { synced, gone })
}

/// Run `controller` until `cancel`: no new reconcile starts after it, the
/// running ones finish.
pub async fn run(controller: Controller<Pod>, ctx: Arc<Context>, cancel: CancellationToken) {
    controller
        .graceful_shutdown_on(async move { cancel.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((pod, _)) => debug!(pod = %pod.name, "reconciled"),
                // A pod that left the store before its turn: nothing to do.
                Err(kcontroller::Error::ObjectNotFound(r)) => debug!(pod = %r, "pod gone"),
                // Reconcile failures were logged by `error_policy`.
                Err(kcontroller::Error::ReconcilerFailed(..)) => {}
                Err(e) => warn!(error = %e, "pod controller"),
            }
        })
        .await;
}

/// Wait until the store has seen the initial list. Not through
/// `Store::wait_until_ready`: of several tasks waiting on it at once only
/// one is woken, and the Controller waits on it too.
pub async fn wait_ready(synced: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = synced.wait_for(|s| *s).await;
}

/// Used by tests: the phase counts in the store.
pub fn phases(store: &Store<Pod>) -> Vec<(String, Phase)> {
    store
        .state()
        .iter()
        .map(|p| (p.name_any(), status::local_phase(p)))
        .collect()
}

/// The object reference of a pod (the Controller's queue key).
pub(crate) fn key(pod: &Pod) -> ObjectRef<Pod> {
    ObjectRef::from_obj(pod)
}
