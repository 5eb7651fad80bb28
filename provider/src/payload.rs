//! Pure payload gathering: which ConfigMaps and Secrets a pod references, and
//! the create payload built from them once fetched.
//!
//! Rules (those of interLink's Virtual Kubelet, plus env references):
//! - per container (init containers first, then containers, spec order), the
//!   ConfigMaps and Secrets behind its `volumeMounts`, its `env[].valueFrom`
//!   and its `envFrom`;
//! - projected and `downwardAPI` volumes are rendered into a ConfigMap named
//!   after the *volume*, whose `data` maps file path to content;
//! - a reference marked `optional` may be missing; any other missing object
//!   blocks the create (the controller retries, then fails the pod);
//! - the pod's `imagePullSecrets` are shipped with its first container
//!   (optional, see `pull_secrets`);
//! - service-account token Secrets are local credentials: they are not
//!   shipped (and their volumes are removed from the shipped pod) unless asked.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, Secret,
    Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use offload_wire::{PodCreateRequests, RetrievedContainer, RetrievedPodData};

mod pull_secrets;

/// A reference to a namespaced object by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub name: String,
    pub optional: bool,
}

/// What one container needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRefs {
    pub name: String,
    pub config_maps: Vec<ObjectRef>,
    pub secrets: Vec<ObjectRef>,
    /// Names of projected / downwardAPI volumes it mounts.
    pub projected_volumes: Vec<String>,
}

/// Everything a pod needs fetched before create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub containers: Vec<ContainerRefs>,
    /// Every ConfigMap to fetch (containers' and projected sources'); a name
    /// is optional only if every reference to it is.
    pub config_maps: BTreeMap<String, bool>,
    pub secrets: BTreeMap<String, bool>,
}

/// A referenced object that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} \"{name}\" not found")]
pub struct MissingRef {
    pub kind: &'static str,
    pub name: String,
}

fn push(list: &mut Vec<ObjectRef>, name: &str, optional: Option<bool>) {
    if name.is_empty() {
        return;
    }
    let optional = optional.unwrap_or(false);
    match list.iter_mut().find(|r| r.name == name) {
        Some(r) => r.optional &= optional,
        None => list.push(ObjectRef {
            name: name.to_string(),
            optional,
        }),
    }
}

fn merge(all: &mut BTreeMap<String, bool>, r: &ObjectRef) {
    all.entry(r.name.clone())
        .and_modify(|o| *o &= r.optional)
        .or_insert(r.optional);
}

fn all_containers(pod: &Pod) -> Vec<&Container> {
    let Some(spec) = pod.spec.as_ref() else {
        return vec![];
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect()
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[])
}

/// The references of one container (its mounts, env and envFrom).
fn container_references(c: &Container, vols: &[Volume]) -> ContainerRefs {
    let mut r = ContainerRefs {
        name: c.name.clone(),
        ..Default::default()
    };
    for m in c.volume_mounts.iter().flatten() {
        let Some(v) = vols.iter().find(|v| v.name == m.name) else {
            continue;
        };
        if let Some(cm) = &v.config_map {
            push(&mut r.config_maps, &cm.name, cm.optional);
        }
        if let Some(s) = &v.secret {
            push(
                &mut r.secrets,
                s.secret_name.as_deref().unwrap_or(""),
                s.optional,
            );
        }
        if (v.projected.is_some() || v.downward_api.is_some())
            && !r.projected_volumes.contains(&v.name)
        {
            r.projected_volumes.push(v.name.clone());
        }
    }
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(k) = &from.config_map_key_ref {
            push(&mut r.config_maps, &k.name, k.optional);
        }
        if let Some(k) = &from.secret_key_ref {
            push(&mut r.secrets, &k.name, k.optional);
        }
    }
    for e in c.env_from.iter().flatten() {
        if let Some(k) = &e.config_map_ref {
            push(&mut r.config_maps, &k.name, k.optional);
        }
        if let Some(k) = &e.secret_ref {
            push(&mut r.secrets, &k.name, k.optional);
        }
    }
    r
}

