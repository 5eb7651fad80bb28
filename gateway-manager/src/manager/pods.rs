//! The tunneled pods: allocations rebuilt from the cluster, ports given
//! before the remote create (annotations, `<pod>-tunnel` Service, workload
//! Service), released on delete.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use offload_runtime::kubeapi;
use offload_wire::keys::tunnel;
use tracing::{info, warn};

use super::{Error, GatewayManager, TunnelPod, annotated_by, lock, tunnel_pod};
use crate::objects::{self, TunnelServiceKind};
use crate::pod::tcp_container_ports;
use crate::ports::{AllocError, Allocator, Conflict};
use offload_wire::tunnel::TunnelAnnotations;

/// UID, name and namespace of a pod (all set on a created pod).
struct PodId {
    uid: String,
    name: String,
    namespace: String,
}

impl PodId {
    fn of(pod: &Pod) -> Result<Self, Error> {
        let m = &pod.metadata;
        Ok(Self {
            uid: m.uid.clone().ok_or(Error::MissingField("uid"))?,
            name: m.name.clone().ok_or(Error::MissingField("name"))?,
            namespace: m
                .namespace
                .clone()
                .ok_or(Error::MissingField("namespace"))?,
        })
    }
}

impl GatewayManager {
    /// Rebuild allocations and the tunnel index from the annotations of live
    /// pods (the source of truth). Call once before serving.
    pub async fn rebuild(&self) -> Result<Vec<Conflict>, Error> {
        let mut live = self.live_tunnels().await?;
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

    /// The tunnels of every live pod whose allocation we provably wrote
    /// (bound to our virtual node, signed by us for its UID), with the pod's
    /// creation time; listed a page at a time. Pods that merely carry our
    /// host key (anyone can write annotations) are logged and ignored.
    async fn live_tunnels(&self) -> Result<Vec<(Option<Time>, TunnelPod)>, Error> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let host_key = self.host_key();
        let key = self.allocation_key()?;
        let node = self.settings().node_name;
        let mut live = Vec::new();
        let mut continue_token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(500);
            if let Some(t) = &continue_token {
                lp = lp.continue_token(t);
            }
            let page = pods.list(&lp).await?;
            // Pods another gateway annotated (another provider, another
            // test) hold ports on *that* gateway, not on ours.
            for p in page
                .items
                .iter()
                .filter(|p| annotated_by(p, host_key.as_deref()))
            {
                if !key.written_by_us(p, node.as_deref()) {
                    warn!(
                        pod = %p.metadata.name.as_deref().unwrap_or(""),
                        namespace = %p.metadata.namespace.as_deref().unwrap_or(""),
                        node = %p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or(""),
                        "tunnel annotations not written by this gateway-manager (unsigned, not bound to our node, or copied): ignored"
                    );
                    continue;
                }
                if let Some(t) = tunnel_pod(p) {
                    live.push((p.metadata.creation_timestamp.clone(), t));
                }
            }
            continue_token = page.metadata.continue_.filter(|c| !c.is_empty());
            if continue_token.is_none() {
                return Ok(live);
            }
        }
    }

    /// Before the plugin's create: allocate one gateway port per TCP
    /// containerPort, annotate the pod, create its Service (and the workload
    /// Service). Idempotent. `Ok(None)` for a pod without TCP ports.
    /// On exhaustion a Warning event is recorded on the pod and
    /// [`Error::Alloc`] returned: the caller should not offload it yet.
    pub async fn prepare_pod(&self, pod: &Pod) -> Result<Option<TunnelAnnotations>, Error> {
        let id = PodId::of(pod)?;
        let wanted = tcp_container_ports(pod);
        if wanted.is_empty() {
            return Ok(None);
        }
        let host_key = self.host_key().ok_or(Error::NotReady)?;
        let s = self.settings();
        let had = lock(&self.alloc).get(&id.uid).cloned();
        // Bind first: a guard in the match scrutinee would live across the await below.
        let allocated = lock(&self.alloc).allocate(&id.uid, &wanted);
        let ports = match allocated {
            Ok(p) => p,
            Err(e) => {
                self.warn_exhausted(pod, &id, &e).await;
                return Err(e.into());
            }
        };
        let ann = TunnelAnnotations {
            gateway_address: s.public_address.clone(),
            gateway_host_key: host_key,
            ports,
        };
        if let Err(e) = self.annotate_and_expose(pod, &id, &ann).await {
            if had.is_none() {
                lock(&self.alloc).release(&id.uid);
            }
            return Err(e);
        }
        Ok(Some(ann))
    }

    /// A Warning event on the pod: no ports left in the range.
    async fn warn_exhausted(&self, pod: &Pod, id: &PodId, e: &AllocError) {
        let ev = Event {
            type_: EventType::Warning,
            reason: "TunnelPortsExhausted".into(),
            note: Some(e.to_string()),
            action: "AllocateTunnelPorts".into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            warn!(pod = %id.name, namespace = %id.namespace, error = %err, "cannot record event");
        }
    }

    async fn annotate_and_expose(
        &self,
        pod: &Pod,
        id: &PodId,
        ann: &TunnelAnnotations,
    ) -> Result<(), Error> {
        let (ns, name) = (id.namespace.as_str(), id.name.as_str());
        self.annotate(pod, id, ann).await?;
        let current = pod.annotations();
        let mut workload = current
            .get(tunnel::SERVICE)
            .filter(|s| objects::is_rfc1035_label(s))
            .cloned();
        if let Some(bad) = current
            .get(tunnel::SERVICE)
            .filter(|s| !objects::is_rfc1035_label(s))
        {
            warn!(pod = %name, namespace = %ns, service = %bad, "tunnel-service is not a valid Service name; ignored");
        }
        if let Some(w) = &workload
            && !self
                .may_write_service(pod, ns, w, TunnelServiceKind::Workload)
                .await?
        {
            workload = None;
        }
        let tp = TunnelPod {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: id.uid.clone(),
            ports: ann.ports.clone(),
            workload_service: workload.clone(),
        };
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: name.to_owned(),
            uid: id.uid.clone(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        };
        let svc_name = objects::pod_service_name(name);
        if self
            .may_write_service(pod, ns, &svc_name, TunnelServiceKind::Pod)
            .await?
        {
            let svc = objects::tunnel_service(
                ns,
                &svc_name,
                TunnelServiceKind::Pod.label(),
                ann.ports.keys().copied(),
                Some(owner),
            );
            self.apply(&svc).await?;
        }
        lock(&self.index).pods.insert(id.uid.clone(), tp);
        if let Some(w) = workload {
            self.apply_workload_service(ns, &w).await?;
        }
        Ok(())
    }

    /// Merge the tunnel annotations and their signature into the pod's,
    /// unless it has them.
    async fn annotate(&self, pod: &Pod, id: &PodId, ann: &TunnelAnnotations) -> Result<(), Error> {
        let wanted = self.allocation_key()?.signed_map(&id.uid, ann);
        let current = pod.annotations();
        if wanted.iter().all(|(k, v)| current.get(k) == Some(v)) {
            return Ok(());
        }
        // A merge patch of our annotations only: server-side apply would
        // claim them and fight whoever else applies the pod.
        let patch = serde_json::json!({ "metadata": { "annotations": wanted } });
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &id.namespace);
        let fm = self.settings().field_manager;
        kubeapi::merge_patch(&pods, &fm, &id.name, &patch).await?;
        Ok(())
    }

    /// Apply the workload Service (every replica's ports), or delete it
    /// when no replica is left; never one that is not ours.
    async fn apply_workload_service(&self, ns: &str, svc: &str) -> Result<(), Error> {
        let kind = TunnelServiceKind::Workload;
        if self.is_foreign(ns, svc) {
            return Ok(());
        }
        let ports: BTreeSet<offload_wire::tunnel::ContainerPort> = lock(&self.index)
            .pods
            .values()
            .filter(|p| p.namespace == ns && p.workload_service.as_deref() == Some(svc))
            .flat_map(|p| p.ports.keys().copied())
            .collect();
        if ports.is_empty() {
            return self.delete_tunnel_service(ns, svc, kind).await;
        }
        let obj = objects::tunnel_service(ns, svc, kind.label(), ports, None);
        match self.apply(&obj).await {
            Ok(_) => Ok(()),
            // Two replicas prepared at once both create the Service: the
            // loser's apply-create fails with AlreadyExists; applying again
            // updates the one the winner made.
            Err(Error::Api(e)) if e.api_code() == Some(409) => {
                self.apply(&obj).await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// On delete: give the ports back and remove the pod's Service (and the
    /// workload Service when it was the last replica). Idempotent.
    pub async fn release_pod(&self, pod: &Pod) -> Result<(), Error> {
        let id = PodId::of(pod)?;
        lock(&self.alloc).release(&id.uid);
        let removed = {
            let mut index = lock(&self.index);
            index.up.remove(&id.uid);
            index.pods.remove(&id.uid)
        };
        let svc_name = objects::pod_service_name(&id.name);
        self.delete_tunnel_service(&id.namespace, &svc_name, TunnelServiceKind::Pod)
            .await?;
        // Only a Service this pod was exposed through: one the pod names but
        // that was not ours was never touched and is not now.
        let workload = match removed {
            Some(p) => p.workload_service,
            None => pod.annotations().get(tunnel::SERVICE).cloned(),
        }
        .filter(|s| objects::is_rfc1035_label(s));
        if let Some(w) = workload {
            self.apply_workload_service(&id.namespace, &w).await?;
        }
        Ok(())
    }
}
