//! Kubernetes I/O on the remote cluster: the thin layer around the pure logic.
//!
//! - remote pods are watched once (kube-runtime reflector, label-selected on
//!   our managed-by label, plain list+watch: no streaming lists, which the
//!   1.20 test apiserver lacks) and status is answered from that cache, which
//!   keeps only what is read (`strip`) and is indexed by local pod UID too
//!   (`index`); every event also goes to a [`PodTap`] (the status watch);
//! - namespaces are created only when missing, with our labels, and never
//!   deleted; create waits for the namespace's `default` ServiceAccount (and,
//!   before 1.24, its token Secret), without which pods are refused;
//! - every object is *created* (POST), never applied over another's: a
//!   name that exists already is taken only if its labels say it is ours
//!   (our managed-by, the local pod's UID, this instance), else the create is
//!   a 409 and what it made is rolled back (`owned`). A plain create also lets
//!   an older apiserver ignore fields it does not know, where server-side
//!   apply fails with "field not declared in schema";
//! - ConfigMaps/Secrets are owned by the remote pod, so the garbage collector
//!   removes them with it; deletes carry a UID precondition and only touch
//!   pods whose labels say they are ours.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{AsyncBufRead, StreamExt};
use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Namespace, Pod, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, Resource,
    api::LogParams,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use offload_runtime::kubeapi;
use offload_wire::keys;
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{metrics::Metrics, translate::RemotePlan};

/// Field manager of every write of the plugin.
pub const FIELD_MANAGER: &str = offload_runtime::kubeapi::field_manager::PLUGIN;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "remote namespace {0:?} is not ready (its default ServiceAccount did not appear in time); retry"
    )]
    NamespaceNotReady(String),
    #[error("remote cluster refused {what}: {message}")]
    Rejected {
        what: String,
        status: u16,
        message: String,
    },
    #[error("remote cluster: {0}")]
    Kube(#[from] kube::Error),
}

fn rejected(what: impl Into<String>, e: kube::Error) -> RemoteError {
    match e {
        kube::Error::Api(s) => RemoteError::Rejected {
            what: what.into(),
            status: s.code,
            message: s.message,
        },
        other => RemoteError::Kube(other),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

mod index;
mod owned;
mod strip;

pub use self::owned::{Deleted, Ownership, ownership};
pub use self::strip::strip;

/// Sees every event of the remote pod watch, right after the store took it.
pub type PodTap = Arc<dyn Fn(&watcher::Event<Pod>) + Send + Sync>;

/// What `Api::namespaced` and create need of an object type.
trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// Label selector of every object the plugin owns.
pub fn managed_selector() -> String {
    format!("{}={}", keys::LABEL_MANAGED_BY, keys::MANAGED_BY_PLUGIN)
}

/// The labels of a namespace the plugin creates: ours, and `offloading` on
/// those offloaded pods run in.
pub(crate) fn namespace_labels(offloading: bool) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(
        keys::LABEL_MANAGED_BY.to_owned(),
        keys::MANAGED_BY_PLUGIN.to_owned(),
    )]);
    if offloading {
        labels.insert(
            keys::LABEL_OFFLOADING.to_owned(),
            keys::OFFLOADING_VALUE.to_owned(),
        );
    }
    labels
}

/// The remote cluster as the plugin uses it.
pub struct Remote {
    client: Client,
    pods: Store<Pod>,
    by_uid: Arc<index::UidIndex>,
    ready_namespaces: Mutex<HashSet<String>>,
    /// One in-flight namespace setup per namespace: concurrent creates in a
    /// new namespace wait for the first instead of racing it.
    namespace_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One create at a time per local pod UID: two concurrent retries of
    /// one create must not interleave (one would meet the other's Secrets,
    /// which it cannot read, and take them for foreign ones).
    create_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
    remote_minor: u32,
    namespace_ready_timeout: Duration,
    /// This plugin instance (`--instance`): labels what it creates.
    instance: String,
}