/// Add the sources of the projected volumes that some container mounts.
fn merge_projected_sources(out: &mut PodRefs, vols: &[Volume]) {
    let mounted: BTreeSet<&str> = out
        .containers
        .iter()
        .flat_map(|c| c.projected_volumes.iter().map(String::as_str))
        .collect();
    for v in vols.iter().filter(|v| mounted.contains(v.name.as_str())) {
        for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &s.config_map {
                merge(
                    &mut out.config_maps,
                    &ObjectRef {
                        name: cm.name.clone(),
                        optional: cm.optional.unwrap_or(false),
                    },
                );
            }
            if let Some(sec) = &s.secret {
                merge(
                    &mut out.secrets,
                    &ObjectRef {
                        name: sec.name.clone(),
                        optional: sec.optional.unwrap_or(false),
                    },
                );
            }
        }
    }
}

/// The references of a pod, per container.
pub fn references(pod: &Pod) -> PodRefs {
    let vols = volumes(pod);
    let mut out = PodRefs::default();
    for c in all_containers(pod) {
        let r = container_references(c, vols);
        r.config_maps
            .iter()
            .for_each(|x| merge(&mut out.config_maps, x));
        r.secrets.iter().for_each(|x| merge(&mut out.secrets, x));
        out.containers.push(r);
    }
    merge_projected_sources(&mut out, vols);
    pull_secrets::add(pod, &mut out);
    out.config_maps.remove("");
    out.secrets.remove("");
    out
}

/// The objects fetched for a pod: `None` means "does not exist".
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
}

pub const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

fn is_sa_token(s: &Secret) -> bool {
    s.type_.as_deref() == Some(SA_TOKEN_TYPE)
}

/// Go's `%q` for the common cases (what interLink uses for label files).
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Kubernetes' `fieldpath.FormatMap`: sorted `key="value"` lines, no newline
/// after the last one.
fn map_lines(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward-API field path for this pod, if known locally.
pub fn field_value(pod: &Pod, f: &ObjectFieldSelector) -> Option<String> {
    let md = &pod.metadata;
    let path = f.field_path.as_str();
    let sub = |prefix: &str, m: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        m.and_then(|m| m.get(key)).cloned().or(Some(String::new()))
    };
    match path {
        "metadata.name" => md.name.clone(),
        "metadata.namespace" => md.namespace.clone(),
        "metadata.uid" => md.uid.clone(),
        "metadata.labels" => Some(map_lines(md.labels.as_ref())),
        "metadata.annotations" => Some(map_lines(md.annotations.as_ref())),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => pod.status.as_ref().and_then(|s| s.host_ip.clone()),
        _ if path.starts_with("metadata.labels['") => sub("metadata.labels['", md.labels.as_ref()),
        _ if path.starts_with("metadata.annotations['") => {
            sub("metadata.annotations['", md.annotations.as_ref())
        }
        _ => None,
    }
}

fn items_or_all<'a>(
    items: Option<&'a [KeyToPath]>,
    keys: impl Iterator<Item = &'a String>,
) -> Vec<(String, String)> {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        _ => keys.map(|k| (k.clone(), k.clone())).collect(),
    }
}

