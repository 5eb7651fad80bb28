//! Spec translation: interLink `RetrievedPodData` -> the remote objects. Pure.
//!
//! The pod spec is copied whole (probes, lifecycle hooks, securityContext,
//! resources, ports, workingDir, env/envFrom, imagePullPolicy, ...) and only
//! what must not cross is removed or rewritten:
//! - `nodeName`, the local service-account token volume and its mounts,
//!   `serviceAccountName`, `schedulerName`, priority fields, selector keys and
//!   tolerations that name the virtual node;
//! - names of ConfigMaps/Secrets are rewritten to their per-pod remote names,
//!   and every one that is referenced (volume, `env.valueFrom`, `envFrom`,
//!   projected source) must be in the payload unless marked optional;
//! - projected and downward-API volumes whose rendered files interLink sent are
//!   materialised as a per-pod Secret (the data may hold a token);
//! - `fieldRef`s to the pod's name/namespace/uid become the *local* values;
//! - fields the remote apiserver is too old for are dropped when harmless and
//!   refused when dropping them would change what the pod does.
//!
//! [`translate`] runs the steps in order, each in its own module: `validate`
//! (identity and spec structure), policy, `volumes`, per container `env` and
//! `compat`, pod-level `compat`, `pod` (scheduling, local-only fields, image
//! pull Secrets, metadata) and `objects` (the ConfigMaps/Secrets to ship).
//! `context` holds what the steps share: the payload interLink sent and the
//! rule for references to it.

mod compat;
mod context;
mod env;
mod objects;
mod pod;
mod validate;
mod volumes;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod, PodSpec, Secret, Toleration},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use offload_wire::{RetrievedPodData, keys};

pub use self::validate::local_identity;
use self::{context::Ctx, validate::validate_spec};
use crate::{
    naming::{NameKind, NamespaceMapper, remote_name},
    policy::{Policy, Violation},
    status::LocalIdentity,
};

/// Where Kubernetes mounts the service-account token.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Settings of the translation, from the plugin configuration.
#[derive(Clone, Debug)]
pub struct TranslateConfig {
    pub namespaces: NamespaceMapper,
    /// The remote pods' nodeSelector (the pod's own is for the local scheduler).
    pub node_selector: BTreeMap<String, String>,
    /// The remote pods' tolerations.
    pub tolerations: Vec<Toleration>,
    /// Drop `KUBERNETES_SERVICE_*`/`KUBERNETES_PORT*` env vars injected for the
    /// local cluster (they would override the remote cluster's own values).
    pub drop_kubernetes_env: bool,
    pub policy: Policy,
    /// Minor version of the remote apiserver (20 for 1.20).
    pub remote_minor: u32,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        Self {
            namespaces: NamespaceMapper::new("offloading", vec![]),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            drop_kubernetes_env: true,
            policy: Policy::default(),
            remote_minor: 20,
        }
    }
}

/// Everything to create remotely for one local pod.
#[derive(Clone, Debug)]
pub struct RemotePlan {
    /// Name, namespace and UID of the local pod, as sent by the caller.
    pub local: LocalIdentity,
    /// The remote namespace (`<prefix>-<local namespace>`).
    pub namespace: String,
    /// The remote pod, labelled and named after the local one.
    pub pod: Pod,
    /// ConfigMaps the pod references, renamed for the remote namespace.
    pub config_maps: Vec<ConfigMap>,
    /// Secrets the pod references, renamed for the remote namespace.
    pub secrets: Vec<Secret>,
    /// Things dropped or rewritten that a user may want to know (no values).
    pub warnings: Vec<String>,
}

impl RemotePlan {
    pub fn pod_name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    /// Malformed input (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A referenced ConfigMap/Secret (or key) is not in the payload (HTTP 422).
    #[error("{what} is referenced by {by} but was not sent with the pod")]
    Missing { what: String, by: String },
    /// Valid, but cannot run on the remote cluster as asked (HTTP 422).
    #[error("{0}")]
    Unsupported(String),
    /// Refused by the remote operator's policy (HTTP 403): every violation,
    /// each naming the field and the rule.
    #[error("refused by the remote cluster's pod security policy: {}", join_violations(.0))]
    Policy(Vec<Violation>),
}

type Result<T, E = TranslateError> = std::result::Result<T, E>;

fn join_violations(v: &[Violation]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(msg.into())
}

