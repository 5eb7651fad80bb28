//! The Kubernetes layer: gateway objects, pod annotations, tunnel Services and
//! Endpoints. Everything written with server-side apply under one field
//! manager, except the pod annotations (a JSON merge patch of
//! `metadata.annotations`, so we never claim fields of someone else's pod).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, PodCondition, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use offload_wire::keys::tunnel;
use tracing::{debug, info, warn};

use crate::annotations::{AnnotationError, TunnelAnnotations};
use crate::objects::{self, GatewaySpec};
use crate::pod::tcp_container_ports;
use crate::ports::{AllocError, Allocator, Conflict, PortMap, PortRange};
use crate::render::{self, KeyError, SshdConfig};

/// Pod condition type gateway-manager reports through the provider.
pub const CONDITION_TUNNEL_UP: &str = "tunnel.offload.dev/Up";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error("pod has no {0}")]
    MissingField(&'static str),
    #[error("the gateway is not set up yet (call ensure_gateway first)")]
    NotReady,
    #[error("host key secret {0} holds no usable key")]
    HostKeySecret(String),
}

impl Error {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Alloc(_) => "exhausted",
            Error::Key(_) => "key",
            Error::Annotation(_) => "annotation",
            Error::MissingField(_) => "pod",
            Error::NotReady => "not_ready",
            Error::HostKeySecret(_) => "host_key",
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
}

impl Settings {
    pub fn new(gateway: GatewaySpec, public_address: impl Into<String>) -> Self {
        Self {
            gateway,
            range: PortRange::default(),
            listen_host: "0.0.0.0".into(),
            public_address: public_address.into(),
            bastion_public_key: None,
            field_manager: "offload-gateway-manager".into(),
            probe_timeout: Duration::from_millis(500),
        }
    }
}

/// What gateway-manager knows of one tunneled pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ports: PortMap,
    /// `interlink.io/tunnel-service` of the pod, if any.
    pub workload_service: Option<String>,
}

#[derive(Default)]
struct Index {
    pods: HashMap<String, TunnelPod>,
    up: HashMap<String, bool>,
    written: HashMap<(String, String), Endpoints>,
}