fn cm_value(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(key).cloned())
        .or_else(|| {
            cm.binary_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
}

fn secret_value(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// The keys and values of a ConfigMap or a Secret, as files.
trait KeyedData {
    fn keys(&self) -> impl Iterator<Item = &String>;
    fn value(&self, key: &str) -> Option<String>;
}

impl KeyedData for ConfigMap {
    fn keys(&self) -> impl Iterator<Item = &String> {
        let data = self.data.iter().flat_map(|d| d.keys());
        data.chain(self.binary_data.iter().flat_map(|d| d.keys()))
    }

    fn value(&self, key: &str) -> Option<String> {
        cm_value(self, key)
    }
}

impl KeyedData for Secret {
    fn keys(&self) -> impl Iterator<Item = &String> {
        self.data.iter().flat_map(|d| d.keys())
    }

    fn value(&self, key: &str) -> Option<String> {
        secret_value(self, key)
    }
}

/// The files of a projected ConfigMap or Secret source (`items`, or every
/// key) into `data`; a missing object is an error unless `optional`.
fn project_keys<T: KeyedData>(
    found: Option<&T>,
    kind: &'static str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    data: &mut BTreeMap<String, String>,
) -> Result<(), MissingRef> {
    let Some(obj) = found else {
        if optional.unwrap_or(false) {
            return Ok(());
        }
        let name = name.to_owned();
        return Err(MissingRef { kind, name });
    };
    for (k, path) in items_or_all(items, obj.keys()) {
        if let Some(v) = obj.value(&k) {
            data.insert(path, v);
        }
    }
    Ok(())
}

fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile], data: &mut BTreeMap<String, String>) {
    for i in items {
        if let Some(v) = i.field_ref.as_ref().and_then(|f| field_value(pod, f)) {
            data.insert(i.path.clone(), v);
        }
    }
}

/// Render a projected or downwardAPI volume into the ConfigMap interLink ships
/// for it (named after the volume; `data` maps file path to content).
pub fn render_volume(
    pod: &Pod,
    volume: &Volume,
    fetched: &Fetched,
) -> Result<ConfigMap, MissingRef> {
    let mut data = BTreeMap::new();
    if let Some(d) = &volume.downward_api {
        downward_files(pod, d.items.as_deref().unwrap_or(&[]), &mut data);
    }
    for s in volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
    {
        if let Some(src) = &s.config_map {
            let cm = fetched.config_maps.get(&src.name).and_then(Option::as_ref);
            let (items, optional) = (src.items.as_deref(), src.optional);
            project_keys(cm, "configmap", &src.name, items, optional, &mut data)?;
        }
        if let Some(src) = &s.secret {
            let sec = fetched.secrets.get(&src.name).and_then(Option::as_ref);
            let (items, optional) = (src.items.as_deref(), src.optional);
            project_keys(sec, "secret", &src.name, items, optional, &mut data)?;
        }
        if let Some(d) = &s.downward_api {
            downward_files(pod, d.items.as_deref().unwrap_or(&[]), &mut data);
        }
        // serviceAccountToken sources are local credentials: not shipped; the
        // remote cluster injects its own service account token.
    }
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(volume.name.clone()),
            namespace: pod.metadata.namespace.clone(),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    })
}

/// Drop every `tunnel.offload.dev/*` annotation (users can write them on
/// any pod; only gateway-manager's allocation may travel, merged in after
/// this by `tunnel::annotated`).
pub fn strip_tunnel_annotations(pod: &mut Pod) {
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.retain(|k, _| !k.starts_with(offload_wire::keys::tunnel::PREFIX));
    }
}

/// Strip what the remote side must not see and resolve downward-API env
/// values (the remote pod has another name, namespace and uid).
pub fn prepare_pod(pod: &Pod, ship_sa_tokens: bool, sa_token_secrets: &BTreeSet<String>) -> Pod {
    let mut p = pod.clone();
    p.metadata.managed_fields = None;
    let resolved = pod.clone();
    if let Some(spec) = p.spec.as_mut() {
        let dropped: BTreeSet<String> = if ship_sa_tokens {
            BTreeSet::new()
        } else {
            spec.volumes
                .iter()
                .flatten()
                .filter(|v| {
                    v.secret
                        .as_ref()
                        .and_then(|s| s.secret_name.as_ref())
                        .is_some_and(|n| sa_token_secrets.contains(n))
                })
                .map(|v| v.name.clone())
                .collect()
        };
        if let Some(vols) = spec.volumes.as_mut() {
            vols.retain(|v| !dropped.contains(&v.name));
        }
        let fix = |c: &mut Container| {
            if let Some(m) = c.volume_mounts.as_mut() {
                m.retain(|m| !dropped.contains(&m.name));
            }
            for e in c.env.iter_mut().flatten() {
                let val = e
                    .value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .and_then(|f| field_value(&resolved, f));
                if let Some(v) = val {
                    e.value = Some(v);
                    e.value_from = None;
                }
            }
        };
        spec.init_containers.iter_mut().flatten().for_each(fix);
        spec.containers.iter_mut().for_each(fix);
    }
    p
}

