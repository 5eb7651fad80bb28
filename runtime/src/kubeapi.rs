//! Kubernetes write helpers, the same for every component that writes:
//!
//! - [`apply`]: server-side apply of a typed object, addressed by the
//!   object's own name and namespace, forced, under one field manager;
//! - [`merge_patch`]: a JSON merge patch, always under a field manager (so
//!   `managedFields` says who wrote what);
//! - [`delete_ignoring_404`]: "already gone" counts as deleted;
//! - [`create_namespace`]: "created meanwhile by someone else" counts as
//!   created;
//! - [`ensure_keypair_secret`]: a Secret holding a generated SSH key pair,
//!   created once and then only read (two racing creators converge on the
//!   first one's key);
//! - [`field_manager`]: the field-manager names, one per writer;
//! - [`hardened_container`] (with [`hardened_security_context`]) and
//!   [`non_root_pod_security_context`]: what every container we install
//!   runs under; [`container_resources`]: its requests and memory limit;
//!   [`tcp_container_port`]: its named ports; [`recreate_deployment`]: the
//!   Deployment shape of our single-active components.
//!
//! Everything applied must use fields Kubernetes 1.20 knows (our test
//! apiserver rejects newer ones under server-side apply).

use std::fmt::Debug;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, Namespace, PodSecurityContext, PodTemplateSpec,
    ResourceRequirements, Secret, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use offload_wire::tunnel::sshkey::{self, KeyError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The field managers of our components: one name per writer, so the
/// objects' `managedFields` tell who owns which field.
pub mod field_manager {
    /// The provider: the virtual node and the pods' spec-side fields.
    pub const PROVIDER: &str = "offload-provider";
    /// The provider's status writes (node and pod status subresources).
    pub const PROVIDER_STATUS: &str = "offload-provider-status";
    /// The provider's tunnel condition of a pod whose status follows the
    /// plugin's stream (only that condition, merged by its type).
    pub const PROVIDER_TUNNEL: &str = "offload-provider-tunnel";
    /// The plugin: the remote objects of offloaded pods.
    pub const PLUGIN: &str = "offload-plugin";
    /// gateway-manager (embedded or standalone): the gateway, tunnel
    /// Services and Endpoints, tunnel annotations, its webhook registration.
    pub const GATEWAY_MANAGER: &str = "offload-gateway-manager";
    /// Whoever installs the bastion (the plugin, the tests).
    pub const BASTION_INSTALLER: &str = "offload-bastion-installer";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A programming error: every object we apply is built with a name.
    #[error("{kind} to apply has no metadata.name")]
    Unnamed { kind: String },
    /// A programming error: a namespaced object built without its namespace.
    #[error("{kind} {name} to apply has no metadata.namespace")]
    NoNamespace { kind: String, name: String },
    #[error("key Secret {namespace}/{name} has no usable private key {key:?}")]
    KeySecret {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("key pair: {0}")]
    Key(#[from] KeyError),
}

impl Error {
    /// The HTTP status of an API error, if that is what this is.
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Error::Kube(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Unnamed { .. } | Error::NoNamespace { .. } => "object",
            Error::KeySecret { .. } => "key_secret",
            Error::Key(_) => "key",
        }
    }
}

/// How to address an object of a scope: namespaced kinds need the
/// namespace, cluster-scoped kinds ignore it. Implemented for the two scopes
/// of typed k8s-openapi kinds.
pub trait ApplyScope: Sized {
    /// `None` when the kind is namespaced and `namespace` is `None`.
    fn api<K>(client: Client, namespace: Option<&str>) -> Option<Api<K>>
    where
        K: Resource<Scope = Self, DynamicType = ()>;
}

impl ApplyScope for NamespaceResourceScope {
    fn api<K>(client: Client, namespace: Option<&str>) -> Option<Api<K>>
    where
        K: Resource<Scope = Self, DynamicType = ()>,
    {
        namespace.map(|ns| Api::namespaced(client, ns))
    }
}

impl ApplyScope for ClusterResourceScope {
    fn api<K>(client: Client, _namespace: Option<&str>) -> Option<Api<K>>
    where
        K: Resource<Scope = Self, DynamicType = ()>,
    {
        Some(Api::all(client))
    }
}

/// Server-side apply parameters: ours wins conflicts (we own these objects).
pub fn apply_params(field_manager: &str) -> PatchParams {
    PatchParams::apply(field_manager).force()
}

/// Merge-patch parameters, never without a field manager.
pub fn merge_params(field_manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(field_manager.to_owned()),
        ..Default::default()
    }
}

