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

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    ByteString,
    api::core::v1::{
        ConfigMap, Container, EnvVar, KeyToPath, LocalObjectReference, Pod, PodSpec, Secret,
        SecretVolumeSource, Toleration, Volume,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use offload_wire::{RetrievedPodData, keys};

use crate::{
    naming::{
        NameKind, NamespaceMapper, is_dns_label, is_dns_subdomain, is_valid_uid, remote_name,
    },
    policy::Policy,
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
    pub local: LocalIdentity,
    pub namespace: String,
    pub pod: Pod,
    pub config_maps: Vec<ConfigMap>,
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
    /// Refused by the remote operator's policy (HTTP 403).
    #[error("refused by policy: {}", .0.join("; "))]
    Policy(Vec<String>),
}

type Result<T, E = TranslateError> = std::result::Result<T, E>;

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(msg.into())
}

/// The local pod's identity, checked.
pub fn local_identity(pod: &Pod) -> Result<LocalIdentity> {
    let m = &pod.metadata;
    let name = m.name.clone().unwrap_or_default();
    let namespace = m.namespace.clone().unwrap_or_default();
    let uid = m.uid.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("pod.metadata.name is missing"));
    }
    if !is_dns_subdomain(&name) {
        return Err(invalid(format!(
            "pod.metadata.name {name:?} is not a valid pod name (RFC 1123 subdomain)"
        )));
    }
    if namespace.is_empty() {
        return Err(invalid("pod.metadata.namespace is missing"));
    }
    if !is_dns_label(&namespace) {
        return Err(invalid(format!(
            "pod.metadata.namespace {namespace:?} is not a valid namespace name"
        )));
    }
    if uid.is_empty() {
        return Err(invalid("pod.metadata.uid is missing"));
    }
    if !is_valid_uid(&uid) {
        return Err(invalid(format!(
            "pod.metadata.uid {uid:?} is not a valid UID (lower-case letters, digits and '-', at most 63)"
        )));
    }
    Ok(LocalIdentity {
        name,
        namespace,
        uid,
    })
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

/// Annotations of the local pod that must not reach the remote pod: interLink
/// VK control data (some of it secret, e.g. WireGuard keys) and bulky client
/// bookkeeping.
fn is_dropped_annotation(key: &str) -> bool {
    key.starts_with("interlink.eu/")
        || key.starts_with("slurm-job.vk.io/")
        || key.starts_with("interlink.virtual-kubelet.io/")
        || key == "kubectl.kubernetes.io/last-applied-configuration"
        || key == keys::ANNOTATION_JOB_ID
}

fn is_kubernetes_env(name: &str) -> bool {
    name == "KUBERNETES_SERVICE_HOST"
        || name == "KUBERNETES_SERVICE_PORT"
        || name == "KUBERNETES_SERVICE_PORT_HTTPS"
        || name == "KUBERNETES_PORT"
        || name.starts_with("KUBERNETES_PORT_")
}

/// The ConfigMaps, Secrets and rendered volumes interLink sent, by name.
struct Payload<'a> {
    config_maps: BTreeMap<&'a str, &'a ConfigMap>,
    secrets: BTreeMap<&'a str, &'a Secret>,
    volume_data: BTreeMap<&'a str, &'a ConfigMap>,
}

impl<'a> Payload<'a> {
    fn new(data: &'a RetrievedPodData) -> Self {
        let mut p = Payload {
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            volume_data: BTreeMap::new(),
        };
        // The same object may be listed for several containers: first wins.
        for c in &data.containers {
            for cm in &c.config_maps {
                if let Some(n) = cm.metadata.name.as_deref() {
                    p.config_maps.entry(n).or_insert(cm);
                }
            }
            for s in &c.secrets {
                if let Some(n) = s.metadata.name.as_deref() {
                    p.secrets.entry(n).or_insert(s);
                }
            }
            for v in &c.projected_volume_maps {
                if let Some(n) = v.metadata.name.as_deref() {
                    p.volume_data.entry(n).or_insert(v);
                }
            }
        }
        p
    }
}

/// Tracks which payload objects the translated spec uses.
#[derive(Default)]
struct Used {
    config_maps: BTreeSet<String>,
    secrets: BTreeSet<String>,
}

