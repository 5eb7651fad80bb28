//! The bastion's objects on the remote cluster, for whoever installs it (the
//! plugin, the end-to-end test): a ServiceAccount, least-privilege RBAC (read
//! pods, nothing else; a Lease Role with standby replicas), the key Secret
//! (generated once here, on the remote side, and never overwritten) and the
//! Deployment.
//!
//! The object builders are pure ([`BastionSpec`], its RBAC in `rbac.rs`, its
//! Deployment in `deployment.rs`); [`apply`] writes them with server-side
//! apply through [`offload_runtime::kubeapi`] (fields Kubernetes 1.20 knows
//! only) and returns the bastion's public key, the only credential that
//! crosses to the local side. [`uninstall`] removes what a namespace deletion
//! would not (the cluster-scoped RBAC).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client, Resource};
use offload_runtime::kubeapi::{
    self, ApplyScope, KeypairSecret, delete_ignoring_404, field_manager,
};
use offload_wire::keys;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use crate::desired::Gateway;

mod deployment;
mod rbac;
#[cfg(test)]
mod tests;

/// The uid the bastion image runs as (`deploy/images/bastion.sh`).
pub const BASTION_UID: i64 = 65532;
/// Where the key Secret is mounted; the private key is `KEY_DIR/id_ed25519`.
pub const KEY_DIR: &str = "/etc/offload-bastion/key";
const KEY_FILE: &str = "id_ed25519";
const PUBLIC_FILE: &str = "id_ed25519.pub";
const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
const COMPONENT_VALUE: &str = "offload-bastion";
const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Pod-template annotation: the bastion's public key. The bastion reads its
/// key once at start, so a new key (rotation) must restart the pod; this
/// annotation changing does that.
pub const ANNOTATION_PUBLIC_KEY: &str = "bastion.offload.dev/public-key";

/// Installing is only Kubernetes writes and the key Secret: the errors are
/// those of [`offload_runtime::kubeapi`].
pub use offload_runtime::kubeapi::Error;

/// What to install, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BastionSpec {
    /// Namespace the bastion runs in.
    pub namespace: String,
    /// Name of the Deployment, ServiceAccount and (prefix of) the other objects.
    pub name: String,
    pub image: String,
    pub image_pull_policy: String,
    /// Watch offloaded pods of this namespace only (a Role); `None`: every
    /// namespace (a ClusterRole), what a plugin mapping namespaces needs.
    pub watch_namespace: Option<String>,
    /// Which remote pods carry tunnels.
    pub label_selector: String,
    /// Admin server port (`/metrics`, `/healthz`, `/readyz`).
    pub admin_port: u16,
    pub field_manager: String,
    /// Replicas of the Deployment. Above 1, the replicas elect a leader over
    /// a Lease named like the Deployment (see `leader.rs`): only the holder
    /// connects to the gateways, the others stand by.
    pub replicas: i32,
    /// The gateways the bastion may dial (`--gateways`): the plugin learns
    /// them from the authenticated provider's create requests. A new one
    /// rolls the Deployment out.
    pub gateways: BTreeSet<Gateway>,
    /// The plugin instance (`--plugin-instance`): only pods of namespaces
    /// labelled with it count.
    pub plugin_instance: Option<String>,
}