impl Remote {
    /// Starts the pod watch (stopped by `cancel`) and returns the handle.
    /// `tap` sees every event after the store took it.
    pub fn start(
        client: Client,
        metrics: Arc<Metrics>,
        remote_minor: u32,
        namespace_ready_timeout: Duration,
        instance: String,
        tap: Option<PodTap>,
        cancel: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let api: Api<Pod> = Api::all(client.clone());
        let (reader, writer) = reflector::store();
        let cfg = watcher::Config::default().labels(&managed_selector());
        let stream =
            reflector::reflector(writer, watcher(api, cfg).modify(strip::strip)).default_backoff();
        let by_uid = Arc::new(index::UidIndex::default());
        let index = by_uid.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    item = stream.next() => match item {
                        Some(Ok(event)) => {
                            index.apply(&event);
                            if let Some(tap) = &tap {
                                tap(&event);
                            }
                        }
                        Some(Err(e)) => warn!(error = %e, "remote pod watch error (retrying with backoff)"),
                        None => break,
                    }
                }
            }
        });
        (
            Arc::new(Self {
                client,
                pods: reader,
                by_uid,
                ready_namespaces: Mutex::new(HashSet::new()),
                namespace_locks: Mutex::new(HashMap::new()),
                create_locks: Mutex::new(HashMap::new()),
                metrics,
                remote_minor,
                namespace_ready_timeout,
                instance,
            }),
            task,
        )
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn store(&self) -> &Store<Pod> {
        &self.pods
    }

    /// Waits (at most `timeout`) for the first full list of remote pods.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.pods.wait_until_ready())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn is_ready(&self) -> bool {
        // `wait_until_ready` resolves immediately once ready.
        futures::FutureExt::now_or_never(self.pods.wait_until_ready()).is_some_and(|r| r.is_ok())
    }

    /// The cached remote pod, if the watch has seen it.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    /// The cached remote pod of a local pod UID (found by label), for pods
    /// created under another configuration (e.g. a different prefix).
    pub fn cached_by_uid(&self, uid: &str) -> Option<Arc<Pod>> {
        let found = self.pods.get(&self.by_uid.get(uid)?)?;
        // The index follows the store by one event at most: check.
        found
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::LABEL_SOURCE_POD_UID))
            .is_some_and(|v| v == uid)
            .then_some(found)
    }

    /// The remote pod, from the cache or (if not there yet) the apiserver.
    pub async fn get_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Pod>>, RemoteError> {
        if let Some(p) = self.cached(namespace, name) {
            return Ok(Some(p));
        }
        self.metrics.remote_call("get_pod");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?.map(Arc::new))
    }

    /// Makes sure the namespace exists and can take pods.
    pub async fn ensure_namespace(&self, ns: &str) -> Result<(), RemoteError> {
        let is_ready = || {
            self.ready_namespaces
                .lock()
                .map(|s| s.contains(ns))
                .unwrap_or(false)
        };
        if is_ready() {
            return Ok(());
        }
        let lock = match self.namespace_locks.lock() {
            Ok(mut m) => m.entry(ns.to_string()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        };
        let _guard = lock.lock().await;
        if is_ready() {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        self.metrics.remote_call("get_namespace");
        match api.get_opt(ns).await? {
            Some(existing) => {
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(RemoteError::Conflict(format!(
                        "remote namespace {ns:?} is being deleted; retry later"
                    )));
                }
            }
            None => {
                self.metrics.remote_call("create_namespace");
                let mut labels = namespace_labels(true);
                labels.insert(
                    keys::LABEL_PLUGIN_INSTANCE.to_owned(),
                    self.instance.clone(),
                );
                match kubeapi::create_namespace(&self.client, FIELD_MANAGER, ns, labels).await {
                    Ok(true) => info!(namespace = ns, "created remote namespace"),
                    Ok(false) => {}
                    Err(e) => return Err(rejected(format!("namespace {ns:?}"), e)),
                }
            }
        }
        self.wait_service_account(ns).await?;
        if let Ok(mut s) = self.ready_namespaces.lock() {
            s.insert(ns.to_string());
        }
        if let Ok(mut m) = self.namespace_locks.lock() {
            m.remove(ns);
        }
        Ok(())
    }

    /// The namespace was deleted: the next create sets it up again.
    pub fn namespace_gone(&self, ns: &str) {
        if let Ok(mut s) = self.ready_namespaces.lock() {
            s.remove(ns);
        }
    }

    async fn wait_service_account(&self, ns: &str) -> Result<(), RemoteError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let needs_token_secret = self.remote_minor < 24;
        let deadline = tokio::time::Instant::now() + self.namespace_ready_timeout;
        loop {
            self.metrics.remote_call("get_serviceaccount");
            if let Some(sa) = api.get_opt("default").await? {
                let has_secret = sa.secrets.as_ref().is_some_and(|s| !s.is_empty());
                if !needs_token_secret || has_secret {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RemoteError::NamespaceNotReady(ns.to_string()));
            }
            tokio::time::sleep(jittered(Duration::from_millis(200))).await;
        }
    }

    /// Creates (or finds, on a retry) the remote pod and creates its
    /// ConfigMaps/Secrets. Returns the remote pod's UID. A name held by a
    /// foreign object is a conflict, and what this request made is rolled
    /// back: nothing of a refused create stays.
    pub async fn create(&self, plan: &RemotePlan) -> Result<String, RemoteError> {
        let lock = match self.create_locks.lock() {
            Ok(mut m) => m.entry(plan.local.uid.clone()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        };
        let result = {
            let _guard = lock.lock().await;
            self.create_locked(plan).await
        };
        if let Ok(mut m) = self.create_locks.lock() {
            // Held by the map and by us only: nobody waits, forget it.
            if Arc::strong_count(&lock) <= 2 {
                m.remove(&plan.local.uid);
            }
        }
        result
    }

    async fn create_locked(&self, plan: &RemotePlan) -> Result<String, RemoteError> {
        self.ensure_namespace(&plan.namespace).await?;
        let ns = &plan.namespace;
        let uid = &plan.local.uid;
        let mut pod = plan.pod.clone();
        self.instance_labels(&mut pod.metadata.labels);
        let deadline = tokio::time::Instant::now() + self.namespace_ready_timeout;
        let (remote, created_now) = loop {
            if let Some(found) = self.create_pod(ns, &pod, uid).await? {
                break found;
            }
            // A brand-new namespace may still miss its ServiceAccount token.
            if tokio::time::Instant::now() >= deadline {
                return Err(RemoteError::NamespaceNotReady(ns.clone()));
            }
            tokio::time::sleep(jittered(Duration::from_millis(300))).await;
        };
        let name = plan.pod_name().to_string();
        let remote_uid = remote.metadata.uid.clone().unwrap_or_default();
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: name.clone(),
            uid: remote_uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let mut created = Vec::new();
        if created_now {
            created.push(owned::Created::pod(name.clone(), remote_uid.clone()));
        }
        let ctx = |op, kind| owned::OwnedCtx {
            uid,
            pod_created_now: created_now,
            op,
            kind,
        };
        let mut result = self
            .create_owned(
                ns,
                &plan.config_maps,
                &owner,
                ctx("create_configmap", "ConfigMap"),
                &mut created,
            )
            .await;
        if result.is_ok() {
            result = self
                .create_owned(
                    ns,
                    &plan.secrets,
                    &owner,
                    ctx("create_secret", "Secret"),
                    &mut created,
                )
                .await;
        }
        if let Err(e) = result {
            // Do not leave a pod waiting for data that will never come, nor
            // anything else this request made.
            warn!(pod = %name, error = %e, "creating ConfigMaps/Secrets failed; rolling back what this request created");
            self.roll_back(ns, created).await;
            return Err(e);
        }
        Ok(remote_uid)
    }

    /// The log stream of a container.
    pub async fn logs(
        &self,
        ns: &str,
        name: &str,
        params: &LogParams,
    ) -> Result<impl AsyncBufRead + use<>, RemoteError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.metrics.remote_call("logs");
        pods.log_stream(name, params).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => RemoteError::NotFound(s.message),
            kube::Error::Api(s) if s.code == 400 => RemoteError::Rejected {
                what: format!("logs of {ns}/{name}"),
                status: 400,
                message: s.message,
            },
            other => RemoteError::Kube(other),
        })
    }
}

/// `base` plus up to as much again at random: concurrent creates in a new
/// namespace do not poll the apiserver in lockstep.
fn jittered(base: Duration) -> Duration {
    base + base.mul_f64(rand::random::<f64>())
}

/// Minor version of the remote apiserver ("20", "20+" -> 20).
pub async fn remote_minor_version(client: &Client) -> Result<u32, RemoteError> {
    let info = client.apiserver_version().await?;
    let digits: String = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Ok(digits.parse().unwrap_or(20))
}