struct Ctx<'a> {
    cfg: &'a TranslateConfig,
    payload: Payload<'a>,
    id: &'a LocalIdentity,
    used: Used,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    fn cm_name(&self, name: &str) -> String {
        remote_name(NameKind::ConfigMap, name, &self.id.uid)
    }
    fn secret_name(&self, name: &str) -> String {
        remote_name(NameKind::Secret, name, &self.id.uid)
    }

    /// Rewrites a reference to a ConfigMap; fails if it is required and absent.
    fn use_cm(
        &mut self,
        name: &str,
        optional: bool,
        key: Option<&str>,
        by: &str,
    ) -> Result<String> {
        let found = self.payload.config_maps.get(name).map(|cm| {
            key.is_none_or(|k| {
                cm.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || cm.binary_data.as_ref().is_some_and(|d| d.contains_key(k))
            })
        });
        if check_reference("ConfigMap", name, found, optional, key, by)? {
            self.used.config_maps.insert(name.into());
        }
        Ok(self.cm_name(name))
    }

    /// Rewrites a reference to a Secret; fails if it is required and absent.
    fn use_secret(
        &mut self,
        name: &str,
        optional: bool,
        key: Option<&str>,
        by: &str,
    ) -> Result<String> {
        let found = self.payload.secrets.get(name).map(|s| {
            key.is_none_or(|k| {
                s.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || s.string_data.as_ref().is_some_and(|d| d.contains_key(k))
            })
        });
        if check_reference("Secret", name, found, optional, key, by)? {
            self.used.secrets.insert(name.into());
        }
        Ok(self.secret_name(name))
    }
}

/// The rule shared by ConfigMap and Secret references. `found` is `None` when
/// the object is not in the payload, else whether it holds the referenced key
/// (true when no key is referenced). Answers whether the object is present.
fn check_reference(
    kind: &str,
    name: &str,
    found: Option<bool>,
    optional: bool,
    key: Option<&str>,
    by: &str,
) -> Result<bool> {
    match (found, key) {
        (Some(false), Some(k)) if !optional => Err(TranslateError::Missing {
            what: format!("key {k:?} of {kind} {name:?}"),
            by: by.into(),
        }),
        (Some(_), _) => Ok(true),
        (None, _) if optional => Ok(false),
        (None, _) => Err(TranslateError::Missing {
            what: format!("{kind} {name:?}"),
            by: by.into(),
        }),
    }
}

/// Checks the structure of the spec: names, uniqueness, mounts.
fn validate_spec(spec: &PodSpec) -> Result<()> {
    if spec.containers.is_empty() {
        return Err(invalid("pod.spec.containers is empty"));
    }
    let mut names = BTreeSet::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        if !is_dns_label(&c.name) {
            return Err(invalid(format!(
                "container name {:?} is not a valid RFC 1123 label",
                c.name
            )));
        }
        if !names.insert(c.name.as_str()) {
            return Err(invalid(format!(
                "container name {:?} is used twice",
                c.name
            )));
        }
        if c.image.as_deref().unwrap_or_default().trim().is_empty() {
            return Err(invalid(format!("container {:?} has no image", c.name)));
        }
    }
    let mut volumes = BTreeSet::new();
    for v in spec.volumes.iter().flatten() {
        if !is_dns_label(&v.name) {
            return Err(invalid(format!(
                "volume name {:?} is not a valid RFC 1123 label",
                v.name
            )));
        }
        if !volumes.insert(v.name.as_str()) {
            return Err(invalid(format!("volume name {:?} is used twice", v.name)));
        }
    }
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(m.name.as_str()) {
                return Err(invalid(format!(
                    "container {:?} mounts volume {:?}, which is not in pod.spec.volumes",
                    c.name, m.name
                )));
            }
        }
    }
    Ok(())
}

