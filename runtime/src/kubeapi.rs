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
//! - [`hardened_security_context`] and [`non_root_pod_security_context`]:
//!   what every container we install runs under; [`recreate_deployment`]:
//!   the Deployment shape of our single-active components.
//!
//! Everything applied must use fields Kubernetes 1.20 knows (our test
//! apiserver rejects newer ones under server-side apply).

use std::fmt::Debug;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Namespace, PodSecurityContext, PodTemplateSpec, Secret, SecurityContext,
};
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
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use pretty_assertions::assert_eq;

    use http::{Request, Response};
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    use std::sync::{Arc, Mutex};

    /// What a request looked like: method, path, query, content type.
    type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

    /// A client whose apiserver records each request and answers `answer`.
    fn recording_client(seen: Seen, answer: String) -> Client {
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let header = |n| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            seen.lock().expect("lock").push((
                req.method().to_string(),
                req.uri().path().to_owned(),
                req.uri().query().unwrap_or_default().to_owned(),
                header(http::header::CONTENT_TYPE),
            ));
            let answer = answer.clone();
            async move { Ok::<_, std::convert::Infallible>(Response::new(answer)) }
        });
        Client::new(service, "default")
    }

    fn meta(name: Option<&str>, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: name.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            ..Default::default()
        }
    }

    /// `apply` through a recording client that answers with `obj` itself.
    async fn apply_recorded<K>(seen: &Seen, fm: &str, obj: &K) -> Result<K, Error>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
        K::Scope: ApplyScope,
    {
        let answer = serde_json::to_string(obj).expect("json");
        apply(&recording_client(Arc::clone(seen), answer), fm, obj).await
    }

    #[tokio::test]
    async fn apply_addresses_the_object_by_its_own_metadata() {
        let seen = Seen::default();
        let configmap = |name: Option<&str>, ns: Option<&str>| ConfigMap {
            metadata: meta(name, ns),
            ..Default::default()
        };
        let role = ClusterRole {
            metadata: meta(Some("r"), None),
            ..Default::default()
        };
        let cm = configmap(Some("c"), Some("ns"));
        apply_recorded(&seen, field_manager::PLUGIN, &cm)
            .await
            .expect("apply");
        apply_recorded(&seen, field_manager::BASTION_INSTALLER, &role)
            .await
            .expect("apply cluster-scoped");
        let e = apply_recorded(&seen, field_manager::PLUGIN, &configmap(Some("c"), None)).await;
        assert!(matches!(e, Err(Error::NoNamespace { .. })), "{e:?}");
        let e = apply_recorded(&seen, field_manager::PLUGIN, &configmap(None, Some("ns"))).await;
        assert!(matches!(e, Err(Error::Unnamed { .. })), "{e:?}");

        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 2, "no request for a broken object: {seen:?}");
        let (method, path, query, ctype) = &seen[0];
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("PATCH", "/api/v1/namespaces/ns/configmaps/c")
        );
        assert!(query.contains("fieldManager=offload-plugin"), "{query}");
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(ctype, "application/apply-patch+yaml");
        assert_eq!(
            seen[1].1,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/r"
        );
    }

    #[tokio::test]
    async fn merge_patches_name_their_field_manager() {
        let seen = Seen::default();
        let cm = ConfigMap {
            metadata: meta(Some("c"), Some("ns")),
            ..Default::default()
        };
        let answer = serde_json::to_string(&cm).expect("json");
        let client = recording_client(Arc::clone(&seen), answer);
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        let patch = serde_json::json!({"metadata": {"annotations": {"a": "b"}}});
        merge_patch(&api, field_manager::GATEWAY_MANAGER, "c", &patch)
            .await
            .expect("patch");
        let seen = seen.lock().expect("lock").clone();
        assert!(
            seen[0].2.contains("fieldManager=offload-gateway-manager"),
            "{seen:?}"
        );
        assert_eq!(seen[0].3, "application/merge-patch+json");
    }

    #[test]
    fn params_always_carry_a_field_manager() {
        let a = apply_params(field_manager::BASTION_INSTALLER);
        assert_eq!(
            a.field_manager.as_deref(),
            Some("offload-bastion-installer")
        );
        assert!(a.force);
        let m = merge_params(field_manager::GATEWAY_MANAGER);
        assert_eq!(m.field_manager.as_deref(), Some("offload-gateway-manager"));
        assert!(!m.force);
    }

    #[test]
    fn recreate() {
        let sel = BTreeMap::from([("app".to_owned(), "x".to_owned())]);
        let d = recreate_deployment(
            meta(Some("d"), Some("ns")),
            2,
            sel.clone(),
            PodTemplateSpec::default(),
        );
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels, Some(sel));
        assert_eq!(
            spec.strategy.and_then(|s| s.type_).as_deref(),
            Some("Recreate")
        );
    }

    #[test]
    fn hardening() {
        let c = hardened_security_context();
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(c.run_as_non_root, Some(true));
        assert_eq!(
            c.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        let p = non_root_pod_security_context(65532);
        assert_eq!(
            (p.run_as_user, p.run_as_group, p.fs_group),
            (Some(65532), Some(65532), Some(65532))
        );
        assert_eq!(p.run_as_non_root, Some(true));
    }

    #[test]
    fn the_public_key_comes_from_the_stored_private_key() {
        let spec = KeypairSecret {
            namespace: "ns".into(),
            name: "k".into(),
            private_key: "id_ed25519".into(),
            comment: "test".into(),
        };
        let (private, public) = sshkey::generate_ed25519("test").expect("keygen");
        let secret = |data: Vec<(&str, &str)>| Secret {
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        };
        assert_eq!(
            spec.public_key_of(&secret(vec![("id_ed25519", &private)]))
                .expect("public"),
            public
        );
        for broken in [vec![], vec![("id_ed25519", "garbage")]] {
            let e = spec.public_key_of(&secret(broken)).expect_err("unusable");
            assert_eq!(e.metric_label(), "key_secret");
            assert!(e.to_string().contains("ns/k"), "{e}");
        }
    }
}
