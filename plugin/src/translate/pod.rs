//! The remote pod itself: the spec fields that only make sense locally, where
//! the pod is scheduled remotely, and its metadata.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{LocalObjectReference, Pod, PodSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use offload_wire::keys;

use super::{
    Result,
    context::{Ctx, RefKind},
    owner_labels, source_annotations,
};
use crate::{
    naming::{NameKind, is_rfc1123_label, remote_name},
    status::LocalIdentity,
};

/// Where the pod runs remotely is the remote operator's choice: the pod's
/// nodeSelector, tolerations and node affinity were written for the *local*
/// scheduler (to land on the virtual node, which satisfies all of them), so
/// they are replaced by the configured remote ones, as the Python plugin
/// does. Pod (anti-)affinity is about other pods and stays.
pub(super) fn translate_scheduling(ctx: &Ctx<'_>, spec: &mut PodSpec) {
    let cfg = ctx.cfg;
    spec.node_selector = (!cfg.node_selector.is_empty()).then(|| cfg.node_selector.clone());
    spec.tolerations = (!cfg.tolerations.is_empty()).then(|| cfg.tolerations.clone());
    if let Some(a) = spec.affinity.as_mut() {
        a.node_affinity = None;
        if a.pod_affinity.is_none() && a.pod_anti_affinity.is_none() {
            spec.affinity = None;
        }
    }
}

/// Clears what names things of the local cluster (its node, service account,
/// scheduler, priority classes) and keeps the pod's hostname its local name.
pub(super) fn strip_local_fields(spec: &mut PodSpec, id: &LocalIdentity) {
    spec.node_name = None;
    spec.service_account_name = None;
    spec.service_account = None;
    spec.scheduler_name = None;
    spec.priority = None;
    spec.priority_class_name = None;
    spec.preemption_policy = None;
    if spec.hostname.is_none() && is_rfc1123_label(&id.name) {
        spec.hostname = Some(id.name.clone());
    }
}

/// Keeps the image pull Secrets that were sent (renamed), drops the others
/// with a warning: the remote nodes may pull without them.
pub(super) fn translate_image_pull_secrets(ctx: &mut Ctx<'_>, spec: &mut PodSpec) -> Result<()> {
    let Some(ips) = spec.image_pull_secrets.take() else {
        return Ok(());
    };
    let mut kept = Vec::new();
    for r in ips {
        if ctx.payload.secrets.contains_key(r.name.as_str()) {
            let name = ctx.use_ref(RefKind::Secret, &r.name, None, None, "imagePullSecrets")?;
            kept.push(LocalObjectReference { name });
        } else {
            ctx.warnings.push(format!(
                "imagePullSecret {:?} was not sent with the pod and is dropped",
                r.name
            ));
        }
    }
    spec.image_pull_secrets = if kept.is_empty() { None } else { Some(kept) };
    Ok(())
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

/// The remote pod: the local labels plus ours, the local annotations minus
/// the dropped ones plus the source ones, the translated spec.
pub(super) fn remote_pod(
    local: &ObjectMeta,
    id: &LocalIdentity,
    namespace: &str,
    spec: PodSpec,
) -> Pod {
    let mut labels = local.labels.clone().unwrap_or_default();
    labels.extend(owner_labels(&id.uid));
    let mut annotations: BTreeMap<String, String> = local
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !is_dropped_annotation(k))
        .collect();
    annotations.extend(source_annotations(local, &id.namespace));
    Pod {
        metadata: ObjectMeta {
            name: Some(remote_name(NameKind::Pod, &id.name, &id.uid)),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}