/// Names of the volumes that carry the local service-account token.
fn service_account_volumes(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        for m in c.volume_mounts.iter().flatten() {
            if m.mount_path.trim_end_matches('/') == SA_MOUNT_PATH {
                out.insert(m.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if v.name.starts_with("kube-api-access-") && v.projected.is_some() {
            out.insert(v.name.clone());
        }
    }
    out
}

/// A Secret volume over the rendered files of a projected/downward volume.
fn volume_data_volume(
    ctx: &mut Ctx<'_>,
    v: &Volume,
    data: &ConfigMap,
    default_mode: Option<i32>,
    secrets_out: &mut Vec<Secret>,
) -> Volume {
    let mut files: BTreeMap<String, ByteString> = BTreeMap::new();
    for (k, val) in data.data.iter().flatten() {
        files.insert(k.clone(), ByteString(val.clone().into_bytes()));
    }
    for (k, val) in data.binary_data.iter().flatten() {
        files.entry(k.clone()).or_insert_with(|| val.clone());
    }
    let mut secret_data = BTreeMap::new();
    let mut items = Vec::new();
    for (i, (path, content)) in files.into_iter().enumerate() {
        let key = format!("file-{i}");
        items.push(KeyToPath {
            key: key.clone(),
            path,
            mode: None,
        });
        secret_data.insert(key, content);
    }
    let name = remote_name(NameKind::VolumeData, &v.name, &ctx.id.uid);
    let mut annotations = source_annotations(&data.metadata, &ctx.id.namespace);
    annotations.insert(keys::ANNOTATION_SOURCE_NAME.into(), v.name.clone());
    secrets_out.push(Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ctx.cfg.namespaces.remote(&ctx.id.namespace)),
            labels: Some(owner_labels(&ctx.id.uid)),
            annotations: Some(annotations),
            ..Default::default()
        },
        data: Some(secret_data),
        type_: Some("Opaque".into()),
        ..Default::default()
    });
    Volume {
        name: v.name.clone(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name),
            items: Some(items),
            default_mode,
            optional: None,
        }),
        ..Default::default()
    }
}

fn translate_volumes(
    ctx: &mut Ctx<'_>,
    spec: &mut PodSpec,
    extra_secrets: &mut Vec<Secret>,
) -> Result<BTreeSet<String>> {
    let dropped = service_account_volumes(spec);
    let mut out = Vec::new();
    let minor = ctx.cfg.remote_minor;
    for v in spec.volumes.take().unwrap_or_default() {
        if dropped.contains(&v.name) {
            continue;
        }
        let by = format!("volume {:?}", v.name);
        let mut v = v;
        if let Some(cm) = v.config_map.as_mut() {
            let optional = cm.optional == Some(true);
            cm.name = ctx.use_cm(&cm.name, optional, None, &by)?;
        } else if let Some(s) = v.secret.as_mut() {
            let optional = s.optional == Some(true);
            let name = s
                .secret_name
                .clone()
                .ok_or_else(|| invalid(format!("{by}: secret.secretName is missing")))?;
            s.secret_name = Some(ctx.use_secret(&name, optional, None, &by)?);
        } else if let Some(p) = v.projected.as_ref() {
            if let Some(data) = ctx.payload.volume_data.get(v.name.as_str()).copied() {
                let mode = p.default_mode;
                v = volume_data_volume(ctx, &v, data, mode, extra_secrets);
            } else {
                let mut p = p.clone();
                for src in p.sources.iter_mut().flatten() {
                    if let Some(cm) = src.config_map.as_mut() {
                        let optional = cm.optional == Some(true);
                        cm.name = ctx.use_cm(&cm.name, optional, None, &by)?;
                    }
                    if let Some(s) = src.secret.as_mut() {
                        let optional = s.optional == Some(true);
                        s.name = ctx.use_secret(&s.name, optional, None, &by)?;
                    }
                    if src.service_account_token.is_some() {
                        return Err(TranslateError::Missing {
                            what: format!(
                                "the rendered data of projected volume {:?} (it has a serviceAccountToken source)",
                                v.name
                            ),
                            by: by.clone(),
                        });
                    }
                    if src.cluster_trust_bundle.is_some() {
                        return Err(TranslateError::Unsupported(format!(
                            "{by}: clusterTrustBundle projections need Kubernetes 1.29 on the remote cluster (it runs 1.{minor}) and no rendered data was sent"
                        )));
                    }
                }
                v.projected = Some(p);
            }
        } else if let Some(d) = v.downward_api.as_ref() {
            // Prefer the files rendered from the *local* pod (its real name,
            // namespace and uid); otherwise the remote kubelet renders them.
            if let Some(data) = ctx.payload.volume_data.get(v.name.as_str()).copied() {
                let mode = d.default_mode;
                v = volume_data_volume(ctx, &v, data, mode, extra_secrets);
            }
        } else if v.image.is_some() && minor < 31 {
            return Err(TranslateError::Unsupported(format!(
                "{by}: image volumes need Kubernetes 1.31 on the remote cluster (it runs 1.{minor})"
            )));
        } else if let Some(pvc) = v.persistent_volume_claim.as_ref() {
            ctx.warnings.push(format!(
                "{by}: PersistentVolumeClaim {:?} must already exist in the remote namespace",
                pvc.claim_name
            ));
        }
        out.push(v);
    }
    spec.volumes = if out.is_empty() { None } else { Some(out) };
    Ok(dropped)
}