pub struct GatewayManager {
    client: Client,
    settings: RwLock<Settings>,
    alloc: Mutex<Allocator>,
    index: Mutex<Index>,
    host_key: RwLock<Option<String>>,
    recorder: Recorder,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
            warn!(pod = %c.pod, port = c.port, held_by = %c.held_by, "tunnel port held twice; pod will get new ports");
        }
        Ok(this)
    }

    fn settings(&self) -> Settings {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn pp(&self) -> PatchParams {
        PatchParams::apply(&self.settings().field_manager).force()
    }

    /// The gateway host public key (after `ensure_gateway`).
    pub fn host_key(&self) -> Option<String> {
        self.host_key.read().ok().and_then(|k| k.clone())
    }

    /// Set the bastion's public key (fetched from the plugin) and re-apply
    /// the gateway config. Rotation is this call with the new key.
    pub async fn set_bastion_key(&self, key: &str) -> Result<(), Error> {
        render::normalise_public_key(key)?;
        if let Ok(mut s) = self.settings.write() {
            s.bastion_public_key = Some(key.to_owned());
        }
        self.ensure_gateway().await.map(|_| ())
    }

    /// Create or update the gateway: host-key Secret (generated once, never
    /// overwritten), ConfigMap, Deployment and Services. Idempotent. Returns
    /// the gateway host public key.
    pub async fn ensure_gateway(&self) -> Result<String, Error> {
        let s = self.settings();
        let g = &s.gateway;
        let ns = g.namespace.as_str();
        let host_public = self.ensure_host_key(g).await?;
        let sshd = SshdConfig::for_gateway_image().render();
        let ak = match &s.bastion_public_key {
            Some(k) => render::authorized_keys(k, s.range, &s.listen_host)?,
            None => "# no bastion key configured yet\n".to_owned(),
        };
        let pp = self.pp();
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        cms.patch(&g.name, &pp, &Patch::Apply(&g.config_map(&sshd, &ak)))
            .await?;
        let hash = objects::config_hash(&[&sshd, &ak, &host_public]);
        let deps: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        deps.patch(&g.name, &pp, &Patch::Apply(&g.deployment(&hash)))
            .await?;
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), ns);
        svcs.patch(&g.name, &pp, &Patch::Apply(&g.cluster_service()))
            .await?;
        if let Some(np) = g.nodeport_service_object() {
            svcs.patch(&g.nodeport_service(), &pp, &Patch::Apply(&np))
                .await?;
        }
        if let Ok(mut k) = self.host_key.write() {
            *k = Some(host_public.clone());
        }
        Ok(host_public)
    }

    async fn ensure_host_key(&self, g: &GatewaySpec) -> Result<String, Error> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &g.namespace);
        let name = g.host_key_secret();
        let existing = match secrets.get_opt(&name).await? {
            Some(s) => s,
            None => {
                let (private, public) = render::generate_ed25519("offload-gateway")?;
                match secrets
                    .create(
                        &PostParams::default(),
                        &g.host_key_secret_object(&private, &public),
                    )
                    .await
                {
                    Ok(_) => {
                        info!(secret = %name, "generated the gateway host key");
                        return Ok(public);
                    }
                    // Someone else created it first: use theirs.
                    Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(&name).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let data = existing.data.unwrap_or_default();
        if let Some(p) = data.get("ssh_host_ed25519_key.pub")
            && let Ok(k) = render::normalise_public_key(&String::from_utf8_lossy(&p.0))
        {
            return Ok(k);
        }
        let private = data
            .get("ssh_host_ed25519_key")
            .ok_or_else(|| Error::HostKeySecret(name.clone()))?;
        render::public_of_private(&String::from_utf8_lossy(&private.0))
            .map_err(|_| Error::HostKeySecret(name))
    }

    /// Rebuild allocations and the tunnel index from the annotations of live
    /// pods (the source of truth). Call once before serving.
    pub async fn rebuild(&self) -> Result<Vec<Conflict>, Error> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let host_key = self.host_key();
        let mut live = Vec::new();
        let mut continue_token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(500);
            if let Some(t) = &continue_token {
                lp = lp.continue_token(t);
            }
            let page = pods.list(&lp).await?;
            for p in page.items {
                // Pods another gateway annotated (another provider, another
                // test) hold ports on *that* gateway, not on ours.
                if !annotated_by(&p, host_key.as_deref()) {
                    continue;
                }
                if let Some(t) = tunnel_pod(&p) {
                    let created = p.metadata.creation_timestamp.clone();
                    live.push((created, t));
                }
            }
            continue_token = page.metadata.continue_.filter(|c| !c.is_empty());
            if continue_token.is_none() {
                break;
            }
        }
        // Oldest first: they keep their ports on a conflict.
        live.sort_by(|a, b| a.0.cmp(&b.0));
        let (alloc, conflicts) = Allocator::rebuild(
            self.settings().range,
            live.iter().map(|(_, t)| (t.uid.clone(), t.ports.clone())),
        );
        let lost: BTreeSet<&str> = conflicts.iter().map(|c| c.pod.as_str()).collect();
        let mut index = lock(&self.index);
        index.pods = live
            .iter()
            .filter(|(_, t)| !lost.contains(t.uid.as_str()))
            .map(|(_, t)| (t.uid.clone(), t.clone()))
            .collect();
        *lock(&self.alloc) = alloc;
        info!(
            pods = index.pods.len(),
            "tunnel allocations rebuilt from the cluster"
        );
        Ok(conflicts)
    }

    /// Before the plugin's create: allocate one gateway port per TCP
    /// containerPort, annotate the pod, create its Service (and the workload
    /// Service). Idempotent. `Ok(None)` for a pod without TCP ports.
    /// On exhaustion a Warning event is recorded on the pod and
    /// [`Error::Alloc`] returned: the caller should not offload it yet.
    pub async fn prepare_pod(&self, pod: &Pod) -> Result<Option<TunnelAnnotations>, Error> {
        let uid = pod.metadata.uid.clone().ok_or(Error::MissingField("uid"))?;
        let name = pod
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingField("name"))?;
        let ns = pod
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingField("namespace"))?;
        let wanted = tcp_container_ports(pod);
        if wanted.is_empty() {
            return Ok(None);
        }
        let host_key = self.host_key().ok_or(Error::NotReady)?;
        let s = self.settings();
        let had = lock(&self.alloc).get(&uid).cloned();
        // Bind first: a guard in the match scrutinee would live across the await below.
        let allocated = lock(&self.alloc).allocate(&uid, &wanted);
        let ports = match allocated {
            Ok(p) => p,
            Err(e) => {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "TunnelPortsExhausted".into(),
                    note: Some(e.to_string()),
                    action: "AllocateTunnelPorts".into(),
                    secondary: None,
                };
                if let Err(err) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
                    warn!(pod = %name, namespace = %ns, error = %err, "cannot record event");
                }
                return Err(e.into());
            }
        };
        let ann = TunnelAnnotations {
            gateway_address: s.public_address.clone(),
            gateway_host_key: host_key,
            ports: ports.clone(),
        };
        let result = self.annotate_and_expose(pod, &ns, &name, &uid, &ann).await;
        if let Err(e) = result {
            if had.is_none() {
                lock(&self.alloc).release(&uid);
            }
            return Err(e);
        }
        Ok(Some(ann))
    }

    async fn annotate_and_expose(
        &self,
        pod: &Pod,
        ns: &str,
        name: &str,
        uid: &str,
        ann: &TunnelAnnotations,
    ) -> Result<(), Error> {
        let wanted = ann.to_map();
        let current = pod.annotations();
        if wanted.iter().any(|(k, v)| current.get(k) != Some(v)) {
            let patch = serde_json::json!({ "metadata": { "annotations": wanted } });
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let workload = current
            .get(tunnel::SERVICE)
            .filter(|s| objects::is_rfc1035_label(s))
            .cloned();
        if let Some(bad) = current
            .get(tunnel::SERVICE)
            .filter(|s| !objects::is_rfc1035_label(s))
        {
            warn!(pod = %name, namespace = %ns, service = %bad, "tunnel-service is not a valid Service name; ignored");
        }
        let tp = TunnelPod {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            ports: ann.ports.clone(),
            workload_service: workload.clone(),
        };
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        };
        let svc_name = objects::pod_service_name(name);
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let pp = self.pp();
        svcs.patch(
            &svc_name,
            &pp,
            &Patch::Apply(&objects::tunnel_service(
                ns,
                &svc_name,
                "pod",
                ann.ports.keys().copied(),
                Some(owner),
            )),
        )
        .await?;
        lock(&self.index).pods.insert(uid.to_owned(), tp);
        if let Some(w) = workload {
            self.apply_workload_service(ns, &w).await?;
        }
        Ok(())
    }

    async fn apply_workload_service(&self, ns: &str, svc: &str) -> Result<(), Error> {
        let ports: BTreeSet<u16> = lock(&self.index)
            .pods
            .values()
            .filter(|p| p.namespace == ns && p.workload_service.as_deref() == Some(svc))
            .flat_map(|p| p.ports.keys().copied())
            .collect();
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), ns);
        if ports.is_empty() {
            delete_ignoring_404(&svcs, svc).await?;
            let eps: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
            delete_ignoring_404(&eps, svc).await?;
            lock(&self.index)
                .written
                .remove(&(ns.to_owned(), svc.to_owned()));
            return Ok(());
        }
        let obj = objects::tunnel_service(ns, svc, "workload", ports, None);
        match svcs.patch(svc, &self.pp(), &Patch::Apply(&obj)).await {
            Ok(_) => Ok(()),
            // Two replicas prepared at once both create the Service: the
            // loser's apply-create fails with AlreadyExists; applying again
            // updates the one the winner made.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                svcs.patch(svc, &self.pp(), &Patch::Apply(&obj)).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// On delete: give the ports back and remove the pod's Service (and the
    /// workload Service when it was the last replica). Idempotent.
    pub async fn release_pod(&self, pod: &Pod) -> Result<(), Error> {
        let uid = pod.metadata.uid.clone().ok_or(Error::MissingField("uid"))?;
        let name = pod
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingField("name"))?;
        let ns = pod
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingField("namespace"))?;
        lock(&self.alloc).release(&uid);
        let removed = {
            let mut index = lock(&self.index);
            index.up.remove(&uid);
            index.pods.remove(&uid)
        };
        let svc_name = objects::pod_service_name(&name);
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        delete_ignoring_404(&svcs, &svc_name).await?;
        let eps: Api<Endpoints> = Api::namespaced(self.client.clone(), &ns);
        delete_ignoring_404(&eps, &svc_name).await?;
        lock(&self.index).written.remove(&(ns.clone(), svc_name));
        let workload = removed
            .and_then(|p| p.workload_service)
            .or_else(|| pod.annotations().get(tunnel::SERVICE).cloned())
            .filter(|s| objects::is_rfc1035_label(s));
        if let Some(w) = workload {
            self.apply_workload_service(&ns, &w).await?;
        }
        Ok(())
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

    /// IPs of the ready gateway pods.
    pub async fn gateway_ips(&self) -> Result<Vec<String>, Error> {
        let g = self.settings().gateway;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &g.namespace);
        let selector = g
            .selector()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        Ok(list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
            .collect())
    }

    /// Probe every tunnel (TCP connect to the gateway pod on its gateway
    /// port: sshd listens there only while the bastion's forward is up) and
    /// write the Endpoints of every tunnel Service so they list only tunnels
    /// that are up. Returns pod UID -> all its ports up.
    pub async fn sync(&self) -> Result<BTreeMap<String, bool>, Error> {
        let ips = self.gateway_ips().await?;
        let timeout = self.settings().probe_timeout;
        let pods = self.tunnel_pods();
        let probes = pods.iter().flat_map(|p| {
            let ips = ips.clone();
            p.ports.iter().map(move |(cp, gw)| {
                let ips = ips.clone();
                let (uid, cp, gw) = (p.uid.clone(), *cp, *gw);
                async move {
                    let mut ok = false;
                    for ip in &ips {
                        if probe(ip, gw, timeout).await {
                            ok = true;
                            break;
                        }
                    }
                    (uid, cp, gw, ok)
                }
            })
        });
        let results = join_all(probes).await;
        let mut up_ports: HashMap<String, PortMap> = HashMap::new();
        for (uid, cp, gw, ok) in results {
            let e = up_ports.entry(uid).or_default();
            if ok {
                e.insert(cp, gw);
            }
        }
        let mut up = BTreeMap::new();
        let mut wanted: BTreeMap<(String, String), (String, Vec<PortMap>)> = BTreeMap::new();
        for p in &pods {
            let ports = up_ports.get(&p.uid).cloned().unwrap_or_default();
            up.insert(
                p.uid.clone(),
                !p.ports.is_empty() && ports.len() == p.ports.len(),
            );
            wanted.insert(
                (p.namespace.clone(), objects::pod_service_name(&p.name)),
                ("pod".into(), vec![ports.clone()]),
            );
            if let Some(w) = &p.workload_service {
                wanted
                    .entry((p.namespace.clone(), w.clone()))
                    .or_insert_with(|| ("workload".into(), Vec::new()))
                    .1
                    .push(ports);
            }
        }
        for ((ns, name), (kind, replicas)) in wanted {
            let eps = objects::tunnel_endpoints(&ns, &name, &kind, &ips, &replicas);
            let key = (ns.clone(), name.clone());
            if lock(&self.index).written.get(&key) == Some(&eps) {
                continue;
            }
            let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &ns);
            match api.patch(&name, &self.pp(), &Patch::Apply(&eps)).await {
                Ok(_) => {
                    debug!(namespace = %ns, service = %name, "tunnel endpoints written");
                    lock(&self.index).written.insert(key, eps);
                }
                Err(e) => {
                    warn!(namespace = %ns, service = %name, error = %e, "cannot write tunnel endpoints")
                }
            }
        }
        lock(&self.index).up = up.clone().into_iter().collect();
        Ok(up)
    }

    /// Run [`sync`](Self::sync) every `interval` until `shutdown` fires.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.sync().await {
                        warn!(error = %e, "tunnel sync failed");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
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