/// Labels every remote object of a pod carries (the Python plugin's plus ours).
pub fn owner_labels(uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::LABEL_OFFLOADING.into(), keys::OFFLOADING_VALUE.into()),
        (keys::LABEL_SOURCE_POD_UID.into(), uid.into()),
        (
            keys::LABEL_MANAGED_BY.into(),
            keys::MANAGED_BY_PLUGIN.into(),
        ),
    ])
}

/// Where a remote object came from (local UID, name and namespace).
fn source_annotations(src: &ObjectMeta, local_ns: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            keys::ANNOTATION_SOURCE_UID.into(),
            src.uid.clone().unwrap_or_default(),
        ),
        (
            keys::ANNOTATION_SOURCE_NAME.into(),
            src.name.clone().unwrap_or_default(),
        ),
        (keys::ANNOTATION_SOURCE_NAMESPACE.into(), local_ns.into()),
    ])
}

/// Translates one create request into the remote objects, or says why not.
pub fn translate(data: &RetrievedPodData, cfg: &TranslateConfig) -> Result<RemotePlan> {
    let id = local_identity(&data.pod)?;
    let mut spec = data
        .pod
        .spec
        .clone()
        .ok_or_else(|| invalid("pod.spec is missing"))?;
    validate_spec(&spec)?;
    // Before anything else is looked at or made: a refused pod leaves
    // nothing on the remote cluster.
    let violations = cfg.policy.violations(&data.pod.metadata, &spec);
    if !violations.is_empty() {
        return Err(TranslateError::Policy(violations));
    }
    let namespace = cfg.namespaces.remote(&id.namespace);
    let mut ctx = Ctx::new(cfg, data, &id);
    let volume_secrets = translate_spec(&mut ctx, &mut spec)?;
    let mut pod = pod::remote_pod(&data.pod.metadata, &id, &namespace, spec);
    let dropped = drop_security_annotations(&cfg.policy, &mut pod);
    let mut shipped = objects::shipped(ctx, &namespace);
    shipped.warnings.extend(dropped);
    shipped.secrets.extend(volume_secrets);
    Ok(RemotePlan {
        local: id,
        namespace,
        pod,
        config_maps: shipped.config_maps,
        secrets: shipped.secrets,
        warnings: shipped.warnings,
    })
}

/// Removes the `*.security.*kubernetes.io` annotations the operator does not
/// keep, after carrying the seccomp ones into the unset spec fields (as
/// 1.19+ apiservers do), so the remote pod is not less confined; a note for
/// each.
fn drop_security_annotations(policy: &Policy, pod: &mut Pod) -> Vec<String> {
    if let (Some(a), Some(spec)) = (pod.metadata.annotations.as_ref(), pod.spec.as_mut()) {
        crate::policy::carry_seccomp_annotations(a, spec);
    }
    let Some(a) = pod.metadata.annotations.as_mut() else {
        return vec![];
    };
    let dropped: Vec<String> = a
        .keys()
        .filter(|k| !policy.keeps_annotation(k))
        .cloned()
        .collect();
    dropped
        .into_iter()
        .map(|k| {
            a.remove(&k);
            format!("annotation {k} dropped (not kept by the remote policy)")
        })
        .collect()
}

/// Rewrites the spec in place; returns the Secrets made of rendered volume
/// data.
fn translate_spec(ctx: &mut Ctx<'_>, spec: &mut PodSpec) -> Result<Vec<Secret>> {
    let mut volume_secrets = Vec::new();
    let dropped_volumes = volumes::translate_volumes(ctx, spec, &mut volume_secrets)?;
    for (init, list) in [
        (true, spec.init_containers.as_mut()),
        (false, Some(&mut spec.containers)),
    ] {
        for c in list.into_iter().flatten() {
            if let Some(mounts) = c.volume_mounts.as_mut() {
                mounts.retain(|m| !dropped_volumes.contains(&m.name));
            }
            env::translate_env(ctx, c)?;
            compat::compat_container(ctx, c, init)?;
        }
    }
    compat::compat_pod(ctx, spec)?;
    pod::translate_scheduling(ctx, spec);
    pod::strip_local_fields(spec, ctx.id);
    pod::translate_image_pull_secrets(ctx, spec)?;
    Ok(volume_secrets)
}

/// The pod from a `/delete` or `/status` request, checked like a create.
pub fn remote_ref(
    pod: &Pod,
    namespaces: &NamespaceMapper,
) -> Result<(LocalIdentity, String, String)> {
    let id = local_identity(pod)?;
    let ns = namespaces.remote(&id.namespace);
    let name = remote_name(NameKind::Pod, &id.name, &id.uid);
    Ok((id, ns, name))
}

#[cfg(test)]
mod tests;