fn translate_env(ctx: &mut Ctx<'_>, c: &mut Container) -> Result<()> {
    let by = format!("container {:?}", c.name);
    if let Some(env) = c.env.take() {
        let mut out: Vec<EnvVar> = Vec::with_capacity(env.len());
        for mut e in env {
            if ctx.cfg.drop_kubernetes_env && is_kubernetes_env(&e.name) {
                continue;
            }
            let by_var = format!("{by} env {:?}", e.name);
            if let Some(vf) = e.value_from.as_mut() {
                if let Some(r) = vf.config_map_key_ref.as_mut() {
                    let optional = r.optional == Some(true);
                    r.name = ctx.use_cm(&r.name, optional, Some(&r.key), &by_var)?;
                }
                if let Some(r) = vf.secret_key_ref.as_mut() {
                    let optional = r.optional == Some(true);
                    r.name = ctx.use_secret(&r.name, optional, Some(&r.key), &by_var)?;
                }
                if let Some(f) = vf.field_ref.as_ref() {
                    // The remote pod has another name, namespace and uid; the
                    // workload asked for its own (local) ones.
                    let literal = match f.field_path.as_str() {
                        "metadata.name" => Some(ctx.id.name.clone()),
                        "metadata.namespace" => Some(ctx.id.namespace.clone()),
                        "metadata.uid" => Some(ctx.id.uid.clone()),
                        _ => None,
                    };
                    if let Some(l) = literal {
                        e.value = Some(l);
                        e.value_from = None;
                    }
                }
            }
            out.push(e);
        }
        c.env = if out.is_empty() { None } else { Some(out) };
    }
    for ef in c.env_from.iter_mut().flatten() {
        if let Some(r) = ef.config_map_ref.as_mut() {
            let optional = r.optional == Some(true);
            r.name = ctx.use_cm(&r.name, optional, None, &format!("{by} envFrom"))?;
        }
        if let Some(r) = ef.secret_ref.as_mut() {
            let optional = r.optional == Some(true);
            r.name = ctx.use_secret(&r.name, optional, None, &format!("{by} envFrom"))?;
        }
    }
    Ok(())
}

