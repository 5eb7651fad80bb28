//! Checks of the input: the local pod's identity and the structure of its
//! spec. Anything refused here is the caller's mistake (HTTP 400).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use super::{Result, invalid};
use crate::{
    naming::{is_rfc1123_label, is_rfc1123_subdomain, is_valid_uid},
    status::LocalIdentity,
};

/// The local pod's identity, checked.
pub fn local_identity(pod: &Pod) -> Result<LocalIdentity> {
    let m = &pod.metadata;
    let name = m.name.clone().unwrap_or_default();
    let namespace = m.namespace.clone().unwrap_or_default();
    let uid = m.uid.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("pod.metadata.name is missing"));
    }
    if !is_rfc1123_subdomain(&name) {
        return Err(invalid(format!(
            "pod.metadata.name {name:?} is not a valid pod name (RFC 1123 subdomain)"
        )));
    }
    if namespace.is_empty() {
        return Err(invalid("pod.metadata.namespace is missing"));
    }
    if !is_rfc1123_label(&namespace) {
        return Err(invalid(format!(
            "pod.metadata.namespace {namespace:?} is not a valid namespace name"
        )));
    }
    if uid.is_empty() {
        return Err(invalid("pod.metadata.uid is missing"));
    }
    if !is_valid_uid(&uid) {
        return Err(invalid(format!(
            "pod.metadata.uid {uid:?} is not a valid UID (a lower-case UUID such as 6f1c1f1e-0000-4000-8000-000000000001)"
        )));
    }
    Ok(LocalIdentity {
        name,
        namespace,
        uid,
    })
}

/// Checks the structure of the spec: names, uniqueness, mounts.
pub(super) fn validate_spec(spec: &PodSpec) -> Result<()> {
    if spec.containers.is_empty() {
        return Err(invalid("pod.spec.containers is empty"));
    }
    let mut names = BTreeSet::new();
    for c in all_containers(spec) {
        if !is_rfc1123_label(&c.name) {
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
        if !is_rfc1123_label(&v.name) {
            return Err(invalid(format!(
                "volume name {:?} is not a valid RFC 1123 label",
                v.name
            )));
        }
        if !volumes.insert(v.name.as_str()) {
            return Err(invalid(format!("volume name {:?} is used twice", v.name)));
        }
    }
    for c in all_containers(spec) {
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

/// Init containers, then regular containers, in spec order.
pub(super) fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
}