async fn probe(ip: &str, port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port))).await,
        Ok(Ok(_))
    )
}

async fn delete_ignoring_404<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the pod's tunnel annotations were written by the gateway whose
/// host public key is `host_key` (`None`: any gateway). The host key names a
/// gateway: it is generated once per gateway and kept in its Secret.
pub fn annotated_by(p: &Pod, host_key: Option<&str>) -> bool {
    let Some(want) = host_key else {
        return true;
    };
    fn key(s: &str) -> Vec<&str> {
        s.split_whitespace().take(2).collect()
    }
    let same = |a: &str, b: &str| key(a) == key(b);
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(tunnel::GATEWAY_HOST_KEY))
        .is_some_and(|k| same(k, want))
}

/// A pod's tunnel as recorded in its annotations (live pods only).
pub fn tunnel_pod(p: &Pod) -> Option<TunnelPod> {
    // A terminating pod still holds its ports until the provider releases
    // them on delete, so it is kept.
    if matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let ann = p.metadata.annotations.as_ref()?;
    let ports = crate::annotations::decode_ports(ann.get(tunnel::PORTS)?).ok()?;
    if ports.is_empty() {
        return None;
    }
    Some(TunnelPod {
        namespace: p.metadata.namespace.clone()?,
        name: p.metadata.name.clone()?,
        uid: p.metadata.uid.clone()?,
        ports,
        workload_service: ann
            .get(tunnel::SERVICE)
            .filter(|s| objects::is_rfc1035_label(s))
            .cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod_with_key(key: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: key
                    .map(|k| BTreeMap::from([(tunnel::GATEWAY_HOST_KEY.to_owned(), k.to_owned())])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn pods_of_another_gateway_are_not_ours() {
        let ours = "ssh-ed25519 AAAAours";
        assert!(annotated_by(&pod_with_key(Some(ours)), Some(ours)));
        // The comment is not part of the key.
        assert!(annotated_by(
            &pod_with_key(Some("ssh-ed25519 AAAAours offload-gateway")),
            Some(ours)
        ));
        assert!(!annotated_by(
            &pod_with_key(Some("ssh-ed25519 AAAAtheirs")),
            Some(ours)
        ));
        assert!(!annotated_by(&pod_with_key(None), Some(ours)));
        assert!(annotated_by(&pod_with_key(None), None));
    }
}

mod standalone;
