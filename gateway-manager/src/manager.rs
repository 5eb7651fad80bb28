//! The Kubernetes layer: gateway objects, pod annotations, tunnel Services and
//! Endpoints. Everything written with server-side apply under one field
//! manager, except the pod annotations (a JSON merge patch of
//! `metadata.annotations` under the same field manager, so we never claim
//! fields of someone else's pod).
//!
//! - [`gateway`]: the gateway's own objects and host key.
//! - [`pods`]: allocation, annotations and Services of the tunneled pods.
//! - [`sync`]: probes and Endpoints, every interval.
//! - [`standalone`]: what the admission webhook needs on top.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use offload_runtime::kubeapi;
use tracing::warn;

use crate::objects::GatewaySpec;
use crate::ports::{AllocError, Allocator};
use crate::signature::AllocationKey;
use offload_wire::tunnel::AnnotationError;
use offload_wire::tunnel::PortRange;
use offload_wire::tunnel::{self, KeyError};

pub use crate::pod::{TunnelPod, annotated_by, tunnel_pod};

pub mod gateway;
pub mod pods;
pub mod services;
pub mod standalone;
pub mod sync;
#[cfg(test)]
mod tests;

/// Pod condition type gateway-manager reports through the provider.
pub const CONDITION_TUNNEL_UP: &str = "tunnel.offload.dev/Up";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or write of the local cluster failed: the apiserver, or an
    /// object or key Secret that is not as it should be
    /// ([`kubeapi::Error`]); retried by the caller.
    #[error(transparent)]
    Api(#[from] kubeapi::Error),
    #[error("the gateway is not set up yet (call ensure_gateway first)")]
    NotReady,
    /// The port range is exhausted: the pod waits (a Warning event says so).
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// A bastion or host key that is not an OpenSSH ed25519 key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Tunnel annotations on a pod that do not decode.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error("pod has no {0}")]
    MissingField(&'static str),
    /// The allocation key Secret exists but holds no usable key.
    #[error("Secret {0} holds no allocation key (key `key`, at least 16 bytes)")]
    AllocationKey(String),
    #[error("no randomness for a fresh allocation key")]
    Random,
}

/// Plain reads (`get`, `list`) give the apiserver's error as it is.
impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Api(kubeapi::Error::Kube(e))
    }
}

impl Error {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api(kubeapi::Error::KeySecret { .. }) => "host_key",
            Error::Api(e) => e.metric_label(),
            Error::Alloc(_) => "exhausted",
            Error::Key(_) => "key",
            Error::Annotation(_) => "annotation",
            Error::MissingField(_) => "pod",
            Error::NotReady => "not_ready",
            Error::AllocationKey(_) | Error::Random => "allocation_key",
        }
    }
}

/// Configuration of the one gateway of a local cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gateway: GatewaySpec,
    pub range: PortRange,
    /// Address forwards listen on inside the gateway pod (`0.0.0.0`).
    pub listen_host: String,
    /// `host:port` of the gateway as the remote side reaches it (for example
    /// `<node IP>:30222`); goes into the pod annotation.
    pub public_address: String,
    /// The bastion's public key; `None` until known (nobody can log in).
    pub bastion_public_key: Option<String>,
    pub field_manager: String,
    /// TCP connect timeout of the tunnel probes.
    pub probe_timeout: Duration,
    /// The virtual node whose pods are tunneled: after a restart only pods
    /// bound to it are taken back. `None`: pods of any node (tests only).
    pub node_name: Option<String>,
}

impl Settings {
    pub fn new(gateway: GatewaySpec, public_address: impl Into<String>) -> Self {
        Self {
            gateway,
            range: PortRange::default(),
            listen_host: "0.0.0.0".into(),
            public_address: public_address.into(),
            bastion_public_key: None,
            field_manager: kubeapi::field_manager::GATEWAY_MANAGER.into(),
            probe_timeout: Duration::from_millis(500),
            node_name: None,
        }
    }
}

