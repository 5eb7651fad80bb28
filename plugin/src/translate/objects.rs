//! The remote copies of the ConfigMaps and Secrets the translated spec uses.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{context::Ctx, owner_labels, source_annotations};
use crate::{
    naming::{NameKind, remote_name},
    status::LocalIdentity,
};

/// What one translation ships besides the pod.
pub(super) struct Shipped {
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    pub warnings: Vec<String>,
}

/// The used payload objects under their remote names, in name order.
pub(super) fn shipped(ctx: Ctx<'_>, namespace: &str) -> Shipped {
    let Ctx {
        payload,
        used,
        mut warnings,
        id,
        ..
    } = ctx;
    let config_maps = sent_and_used(&used.config_maps, &payload.config_maps)
        .map(|(n, cm)| {
            let name = remote_name(NameKind::ConfigMap, n, &id.uid);
            remote_config_map(cm, name, namespace, id)
        })
        .collect();
    let secrets = sent_and_used(&used.secrets, &payload.secrets)
        .map(|(n, s)| {
            let name = remote_name(NameKind::Secret, n, &id.uid);
            remote_secret(s, name, namespace, id, &mut warnings)
        })
        .collect();
    Shipped {
        config_maps,
        secrets,
        warnings,
    }
}

/// The payload objects the spec uses, by name.
fn sent_and_used<'a, T>(
    used: &'a BTreeSet<String>,
    sent: &'a BTreeMap<&str, &'a T>,
) -> impl Iterator<Item = (&'a str, &'a T)> {
    used.iter()
        .filter_map(|n| sent.get(n.as_str()).map(|o| (n.as_str(), *o)))
}

/// Metadata of a remote copy: its labels plus ours, the source annotations.
fn remote_meta(src: &ObjectMeta, name: String, ns: &str, id: &LocalIdentity) -> ObjectMeta {
    let mut labels = src.labels.clone().unwrap_or_default();
    labels.extend(owner_labels(&id.uid));
    ObjectMeta {
        name: Some(name),
        namespace: Some(ns.into()),
        labels: Some(labels),
        annotations: Some(source_annotations(src, &id.namespace)),
        ..Default::default()
    }
}

fn remote_config_map(cm: &ConfigMap, name: String, ns: &str, id: &LocalIdentity) -> ConfigMap {
    ConfigMap {
        metadata: remote_meta(&cm.metadata, name, ns, id),
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
    let mut type_ = s.type_.clone();
    if type_.as_deref() == Some("kubernetes.io/service-account-token") {
        warnings.push(format!(
            "Secret {:?} is a local service-account token; created remotely as Opaque",
            s.metadata.name.as_deref().unwrap_or_default()
        ));
        type_ = Some("Opaque".into());
    }
    Secret {
        metadata: remote_meta(&s.metadata, name, ns, id),
        data: s.data.clone(),
        string_data: s.string_data.clone(),
        type_,
        immutable: s.immutable,
    }
}