/// Server-side apply `obj` where its metadata says (name, and namespace for
/// a namespaced kind). Returns the object as the apiserver has it.
pub async fn apply<K>(client: &Client, field_manager: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    K::Scope: ApplyScope,
{
    let kind = || K::kind(&()).into_owned();
    let meta = obj.meta();
    let name = meta
        .name
        .as_deref()
        .ok_or_else(|| Error::Unnamed { kind: kind() })?;
    let api: Api<K> =
        K::Scope::api(client.clone(), meta.namespace.as_deref()).ok_or_else(|| {
            Error::NoNamespace {
                kind: kind(),
                name: name.to_owned(),
            }
        })?;
    Ok(api
        .patch(name, &apply_params(field_manager), &Patch::Apply(obj))
        .await?)
}

/// A JSON merge patch of `name` under `field_manager`.
pub async fn merge_patch<K>(
    api: &Api<K>,
    field_manager: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<K, Error>
where
    K: Clone + Debug + DeserializeOwned,
{
    Ok(api
        .patch(name, &merge_params(field_manager), &Patch::Merge(patch))
        .await?)
}

/// Delete `name`; an object that is already gone counts as deleted.
pub async fn delete_ignoring_404<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Clone + Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the namespace `name` with `labels`. One that exists already (a
/// racing creator got there first: 409) is fine; `true` when this call
/// created it. Callers look it up first: creating is the rare case.
pub async fn create_namespace(
    client: &Client,
    field_manager: &str,
    name: &str,
    labels: BTreeMap<String, String>,
) -> Result<bool, kube::Error> {
    let obj = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    let params = PostParams {
        field_manager: Some(field_manager.to_owned()),
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&params, &obj)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// A Secret that holds an SSH key pair generated once, on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeypairSecret {
    pub namespace: String,
    pub name: String,
    /// The data key of the OpenSSH private key.
    pub private_key: String,
    /// The comment of a newly generated key.
    pub comment: String,
}

/// What [`ensure_keypair_secret`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keypair {
    /// The public key line (no comment).
    pub public: String,
    /// Whether this call generated the key (and created the Secret).
    pub created: bool,
}

impl KeypairSecret {
    /// The public key of an existing Secret, derived from its private key.
    pub fn public_key_of(&self, secret: &Secret) -> Result<String, Error> {
        let private = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&self.private_key))
            .ok_or_else(|| self.unusable())?;
        sshkey::public_of_private(&String::from_utf8_lossy(&private.0)).map_err(|_| self.unusable())
    }

    fn unusable(&self) -> Error {
        Error::KeySecret {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            key: self.private_key.clone(),
        }
    }
}

/// The key Secret `spec` names: read it if it exists, otherwise generate an
/// ed25519 key pair and create it with `object(private, public)`. Never
/// overwritten: rotation is deleting the Secret. When another writer creates
/// it first (409), theirs is used.
pub async fn ensure_keypair_secret(
    client: &Client,
    spec: &KeypairSecret,
    object: impl FnOnce(&str, &str) -> Secret,
) -> Result<Keypair, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &spec.namespace);
    let existing = match secrets.get_opt(&spec.name).await? {
        Some(s) => s,
        None => {
            let (private, public) = sshkey::generate_ed25519(&spec.comment)?;
            match secrets
                .create(&PostParams::default(), &object(&private, &public))
                .await
            {
                Ok(_) => {
                    return Ok(Keypair {
                        public,
                        created: true,
                    });
                }
                Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(&spec.name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(Keypair {
        public: spec.public_key_of(&existing)?,
        created: false,
    })
}

/// The container hardening of everything we install: no privilege
/// escalation, read-only root filesystem, non-root, every capability dropped.
pub fn hardened_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// A container we install: `name` running `image` (pulled per
/// `image_pull_policy`) under [`hardened_security_context`]. Callers add
/// command, ports, probes and mounts with `..hardened_container(...)`.
pub fn hardened_container(name: &str, image: &str, image_pull_policy: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some(image_pull_policy.into()),
        security_context: Some(hardened_security_context()),
        ..Default::default()
    }
}

/// The pod side of the hardening: run as `uid` (user and group), and let
/// that group read the mounted Secrets (their files are root-owned).
pub fn non_root_pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        run_as_non_root: Some(true),
        fs_group: Some(uid),
        ..Default::default()
    }
}

/// The resources of a container we install: `cpu` and `memory` requested,
/// only `memory` limited.
pub fn container_resources(
    cpu_request: &str,
    memory_request: &str,
    memory_limit: &str,
) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), q(cpu_request)),
            ("memory".into(), q(memory_request)),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), q(memory_limit))])),
        ..Default::default()
    }
}

/// A named TCP port of a container we install.
pub fn tcp_container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// A Deployment that replaces its pods with `Recreate`: the old pods must be
/// gone before new ones start when two would hold the same ports (two
/// gateway `sshd`s, two active bastions).
pub fn recreate_deployment(
    metadata: ObjectMeta,
    replicas: i32,
    selector: BTreeMap<String, String>,
    template: PodTemplateSpec,
) -> Deployment {
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            template,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