#[derive(Default)]
struct Index {
    pods: HashMap<String, TunnelPod>,
    up: HashMap<String, bool>,
    written: HashMap<(String, String), Endpoints>,
    /// Services named for a tunnel that are not ours: never written.
    foreign: HashSet<(String, String)>,
}

pub struct GatewayManager {
    client: Client,
    settings: RwLock<Settings>,
    alloc: Mutex<Allocator>,
    index: Mutex<Index>,
    host_key: RwLock<Option<String>>,
    alloc_key: RwLock<Option<Arc<AllocationKey>>>,
    recorder: Recorder,
}

/// Lock, ignoring poisoning: every critical section leaves the data whole.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GatewayManager {
    pub fn new(client: Client, settings: Settings) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: settings.field_manager.clone(),
                instance: None,
            },
        );
        Self {
            alloc: Mutex::new(Allocator::new(settings.range)),
            settings: RwLock::new(settings),
            index: Mutex::new(Index::default()),
            host_key: RwLock::new(None),
            alloc_key: RwLock::new(None),
            client,
            recorder,
        }
    }

    /// `new` + [`ensure_gateway`](Self::ensure_gateway) + [`rebuild`](Self::rebuild).
    pub async fn start(client: Client, settings: Settings) -> Result<Arc<Self>, Error> {
        let this = Arc::new(Self::new(client, settings));
        this.ensure_gateway().await?;
        let conflicts = this.rebuild().await?;
        for c in conflicts {
            warn!(pod = %c.pod, port = c.port.0, held_by = %c.held_by, "tunnel port held twice; pod will get new ports");
        }
        Ok(this)
    }

    /// The client everything is written with.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn settings(&self) -> Settings {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Server-side apply `obj` under our field manager.
    async fn apply<K>(&self, obj: &K) -> Result<K, Error>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::Scope: kubeapi::ApplyScope,
    {
        let fm = self.settings().field_manager;
        Ok(kubeapi::apply(&self.client, &fm, obj).await?)
    }

    /// The gateway host public key (after `ensure_gateway`).
    pub fn host_key(&self) -> Option<String> {
        self.host_key.read().ok().and_then(|k| k.clone())
    }

    /// The key gateway-manager signs its allocations with (after `ensure_gateway`).
    pub(crate) fn allocation_key(&self) -> Result<Arc<AllocationKey>, Error> {
        self.alloc_key
            .read()
            .ok()
            .and_then(|k| k.clone())
            .ok_or(Error::NotReady)
    }

    /// Set the bastion's public key (fetched from the plugin) and re-apply
    /// the gateway config. Rotation is this call with the new key.
    pub async fn set_bastion_key(&self, key: &str) -> Result<(), Error> {
        tunnel::normalise_public_key(key)?;
        if let Ok(mut s) = self.settings.write() {
            s.bastion_public_key = Some(key.to_owned());
        }
        self.ensure_gateway().await.map(|_| ())
    }

    /// Whether gateway-manager holds ports for this pod UID.
    pub fn knows(&self, uid: &str) -> bool {
        lock(&self.index).pods.contains_key(uid) || lock(&self.alloc).get(uid).is_some()
    }

    /// Whether the pod's tunnel answered at the last [`sync`](Self::sync).
    pub fn tunnel_up(&self, uid: &str) -> Option<bool> {
        lock(&self.index).up.get(uid).copied()
    }

    /// The tunneled pods gateway-manager knows.
    pub fn tunnel_pods(&self) -> Vec<TunnelPod> {
        lock(&self.index).pods.values().cloned().collect()
    }
}

/// The pod condition the provider sets from [`GatewayManager::tunnel_up`].
pub fn tunnel_condition(up: bool) -> PodCondition {
    PodCondition {
        type_: CONDITION_TUNNEL_UP.into(),
        status: if up { "True" } else { "False" }.into(),
        reason: Some(if up { "TunnelUp" } else { "TunnelDown" }.into()),
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    }
}