/// Fields newer than the remote apiserver: refuse those whose loss changes
/// behaviour, drop the others.
fn compat_container(ctx: &mut Ctx<'_>, c: &mut Container, init: bool) -> Result<()> {
    let minor = ctx.cfg.remote_minor;
    let what = if init { "init container" } else { "container" };
    let name = c.name.clone();
    let unsupported = |feature: &str, need: u32| {
        TranslateError::Unsupported(format!(
            "{what} {name:?}: {feature} needs Kubernetes 1.{need} on the remote cluster (it runs 1.{minor})"
        ))
    };
    if init && c.restart_policy.is_some() && minor < 28 {
        return Err(unsupported("restartPolicy (native sidecar container)", 28));
    }
    if !init && c.restart_policy.is_some() && minor < 34 {
        // Per-container restartPolicy on regular containers is 1.34+.
        c.restart_policy = None;
    }
    if c.resources
        .as_ref()
        .is_some_and(|r| r.claims.as_ref().is_some_and(|v| !v.is_empty()))
        && minor < 26
    {
        return Err(unsupported(
            "resources.claims (dynamic resource allocation)",
            26,
        ));
    }
    for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
        .into_iter()
        .flatten()
    {
        if probe.grpc.is_some() && minor < 24 {
            return Err(unsupported("a gRPC probe", 24));
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        if minor < 22 {
            probe.termination_grace_period_seconds = None;
        }
    }
    if let Some(lc) = c.lifecycle.as_mut() {
        for h in [&lc.post_start, &lc.pre_stop].into_iter().flatten() {
            if h.sleep.is_some() && minor < 29 {
                return Err(unsupported("a sleep lifecycle hook", 29));
            }
        }
        if minor < 33 {
            lc.stop_signal = None;
        }
    }
    if minor < 27 {
        c.resize_policy = None;
    }
    if let Some(sc) = c.security_context.as_mut()
        && minor < 30
        && sc.app_armor_profile.take().is_some()
    {
        ctx.warnings.push(format!(
            "{what} {name:?}: securityContext.appArmorProfile dropped (remote is 1.{minor})"
        ));
    }
    Ok(())
}

fn compat_pod(ctx: &mut Ctx<'_>, spec: &mut PodSpec) -> Result<()> {
    let minor = ctx.cfg.remote_minor;
    let unsupported = |feature: &str, need: u32| {
        TranslateError::Unsupported(format!(
            "{feature} needs Kubernetes 1.{need} on the remote cluster (it runs 1.{minor})"
        ))
    };
    if spec.resource_claims.as_ref().is_some_and(|v| !v.is_empty()) && minor < 26 {
        return Err(unsupported("spec.resourceClaims", 26));
    }
    if spec.resources.is_some() && minor < 32 {
        return Err(unsupported("pod-level spec.resources", 32));
    }
    if minor < 25 {
        spec.os = None;
        if spec.host_users.take().is_some() {
            ctx.warnings
                .push(format!("spec.hostUsers dropped (remote is 1.{minor})"));
        }
    }
    if let Some(sc) = spec.security_context.as_mut() {
        if minor < 30 {
            sc.app_armor_profile = None;
        }
        if minor < 31 {
            sc.supplemental_groups_policy = None;
        }
        if minor < 32 {
            sc.se_linux_change_policy = None;
        }
    }
    for t in spec.topology_spread_constraints.iter_mut().flatten() {
        if minor < 25 {
            t.min_domains = None;
        }
        if minor < 26 {
            t.node_affinity_policy = None;
            t.node_taints_policy = None;
        }
        if minor < 27 {
            t.match_label_keys = None;
        }
    }
    // The local pod was already scheduled, so its gates are lifted; the other
    // two are set by the local cluster's admission and would be refused.
    spec.scheduling_gates = None;
    spec.ephemeral_containers = None;
    spec.overhead = None;
    Ok(())
}

/// Where the pod runs remotely is the remote operator's choice: the pod's
/// nodeSelector, tolerations and node affinity were written for the *local*
/// scheduler (to land on the virtual node, which satisfies all of them), so
/// they are replaced by the configured remote ones, as the Python plugin
/// does. Pod (anti-)affinity is about other pods and stays.
fn translate_scheduling(ctx: &mut Ctx<'_>, spec: &mut PodSpec) -> Result<()> {
    let cfg = ctx.cfg;
    spec.node_selector = (!cfg.node_selector.is_empty()).then(|| cfg.node_selector.clone());
    spec.tolerations = (!cfg.tolerations.is_empty()).then(|| cfg.tolerations.clone());
    if let Some(a) = spec.affinity.as_mut() {
        a.node_affinity = None;
        if a.pod_affinity.is_none() && a.pod_anti_affinity.is_none() {
            spec.affinity = None;
        }
    }
    Ok(())
}

fn remote_config_map(cm: &ConfigMap, name: String, ns: &str, id: &LocalIdentity) -> ConfigMap {
    let mut labels = cm.metadata.labels.clone().unwrap_or_default();
    labels.extend(owner_labels(&id.uid));
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.into()),
            labels: Some(labels),
            annotations: Some(source_annotations(&cm.metadata, &id.namespace)),
            ..Default::default()
        },
        data: cm.data.clone(),
        binary_data: cm.binary_data.clone(),
        immutable: cm.immutable,
    }
}

