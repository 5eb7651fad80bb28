//! Volumes: the local service-account token stays behind, references are
//! renamed, rendered projected/downward-API data becomes a per-pod Secret.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    ByteString,
    api::core::v1::{
        ConfigMap, KeyToPath, PodSpec, ProjectedVolumeSource, Secret, SecretVolumeSource, Volume,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use offload_wire::keys;

use super::{
    Result, SA_MOUNT_PATH, TranslateError,
    context::{Ctx, RefKind},
    invalid, owner_labels, source_annotations,
    validate::all_containers,
};
use crate::naming::{NameKind, remote_name};

/// Names of the volumes that carry the local service-account token.
pub(super) fn service_account_volumes(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in all_containers(spec) {
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

/// Rewrites the volumes: the service-account token volumes are dropped
/// (their names are returned, so their mounts can go too), references are
/// renamed, rendered projected/downward data becomes a per-pod Secret (pushed
/// to `extra_secrets`).
pub(super) fn translate_volumes(
    ctx: &mut Ctx<'_>,
    spec: &mut PodSpec,
    extra_secrets: &mut Vec<Secret>,
) -> Result<BTreeSet<String>> {
    let dropped = service_account_volumes(spec);
    let mut out = Vec::new();
    for v in spec.volumes.take().unwrap_or_default() {
        if !dropped.contains(&v.name) {
            out.push(translate_volume(ctx, v, extra_secrets)?);
        }
    }
    spec.volumes = if out.is_empty() { None } else { Some(out) };
    Ok(dropped)
}

fn translate_volume(
    ctx: &mut Ctx<'_>,
    mut v: Volume,
    extra_secrets: &mut Vec<Secret>,
) -> Result<Volume> {
    let by = format!("volume {:?}", v.name);
    let minor = ctx.cfg.remote_minor;
    if let Some(cm) = v.config_map.as_mut() {
        cm.name = ctx.use_ref(RefKind::ConfigMap, &cm.name, cm.optional, None, &by)?;
    } else if let Some(s) = v.secret.as_mut() {
        let name = s
            .secret_name
            .clone()
            .ok_or_else(|| invalid(format!("{by}: secret.secretName is missing")))?;
        s.secret_name = Some(ctx.use_ref(RefKind::Secret, &name, s.optional, None, &by)?);
    } else if let Some(p) = v.projected.as_ref() {
        if let Some(data) = ctx.payload.volume_data.get(v.name.as_str()).copied() {
            let mode = p.default_mode;
            v = volume_data_volume(ctx, &v, data, mode, extra_secrets);
        } else {
            let mut p = p.clone();
            rename_projected_sources(ctx, &mut p, &v.name, &by)?;
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
    Ok(v)
}

/// A projected volume without rendered data: the remote kubelet renders it,
/// which works for ConfigMap/Secret/downward sources but not for a token of
/// the local cluster.
fn rename_projected_sources(
    ctx: &mut Ctx<'_>,
    p: &mut ProjectedVolumeSource,
    volume: &str,
    by: &str,
) -> Result<()> {
    let minor = ctx.cfg.remote_minor;
    for src in p.sources.iter_mut().flatten() {
        if let Some(cm) = src.config_map.as_mut() {
            cm.name = ctx.use_ref(RefKind::ConfigMap, &cm.name, cm.optional, None, by)?;
        }
        if let Some(s) = src.secret.as_mut() {
            s.name = ctx.use_ref(RefKind::Secret, &s.name, s.optional, None, by)?;
        }
        if src.service_account_token.is_some() {
            return Err(TranslateError::Missing {
                what: format!(
                    "the rendered data of projected volume {volume:?} (it has a serviceAccountToken source)"
                ),
                by: by.into(),
            });
        }
        if src.cluster_trust_bundle.is_some() {
            return Err(TranslateError::Unsupported(format!(
                "{by}: clusterTrustBundle projections need Kubernetes 1.29 on the remote cluster (it runs 1.{minor}) and no rendered data was sent"
            )));
        }
    }
    Ok(())
}