fn lookup<T: Clone>(
    kind: &'static str,
    refs: &[ObjectRef],
    fetched: &BTreeMap<String, Option<T>>,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>, MissingRef> {
    let mut out = vec![];
    for r in refs {
        match fetched.get(&r.name).and_then(Option::as_ref) {
            Some(o) if keep(o) => out.push(o.clone()),
            Some(_) => {}
            None if r.optional => {}
            None => {
                return Err(MissingRef {
                    kind,
                    name: r.name.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn clean_meta(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        labels: m.labels.clone(),
        annotations: m.annotations.clone().map(|mut a| {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a
        }),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

/// Build the plugin's create payload. Fails with the first missing,
/// non-optional reference.
pub fn build_payload(
    pod: &Pod,
    refs: &PodRefs,
    fetched: &Fetched,
    ship_sa_tokens: bool,
) -> Result<RetrievedPodData, MissingRef> {
    let sa_tokens: BTreeSet<String> = fetched
        .secrets
        .iter()
        .filter_map(|(n, s)| s.as_ref().filter(|s| is_sa_token(s)).map(|_| n.clone()))
        .collect();
    let mut containers = vec![];
    let vols = volumes(pod);
    for c in &refs.containers {
        let config_maps = lookup("configmap", &c.config_maps, &fetched.config_maps, |_| true)?
            .into_iter()
            .map(|mut cm| {
                cm.metadata = clean_meta(&cm.metadata);
                cm
            })
            .collect();
        let secrets = lookup("secret", &c.secrets, &fetched.secrets, |s| {
            ship_sa_tokens || !is_sa_token(s)
        })?
        .into_iter()
        .map(|mut s| {
            s.metadata = clean_meta(&s.metadata);
            s
        })
        .collect();
        let mut projected = vec![];
        for name in &c.projected_volumes {
            if let Some(v) = vols.iter().find(|v| &v.name == name) {
                projected.push(render_volume(pod, v, fetched)?);
            }
        }
        containers.push(RetrievedContainer {
            name: c.name.clone(),
            config_maps,
            projected_volume_maps: projected,
            secrets,
            empty_dirs: vec![],
        });
    }
    Ok(RetrievedPodData {
        pod: prepare_pod(pod, ship_sa_tokens, &sa_tokens),
        containers,
        job_config: None,
        job_script: None,
    })
}

/// The interLink API server's VK-facing create body: the same objects,
/// deduplicated by name across containers.
pub fn to_create_requests(data: &RetrievedPodData) -> PodCreateRequests {
    fn dedupe<T: Clone>(
        items: impl Iterator<Item = T>,
        name: impl Fn(&T) -> Option<String>,
    ) -> Vec<T> {
        let mut seen = BTreeSet::new();
        items.filter(|i| seen.insert(name(i))).collect()
    }
    PodCreateRequests {
        pod: data.pod.clone(),
        config_maps: dedupe(
            data.containers
                .iter()
                .flat_map(|c| c.config_maps.iter().cloned()),
            |c| c.metadata.name.clone(),
        ),
        secrets: dedupe(
            data.containers
                .iter()
                .flat_map(|c| c.secrets.iter().cloned()),
            |s| s.metadata.name.clone(),
        ),
        projected_volume_maps: dedupe(
            data.containers
                .iter()
                .flat_map(|c| c.projected_volume_maps.iter().cloned()),
            |c| c.metadata.name.clone(),
        ),
        job_script_url: String::new(),
    }
}

/// Base64 of a secret value, for tests and debugging without leaking it to logs.
pub fn b64(b: &ByteString) -> String {
    base64::engine::general_purpose::STANDARD.encode(&b.0)
}

#[cfg(test)]
mod tests;