fn remote_secret(
    s: &Secret,
    name: String,
    ns: &str,
    id: &LocalIdentity,
    warnings: &mut Vec<String>,
) -> Secret {
    let mut labels = s.metadata.labels.clone().unwrap_or_default();
    labels.extend(owner_labels(&id.uid));
    let mut type_ = s.type_.clone();
    if type_.as_deref() == Some("kubernetes.io/service-account-token") {
        warnings.push(format!(
            "Secret {:?} is a local service-account token; created remotely as Opaque",
            s.metadata.name.as_deref().unwrap_or_default()
        ));
        type_ = Some("Opaque".into());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.into()),
            labels: Some(labels),
            annotations: Some(source_annotations(&s.metadata, &id.namespace)),
            ..Default::default()
        },
        data: s.data.clone(),
        string_data: s.string_data.clone(),
        type_,
        immutable: s.immutable,
    }
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
    let violations = cfg.policy.violations(&spec);
    if !violations.is_empty() {
        return Err(TranslateError::Policy(violations));
    }
    let namespace = cfg.namespaces.remote(&id.namespace);
    let mut ctx = Ctx {
        cfg,
        payload: Payload::new(data),
        id: &id,
        used: Used::default(),
        warnings: vec![],
    };

    let mut extra_secrets = Vec::new();
    let dropped_volumes = translate_volumes(&mut ctx, &mut spec, &mut extra_secrets)?;
    for (init, list) in [
        (true, spec.init_containers.as_mut()),
        (false, Some(&mut spec.containers)),
    ] {
        for c in list.into_iter().flatten() {
            if let Some(mounts) = c.volume_mounts.as_mut() {
                mounts.retain(|m| !dropped_volumes.contains(&m.name));
            }
            translate_env(&mut ctx, c)?;
            compat_container(&mut ctx, c, init)?;
        }
    }
    compat_pod(&mut ctx, &mut spec)?;
    translate_scheduling(&mut ctx, &mut spec)?;

    // Local-only fields.
    spec.node_name = None;
    spec.service_account_name = None;
    spec.service_account = None;
    spec.scheduler_name = None;
    spec.priority = None;
    spec.priority_class_name = None;
    spec.preemption_policy = None;
    if spec.hostname.is_none() && is_dns_label(&id.name) {
        spec.hostname = Some(id.name.clone());
    }
    if let Some(ips) = spec.image_pull_secrets.take() {
        let mut kept = Vec::new();
        for r in ips {
            if ctx.payload.secrets.contains_key(r.name.as_str()) {
                let name = ctx.use_secret(&r.name, false, None, "imagePullSecrets")?;
                kept.push(LocalObjectReference { name });
            } else {
                ctx.warnings.push(format!(
                    "imagePullSecret {:?} was not sent with the pod and is dropped",
                    r.name
                ));
            }
        }
        spec.image_pull_secrets = if kept.is_empty() { None } else { Some(kept) };
    }

    let meta = &data.pod.metadata;
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.extend(owner_labels(&id.uid));
    let mut annotations: BTreeMap<String, String> = meta
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !is_dropped_annotation(k))
        .collect();
    annotations.extend(source_annotations(meta, &id.namespace));

    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(remote_name(NameKind::Pod, &id.name, &id.uid)),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };

    let Ctx {
        payload,
        used,
        mut warnings,
        ..
    } = ctx;
    let config_maps = used
        .config_maps
        .iter()
        .filter_map(|n| payload.config_maps.get(n.as_str()).map(|cm| (n, cm)))
        .map(|(n, cm)| {
            remote_config_map(
                cm,
                remote_name(NameKind::ConfigMap, n, &id.uid),
                &namespace,
                &id,
            )
        })
        .collect();
    let mut secrets: Vec<Secret> = used
        .secrets
        .iter()
        .filter_map(|n| payload.secrets.get(n.as_str()).map(|s| (n, s)))
        .map(|(n, s)| {
            remote_secret(
                s,
                remote_name(NameKind::Secret, n, &id.uid),
                &namespace,
                &id,
                &mut warnings,
            )
        })
        .collect();
    secrets.extend(extra_secrets);

    Ok(RemotePlan {
        local: id,
        namespace,
        pod,
        config_maps,
        secrets,
        warnings,
    })
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
