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

/// The references of a pod, per container.
pub fn references(pod: &Pod) -> PodRefs {
    let vols = volumes(pod);
    let mut out = PodRefs::default();
    for c in all_containers(pod) {
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
        r.config_maps
            .iter()
            .for_each(|x| merge(&mut out.config_maps, x));
        r.secrets.iter().for_each(|x| merge(&mut out.secrets, x));
        out.containers.push(r);
    }
    // Sources of projected volumes that some container mounts.
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
            match fetched.config_maps.get(&src.name).and_then(Option::as_ref) {
                Some(cm) => {
                    let keys = cm
                        .data
                        .iter()
                        .flat_map(|d| d.keys())
                        .chain(cm.binary_data.iter().flat_map(|d| d.keys()));
                    for (k, path) in items_or_all(src.items.as_deref(), keys) {
                        if let Some(v) = cm_value(cm, &k) {
                            data.insert(path, v);
                        }
                    }
                }
                None if src.optional.unwrap_or(false) => {}
                None => {
                    return Err(MissingRef {
                        kind: "configmap",
                        name: src.name.clone(),
                    });
                }
            }
        }
        if let Some(src) = &s.secret {
            match fetched.secrets.get(&src.name).and_then(Option::as_ref) {
                Some(sec) => {
                    let keys = sec.data.iter().flat_map(|d| d.keys());
                    for (k, path) in items_or_all(src.items.as_deref(), keys) {
                        if let Some(v) = secret_value(sec, &k) {
                            data.insert(path, v);
                        }
                    }
                }
                None if src.optional.unwrap_or(false) => {}
                None => {
                    return Err(MissingRef {
                        kind: "secret",
                        name: src.name.clone(),
                    });
                }
            }
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
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource,
        DownwardAPIProjection, EnvFromSource, EnvVar, EnvVarSource, PodSpec, ProjectedVolumeSource,
        SecretKeySelector, SecretVolumeSource, ServiceAccountTokenProjection, VolumeMount,
        VolumeProjection,
    };
    use pretty_assertions::assert_eq;

    fn mount(name: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: format!("/m/{name}"),
            ..Default::default()
        }
    }

    fn cm(name: &str, kv: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                managed_fields: Some(vec![]),
                ..Default::default()
            },
            data: Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn secret(name: &str, kv: &[(&str, &str)], type_: Option<&str>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            type_: type_.map(str::to_string),
            ..Default::default()
        }
    }

    fn test_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                labels: Some(
                    [
                        ("b".to_string(), "2".to_string()),
                        ("a".into(), "x\"y".into()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                init_containers: Some(vec![Container {
                    name: "init".into(),
                    volume_mounts: Some(vec![mount("cfg")]),
                    ..Default::default()
                }]),
                containers: vec![Container {
                    name: "main".into(),
                    volume_mounts: Some(vec![
                        mount("cfg"),
                        mount("sec"),
                        mount("proj"),
                        mount("token"),
                    ]),
                    env: Some(vec![
                        EnvVar {
                            name: "A".into(),
                            value_from: Some(EnvVarSource {
                                config_map_key_ref: Some(ConfigMapKeySelector {
                                    name: "env-cm".into(),
                                    key: "k".into(),
                                    optional: Some(true),
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        EnvVar {
                            name: "B".into(),
                            value_from: Some(EnvVarSource {
                                secret_key_ref: Some(SecretKeySelector {
                                    name: "env-sec".into(),
                                    key: "k".into(),
                                    optional: None,
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        EnvVar {
                            name: "POD".into(),
                            value_from: Some(EnvVarSource {
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.name".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    env_from: Some(vec![EnvFromSource {
                        config_map_ref: Some(ConfigMapEnvSource {
                            name: "from-cm".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                volumes: Some(vec![
                    Volume {
                        name: "cfg".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: "vol-cm".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "sec".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some("vol-sec".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "token".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some("default-token-abc".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "proj".into(),
                        projected: Some(ProjectedVolumeSource {
                            sources: Some(vec![
                                VolumeProjection {
                                    config_map: Some(ConfigMapProjection {
                                        name: "proj-cm".into(),
                                        items: Some(vec![KeyToPath {
                                            key: "a".into(),
                                            path: "dir/a.txt".into(),
                                            mode: None,
                                        }]),
                                        optional: None,
                                    }),
                                    ..Default::default()
                                },
                                VolumeProjection {
                                    downward_api: Some(DownwardAPIProjection {
                                        items: Some(vec![
                                            DownwardAPIVolumeFile {
                                                path: "labels".into(),
                                                field_ref: Some(ObjectFieldSelector {
                                                    field_path: "metadata.labels".into(),
                                                    ..Default::default()
                                                }),
                                                ..Default::default()
                                            },
                                            DownwardAPIVolumeFile {
                                                path: "ns".into(),
                                                field_ref: Some(ObjectFieldSelector {
                                                    field_path: "metadata.namespace".into(),
                                                    ..Default::default()
                                                }),
                                                ..Default::default()
                                            },
                                        ]),
                                    }),
                                    ..Default::default()
                                },
                                VolumeProjection {
                                    service_account_token: Some(ServiceAccountTokenProjection {
                                        path: "token".into(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                },
                            ]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "unused".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: "never-mounted".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn all_fetched() -> Fetched {
        let mut f = Fetched::default();
        for n in ["vol-cm", "from-cm"] {
            f.config_maps.insert(n.into(), Some(cm(n, &[("k", "v")])));
        }
        f.config_maps.insert(
            "proj-cm".into(),
            Some(cm("proj-cm", &[("a", "line1\nline2\n"), ("b", "no")])),
        );
        f.config_maps.insert("env-cm".into(), None);
        f.secrets.insert(
            "vol-sec".into(),
            Some(secret("vol-sec", &[("pw", "s3cret")], None)),
        );
        f.secrets.insert(
            "env-sec".into(),
            Some(secret("env-sec", &[("k", "v")], None)),
        );
        f.secrets.insert(
            "default-token-abc".into(),
            Some(secret(
                "default-token-abc",
                &[("token", "local-credential")],
                Some(SA_TOKEN_TYPE),
            )),
        );
        f
    }

    #[test]
    fn references_per_container_with_optional_flags() {
        let r = references(&test_pod());
        assert_eq!(r.containers.len(), 2);
        assert_eq!(r.containers[0].name, "init");
        assert_eq!(
            r.containers[0].config_maps,
            vec![ObjectRef {
                name: "vol-cm".into(),
                optional: false
            }]
        );
        let main = &r.containers[1];
        let cms: Vec<&str> = main.config_maps.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(cms, vec!["vol-cm", "env-cm", "from-cm"]);
        assert_eq!(main.projected_volumes, vec!["proj".to_string()]);
        assert_eq!(
            r.config_maps.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["env-cm", "from-cm", "proj-cm", "vol-cm"]
        );
        assert_eq!(r.config_maps.get("env-cm"), Some(&true));
        assert_eq!(r.config_maps.get("never-mounted"), None);
        assert_eq!(
            r.secrets.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["default-token-abc", "env-sec", "vol-sec"]
        );
    }

    #[test]
    fn payload_has_per_container_objects_and_rendered_projected_volume() {
        let p = test_pod();
        let data = build_payload(&p, &references(&p), &all_fetched(), false).expect("payload");
        assert_eq!(data.containers[0].name, "init");
        assert_eq!(data.containers[0].config_maps.len(), 1);
        let main = &data.containers[1];
        // env-cm is optional and missing: skipped.
        assert_eq!(
            main.config_maps
                .iter()
                .filter_map(|c| c.metadata.name.as_deref())
                .collect::<Vec<_>>(),
            vec!["vol-cm", "from-cm"]
        );
        assert!(main.config_maps[0].metadata.managed_fields.is_none());
        // The service-account token secret is not shipped.
        assert_eq!(
            main.secrets
                .iter()
                .filter_map(|s| s.metadata.name.as_deref())
                .collect::<Vec<_>>(),
            vec!["vol-sec", "env-sec"]
        );
        let proj = &main.projected_volume_maps[0];
        assert_eq!(proj.metadata.name.as_deref(), Some("proj"));
        let d = proj.data.as_ref().expect("data");
        assert_eq!(
            d.get("dir/a.txt").map(String::as_str),
            Some("line1\nline2\n")
        );
        assert_eq!(
            d.get("labels").map(String::as_str),
            Some("a=\"x\\\"y\"\nb=\"2\"")
        );
        assert_eq!(d.get("ns").map(String::as_str), Some("ns"));
        assert!(!d.contains_key("token"));
        assert!(!d.contains_key("b"), "only listed items");
        // Shipped pod: token volume and mount gone, fieldRef env resolved.
        let spec = data.pod.spec.as_ref().expect("spec");
        assert!(spec.volumes.iter().flatten().all(|v| v.name != "token"));
        let c = &spec.containers[0];
        assert!(c.volume_mounts.iter().flatten().all(|m| m.name != "token"));
        let pod_env = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "POD")
            .expect("env");
        assert_eq!(pod_env.value.as_deref(), Some("p"));
        assert!(pod_env.value_from.is_none());
        // Secret references stay references: the plugin creates them remotely.
        assert!(
            c.env
                .iter()
                .flatten()
                .any(|e| e.name == "B" && e.value_from.is_some())
        );
        let json = serde_json::to_string(&data).expect("json");
        assert!(
            !json.contains("bG9jYWwtY3JlZGVudGlhbA"),
            "sa token never shipped"
        );
    }

    #[test]
    fn sa_token_shipped_when_asked() {
        let p = test_pod();
        let data = build_payload(&p, &references(&p), &all_fetched(), true).expect("payload");
        assert_eq!(data.containers[1].secrets.len(), 3);
    }

    #[test]
    fn missing_required_reference_is_an_error() {
        let p = test_pod();
        let mut f = all_fetched();
        f.secrets.insert("env-sec".into(), None);
        assert_eq!(
            build_payload(&p, &references(&p), &f, false).err(),
            Some(MissingRef {
                kind: "secret",
                name: "env-sec".into()
            })
        );
        let mut f = all_fetched();
        f.config_maps.insert("proj-cm".into(), None);
        assert_eq!(
            build_payload(&p, &references(&p), &f, false)
                .err()
                .map(|e| e.to_string()),
            Some("configmap \"proj-cm\" not found".to_string())
        );
    }

    #[test]
    fn interlink_create_requests_dedupe_across_containers() {
        let p = test_pod();
        let data = build_payload(&p, &references(&p), &all_fetched(), false).expect("payload");
        let req = to_create_requests(&data);
        let names: Vec<_> = req
            .config_maps
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        assert_eq!(names, vec!["vol-cm".to_string(), "from-cm".to_string()]);
        assert_eq!(req.projected_volume_maps.len(), 1);
        let v = serde_json::to_value(&req).expect("json");
        assert!(v.get("projectedvolumesmaps").is_some());
        assert!(v.get("configmaps").is_some());
        assert_eq!(v.get("jobscriptURL"), Some(&serde_json::json!("")));
    }

    #[test]
    fn downward_api_volume_rendered() {
        let p = test_pod();
        let v = Volume {
            name: "dw".into(),
            downward_api: Some(k8s_openapi::api::core::v1::DownwardAPIVolumeSource {
                items: Some(vec![
                    DownwardAPIVolumeFile {
                        path: "uid".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.uid".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    DownwardAPIVolumeFile {
                        path: "b".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels['b']".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cm = render_volume(&p, &v, &Fetched::default()).expect("renders");
        let d = cm.data.expect("data");
        assert_eq!(d.get("uid").map(String::as_str), Some("uid-1"));
        assert_eq!(d.get("b").map(String::as_str), Some("2"));
    }
}