impl BastionSpec {
    pub fn new(namespace: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: "offload-bastion".into(),
            image: image.into(),
            image_pull_policy: "IfNotPresent".into(),
            watch_namespace: None,
            label_selector: format!("{}={}", keys::LABEL_OFFLOADING, keys::OFFLOADING_VALUE),
            admin_port: 9090,
            field_manager: field_manager::BASTION_INSTALLER.into(),
            replicas: 1,
            gateways: BTreeSet::new(),
            plugin_instance: None,
        }
    }

    /// Whether the replicas elect a leader (more than one replica).
    pub fn leader_election(&self) -> bool {
        self.replicas > 1
    }

    /// Name of the Lease, and of the Role/RoleBinding that lets the bastion
    /// use it (in the bastion's namespace).
    pub fn lease_name(&self) -> String {
        format!("{}-leader", self.name)
    }

    pub fn key_secret(&self) -> String {
        format!("{}-key", self.name)
    }

    /// Name of the ClusterRole and its binding: cluster-scoped, so it carries
    /// the namespace to keep two installations apart.
    pub fn cluster_rbac_name(&self) -> String {
        format!("offload-bastion:{}:{}", self.namespace, self.name)
    }

    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_COMPONENT.to_owned(), COMPONENT_VALUE.to_owned()),
            (LABEL_INSTANCE.to_owned(), self.name.clone()),
        ])
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector();
        l.insert(
            keys::LABEL_MANAGED_BY.to_owned(),
            keys::MANAGED_BY_PLUGIN.to_owned(),
        );
        l
    }

    fn meta(&self, name: String, namespaced: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: namespaced.then(|| self.namespace.clone()),
            labels: Some(self.labels()),
            ..Default::default()
        }
    }

    fn subject(&self) -> Subject {
        Subject {
            kind: "ServiceAccount".into(),
            name: self.name.clone(),
            namespace: Some(self.namespace.clone()),
            api_group: None,
        }
    }

    pub fn service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.meta(self.name.clone(), true),
            ..Default::default()
        }
    }

    /// Where the key pair lives and how a new one is commented.
    pub fn key_pair(&self) -> KeypairSecret {
        KeypairSecret {
            namespace: self.namespace.clone(),
            name: self.key_secret(),
            private_key: KEY_FILE.into(),
            comment: "offload-bastion".into(),
        }
    }

    pub fn key_secret_object(&self, private: &str, public: &str) -> Secret {
        Secret {
            metadata: self.meta(self.key_secret(), true),
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                (KEY_FILE.to_owned(), ByteString(private.as_bytes().to_vec())),
                (
                    PUBLIC_FILE.to_owned(),
                    ByteString(public.as_bytes().to_vec()),
                ),
            ])),
            ..Default::default()
        }
    }
}

/// Install or update the bastion; idempotent. Returns its public key (the
/// gateway's `authorized_keys` entry on the local side).
pub async fn apply(client: &Client, spec: &BastionSpec) -> Result<String, Error> {
    let fm = spec.field_manager.as_str();
    let public = ensure_key(client, spec).await?;
    kubeapi::apply(client, fm, &spec.service_account()).await?;
    apply_pair(client, fm, spec.role()).await?;
    apply_pair(client, fm, spec.cluster_role()).await?;
    apply_pair(client, fm, spec.lease_role()).await?;
    kubeapi::apply(client, fm, &spec.deployment_for_key(&public)).await?;
    Ok(public)
}

/// A role and its binding, when there is one.
async fn apply_pair<R, B>(client: &Client, fm: &str, pair: Option<(R, B)>) -> Result<(), Error>
where
    R: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    B: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    R::Scope: ApplyScope,
    B::Scope: ApplyScope,
{
    if let Some((role, binding)) = pair {
        kubeapi::apply(client, fm, &role).await?;
        kubeapi::apply(client, fm, &binding).await?;
    }
    Ok(())
}

/// The key Secret: created once with a fresh ed25519 key, then only read.
/// Rotation: delete the Secret, `apply` again, hand the new public key to
/// gateway-manager (`set_bastion_key`) and restart the bastion pod.
async fn ensure_key(client: &Client, spec: &BastionSpec) -> Result<String, Error> {
    let pair = kubeapi::ensure_keypair_secret(client, &spec.key_pair(), |private, public| {
        spec.key_secret_object(private, public)
    })
    .await?;
    if pair.created {
        info!(secret = %spec.key_secret(), namespace = %spec.namespace, "generated the bastion key");
    }
    Ok(pair.public)
}

/// Remove the bastion and its cluster-scoped RBAC. Idempotent.
pub async fn uninstall(client: &Client, spec: &BastionSpec) -> Result<(), Error> {
    let ns = spec.namespace.as_str();
    let c = || client.clone();
    delete_ignoring_404(&Api::<Deployment>::namespaced(c(), ns), &spec.name).await?;
    delete_ignoring_404(&Api::<ServiceAccount>::namespaced(c(), ns), &spec.name).await?;
    delete_ignoring_404(&Api::<Secret>::namespaced(c(), ns), &spec.key_secret()).await?;
    if let Some((role, _)) = spec.role() {
        let wns = spec.watch_namespace.as_deref().unwrap_or(ns);
        let name = role.metadata.name.unwrap_or_default();
        delete_ignoring_404(&Api::<RoleBinding>::namespaced(c(), wns), &name).await?;
        delete_ignoring_404(&Api::<Role>::namespaced(c(), wns), &name).await?;
    }
    let lease = spec.lease_name();
    delete_ignoring_404(&Api::<RoleBinding>::namespaced(c(), ns), &lease).await?;
    delete_ignoring_404(&Api::<Role>::namespaced(c(), ns), &lease).await?;
    let name = spec.cluster_rbac_name();
    delete_ignoring_404(&Api::<ClusterRoleBinding>::all(c()), &name).await?;
    delete_ignoring_404(&Api::<ClusterRole>::all(c()), &name).await?;
    Ok(())
}
