//! The bastion's objects on the remote cluster, for whoever installs it (the
//! plugin, the end-to-end test): a ServiceAccount, least-privilege RBAC (read
//! pods, nothing else), the key Secret (generated once here, on the remote
//! side, and never overwritten) and a one-replica Deployment.
//!
//! The object builders are pure; [`apply`] writes them with server-side apply
//! (fields Kubernetes 1.20 knows only) and returns the bastion's public key,
//! the only credential that crosses to the local side. [`uninstall`] removes
//! what a namespace deletion would not (the cluster-scoped RBAC).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    Secret, SecretVolumeSource, SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use offload_wire::keys;
use tracing::info;

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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("bastion key: {0}")]
    Key(#[from] gateway_manager::render::KeyError),
    #[error("key Secret {0} has no usable {KEY_FILE}")]
    KeySecret(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Key(_) => "key",
            Error::KeySecret(_) => "key_secret",
        }
    }
}

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
            field_manager: "offload-bastion-installer".into(),
            replicas: 1,
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

    /// The Lease permission (only with leader election): create Leases in the
    /// bastion's namespace (`create` cannot be limited to a name), read and
    /// renew only its own.
    pub fn lease_role(&self) -> Option<(Role, RoleBinding)> {
        if !self.leader_election() {
            return None;
        }
        let name = self.lease_name();
        let leases = |verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            resource_names: names,
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..Default::default()
        };
        let role = Role {
            metadata: self.meta(name.clone(), true),
            rules: Some(vec![
                leases(&["create"], None),
                leases(&["get", "update"], Some(vec![name.clone()])),
            ]),
        };
        let binding = RoleBinding {
            metadata: self.meta(name.clone(), true),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name,
            },
            subjects: Some(vec![self.subject()]),
        };
        Some((role, binding))
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

    pub fn service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.meta(self.name.clone(), true),
            ..Default::default()
        }
    }

    /// The only permission the bastion needs: read pods.
    pub fn rules() -> Vec<PolicyRule> {
        vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]
    }

    fn subject(&self) -> Subject {
        Subject {
            kind: "ServiceAccount".into(),
            name: self.name.clone(),
            namespace: Some(self.namespace.clone()),
            api_group: None,
        }
    }

    /// A Role in the watched namespace (only when `watch_namespace` is set).
    pub fn role(&self) -> Option<(Role, RoleBinding)> {
        let ns = self.watch_namespace.as_ref()?;
        let name = format!("{}-pod-reader", self.name);
        let meta = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(self.labels()),
            ..Default::default()
        };
        let role = Role {
            metadata: meta.clone(),
            rules: Some(Self::rules()),
        };
        let binding = RoleBinding {
            metadata: meta,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name,
            },
            subjects: Some(vec![self.subject()]),
        };
        Some((role, binding))
    }

    /// A ClusterRole (only when every namespace is watched).
    pub fn cluster_role(&self) -> Option<(ClusterRole, ClusterRoleBinding)> {
        if self.watch_namespace.is_some() {
            return None;
        }
        let name = self.cluster_rbac_name();
        let role = ClusterRole {
            metadata: self.meta(name.clone(), false),
            rules: Some(Self::rules()),
            aggregation_rule: None,
        };
        let binding = ClusterRoleBinding {
            metadata: self.meta(name.clone(), false),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name,
            },
            subjects: Some(vec![self.subject()]),
        };
        Some((role, binding))
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

    /// [`deployment`](Self::deployment) whose pod template names the
    /// bastion's public key, so a rotated key restarts the pod.
    pub fn deployment_for_key(&self, public_key: &str) -> Deployment {
        let mut d = self.deployment();
        if let Some(meta) = d.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
            meta.annotations.get_or_insert_with(BTreeMap::new).insert(
                ANNOTATION_PUBLIC_KEY.to_owned(),
                public_key.trim().to_owned(),
            );
        }
        d
    }

    /// `Recreate`: two *active* bastions would fight over the same gateway
    /// ports, so the old ones must be gone first. With `replicas` > 1 the
    /// replicas elect a leader over a Lease and only the leader is active
    /// (a stopping leader releases the Lease, so the hand-over is quick).
    pub fn deployment(&self) -> Deployment {
        let mut args = vec![
            "run".to_owned(),
            "--label-selector".into(),
            self.label_selector.clone(),
            "--admin-addr".into(),
            format!("0.0.0.0:{}", self.admin_port),
        ];
        if let Some(ns) = &self.watch_namespace {
            args.extend(["--namespace".to_owned(), ns.clone()]);
        }
        let mut lease_env = Vec::new();
        if self.leader_election() {
            args.extend([
                "--lease-name".to_owned(),
                self.lease_name(),
                "--lease-namespace".to_owned(),
                self.namespace.clone(),
            ]);
            lease_env.push(EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let http = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(self.admin_port)),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        };
        let q = |s: &str| Quantity(s.to_owned());
        let container = Container {
            name: "bastion".into(),
            image: Some(self.image.clone()),
            image_pull_policy: Some(self.image_pull_policy.clone()),
            command: Some(vec!["/usr/bin/offload-bastion".into()]),
            args: Some(args),
            env: Some(
                vec![
                    EnvVar {
                        name: "BASTION_KEY_FILE".into(),
                        value: Some(format!("{KEY_DIR}/{KEY_FILE}")),
                        ..Default::default()
                    },
                    EnvVar {
                        name: "RUST_LOG".into(),
                        value: Some("info,russh=warn".into()),
                        ..Default::default()
                    },
                ]
                .into_iter()
                .chain(lease_env)
                .collect(),
            ),
            ports: Some(vec![ContainerPort {
                name: Some("admin".into()),
                container_port: i32::from(self.admin_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            liveness_probe: Some(Probe {
                initial_delay_seconds: Some(5),
                ..http("/healthz")
            }),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), q("50m")),
                    ("memory".into(), q("32Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".into(), q("256Mi"))])),
                ..Default::default()
            }),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                ..Default::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: "key".into(),
                mount_path: KEY_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        };
        Deployment {
            metadata: self.meta(self.name.clone(), true),
            spec: Some(DeploymentSpec {
                replicas: Some(self.replicas.max(1)),
                selector: LabelSelector {
                    match_labels: Some(self.selector()),
                    ..Default::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    rolling_update: None,
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(self.name.clone()),
                        enable_service_links: Some(false),
                        // SIGTERM cancels every forward; that takes milliseconds.
                        termination_grace_period_seconds: Some(10),
                        security_context: Some(PodSecurityContext {
                            run_as_user: Some(BASTION_UID),
                            run_as_group: Some(BASTION_UID),
                            run_as_non_root: Some(true),
                            // Secret files are root-owned; group-readable by us.
                            fs_group: Some(BASTION_UID),
                            ..Default::default()
                        }),
                        containers: vec![container],
                        volumes: Some(vec![Volume {
                            name: "key".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(self.key_secret()),
                                default_mode: Some(0o440),
                                items: None,
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Install or update the bastion; idempotent. Returns its public key (the
/// gateway's `authorized_keys` entry on the local side).
pub async fn apply(client: &Client, spec: &BastionSpec) -> Result<String, Error> {
    let ns = spec.namespace.as_str();
    let pp = PatchParams::apply(&spec.field_manager).force();
    let public = ensure_key(client, spec).await?;
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .patch(&spec.name, &pp, &Patch::Apply(&spec.service_account()))
        .await?;
    if let Some((role, binding)) = spec.role() {
        let wns = spec.watch_namespace.as_deref().unwrap_or(ns);
        let name = role.metadata.name.clone().unwrap_or_default();
        Api::<Role>::namespaced(client.clone(), wns)
            .patch(&name, &pp, &Patch::Apply(&role))
            .await?;
        Api::<RoleBinding>::namespaced(client.clone(), wns)
            .patch(&name, &pp, &Patch::Apply(&binding))
            .await?;
    }
    if let Some((role, binding)) = spec.cluster_role() {
        let name = spec.cluster_rbac_name();
        Api::<ClusterRole>::all(client.clone())
            .patch(&name, &pp, &Patch::Apply(&role))
            .await?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(&name, &pp, &Patch::Apply(&binding))
            .await?;
    }
    if let Some((role, binding)) = spec.lease_role() {
        let name = spec.lease_name();
        Api::<Role>::namespaced(client.clone(), ns)
            .patch(&name, &pp, &Patch::Apply(&role))
            .await?;
        Api::<RoleBinding>::namespaced(client.clone(), ns)
            .patch(&name, &pp, &Patch::Apply(&binding))
            .await?;
    }
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            &spec.name,
            &pp,
            &Patch::Apply(&spec.deployment_for_key(&public)),
        )
        .await?;
    Ok(public)
}

/// The key Secret: created once with a fresh ed25519 key, then only read.
/// Rotation: delete the Secret, `apply` again, hand the new public key to
/// gateway-manager (`set_bastion_key`) and restart the bastion pod.
async fn ensure_key(client: &Client, spec: &BastionSpec) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &spec.namespace);
    let name = spec.key_secret();
    let existing = match secrets.get_opt(&name).await? {
        Some(s) => s,
        None => {
            let (private, public) = gateway_manager::render::generate_ed25519("offload-bastion")?;
            match secrets
                .create(
                    &PostParams::default(),
                    &spec.key_secret_object(&private, &public),
                )
                .await
            {
                Ok(_) => {
                    info!(secret = %name, namespace = %spec.namespace, "generated the bastion key");
                    return Ok(public);
                }
                // Someone else created it first: use theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let data = existing.data.unwrap_or_default();
    let private = data
        .get(KEY_FILE)
        .ok_or_else(|| Error::KeySecret(name.clone()))?;
    gateway_manager::render::public_of_private(&String::from_utf8_lossy(&private.0))
        .map_err(|_| Error::KeySecret(name))
}

/// Remove the bastion and its cluster-scoped RBAC. Idempotent.
pub async fn uninstall(client: &Client, spec: &BastionSpec) -> Result<(), Error> {
    let ns = spec.namespace.as_str();
    delete_ignoring_404(
        &Api::<Deployment>::namespaced(client.clone(), ns),
        &spec.name,
    )
    .await?;
    delete_ignoring_404(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        &spec.name,
    )
    .await?;
    delete_ignoring_404(
        &Api::<Secret>::namespaced(client.clone(), ns),
        &spec.key_secret(),
    )
    .await?;
    if let Some((role, _)) = spec.role() {
        let wns = spec.watch_namespace.as_deref().unwrap_or(ns);
        let name = role.metadata.name.unwrap_or_default();
        delete_ignoring_404(&Api::<RoleBinding>::namespaced(client.clone(), wns), &name).await?;
        delete_ignoring_404(&Api::<Role>::namespaced(client.clone(), wns), &name).await?;
    }
    let lease = spec.lease_name();
    delete_ignoring_404(&Api::<RoleBinding>::namespaced(client.clone(), ns), &lease).await?;
    delete_ignoring_404(&Api::<Role>::namespaced(client.clone(), ns), &lease).await?;
    let name = spec.cluster_rbac_name();
    delete_ignoring_404(&Api::<ClusterRoleBinding>::all(client.clone()), &name).await?;
    delete_ignoring_404(&Api::<ClusterRole>::all(client.clone()), &name).await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_replicas_elect_a_leader_over_their_own_lease() {
        let single = BastionSpec::new("remote-ns", "img");
        assert!(single.lease_role().is_none());
        let args = single
            .deployment()
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].args.clone().unwrap_or_default())
            .unwrap_or_default();
        assert!(!args.contains(&"--lease-name".to_owned()));

        let mut ha = BastionSpec::new("remote-ns", "img");
        ha.replicas = 2;
        let (role, binding) = ha.lease_role().expect("lease role");
        assert_eq!(role.metadata.namespace.as_deref(), Some("remote-ns"));
        let rules = role.rules.expect("rules");
        assert!(rules.iter().all(|r| r.api_groups.as_deref()
            == Some(&["coordination.k8s.io".to_owned()][..])
            && r.resources.as_deref() == Some(&["leases".to_owned()][..])));
        // Only create is unscoped; reads and renewals are for its own Lease.
        assert_eq!(rules[0].verbs, ["create"]);
        assert_eq!(rules[1].verbs, ["get", "update"]);
        assert_eq!(
            rules[1].resource_names.as_deref(),
            Some(&[ha.lease_name()][..])
        );
        assert_eq!(binding.role_ref.name, ha.lease_name());
        let d = ha.deployment();
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let c = &spec.template.spec.expect("pod").containers[0];
        let args = c.args.clone().unwrap_or_default();
        let at = args
            .iter()
            .position(|a| a == "--lease-name")
            .expect("--lease-name");
        assert_eq!(args[at + 1], ha.lease_name());
        let pod_name = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "POD_NAME")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone());
        assert_eq!(pod_name.as_deref(), Some("metadata.name"));
    }

    #[test]
    fn namespaced_watch_gets_a_role_only() {
        let mut s = BastionSpec::new("offload-system", "localhost/offload/bastion:0.1.0");
        s.watch_namespace = Some("work".into());
        let (role, binding) = s.role().expect("role");
        assert!(s.cluster_role().is_none());
        assert_eq!(role.metadata.namespace.as_deref(), Some("work"));
        let rules = role.rules.expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["pods".to_owned()][..])
        );
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        let subj = &binding.subjects.expect("subjects")[0];
        assert_eq!(subj.namespace.as_deref(), Some("offload-system"));
        let args = s
            .deployment()
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
            .containers[0]
            .args
            .clone()
            .expect("args");
        assert!(args.windows(2).any(|w| w == ["--namespace", "work"]));
    }

    #[test]
    fn cluster_wide_watch_gets_a_cluster_role_only() {
        let s = BastionSpec::new("offload-system", "img:1");
        assert!(s.role().is_none());
        let (role, binding) = s.cluster_role().expect("cluster role");
        assert_eq!(role.metadata.namespace, None);
        assert_eq!(binding.role_ref.name, s.cluster_rbac_name());
        let keyed = s.deployment_for_key("ssh-ed25519 AAAAkey offload-bastion\n");
        let ann = keyed
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(ANNOTATION_PUBLIC_KEY))
            .cloned();
        assert_eq!(ann.as_deref(), Some("ssh-ed25519 AAAAkey offload-bastion"));
        let d = s.deployment();
        let pod = d.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(pod.service_account_name.as_deref(), Some("offload-bastion"));
        let sc = pod.security_context.expect("sc");
        assert_eq!(sc.run_as_user, Some(BASTION_UID));
        assert!(
            !pod.containers[0]
                .args
                .as_ref()
                .expect("args")
                .contains(&"--namespace".to_owned())
        );
    }
}
