//! Our own volume-type allowlist, on top of the Standards: Baseline lets
//! through every type but hostPath, yet `gitRepo` runs git as root on the
//! node, `nfs`/`iscsi` mount whatever server the pod names from the node, a
//! `flexVolume` runs a driver binary of the node and an inline `csi` volume
//! reaches any installed driver. On the remote cluster none of that is the
//! tenant's to choose: only the types the operator lists cross.

use k8s_openapi::api::core::v1::Volume;

use super::{Level, PodView, Policy, Violation};

/// The volume types allowed by default (what a pod needs to run its own
/// configuration, scratch space and claims).
pub const DEFAULT_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "secret",
    "emptyDir",
    "projected",
    "downwardAPI",
    "persistentVolumeClaim",
    "ephemeral",
];

/// The volume types the Restricted level allows.
pub(super) const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The types of a volume: the names of its source fields (`nfs`, `csi`,
/// ...), as the API spells them. One for a valid volume; every one is
/// checked, so a second source cannot hide behind an allowed first. Read
/// from the serialized form, so a type the plugin was not written for is
/// still named (and refused).
pub(super) fn volume_types(v: &Volume) -> Vec<String> {
    let types: Vec<String> = match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(map)) => map
            .keys()
            .filter(|k| k.as_str() != "name")
            .cloned()
            .collect(),
        _ => vec!["unknown".into()],
    };
    if types.is_empty() {
        // No source at all is an emptyDir to the apiserver.
        return vec!["emptyDir".into()];
    }
    types
}

/// Whether the operator's allowlist holds `ty` (case-insensitive; `*` is every type).
pub(super) fn type_allowed(policy: &Policy, ty: &str) -> bool {
    policy
        .volume_types
        .iter()
        .any(|t| t == "*" || t.eq_ignore_ascii_case(ty))
}

/// Every volume whose type the allowlist (and, at Restricted, the level)
/// does not hold. hostPath is the Baseline control's (and `--allow-host-path`'s).
pub(super) fn check(policy: &Policy, pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for (i, v) in pod.spec.volumes.iter().flatten().enumerate() {
        for ty in volume_types(v) {
            if ty != "hostPath" {
                check_one(
                    policy,
                    &format!("spec.volumes[{i}].{ty}"),
                    &v.name,
                    &ty,
                    out,
                );
            }
        }
    }
}

fn check_one(policy: &Policy, field: &str, name: &str, ty: &str, out: &mut Vec<Violation>) {
    if !type_allowed(policy, ty) {
        out.push(Violation::new(
            field,
            "plugin: volume-types",
            format!(
                "volume {name:?} is of type {ty}, which this cluster does not allow (the operator can allow it with --allow-volume-types)"
            ),
        ));
    } else if policy.level == Level::Restricted && !RESTRICTED_VOLUME_TYPES.contains(&ty) {
        out.push(Violation::new(
            field,
            "restricted: volume-types",
            format!(
                "volume {name:?} is of type {ty}; the restricted level allows only {}",
                RESTRICTED_VOLUME_TYPES.join(", ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        CSIVolumeSource, EmptyDirVolumeSource, GitRepoVolumeSource, HostPathVolumeSource,
        NFSVolumeSource,
    };

    use super::*;
    use crate::policy::tests::{pod_with, rules};

    fn vol(name: &str, f: impl FnOnce(&mut Volume)) -> Volume {
        let mut v = Volume {
            name: name.into(),
            ..Default::default()
        };
        f(&mut v);
        v
    }

    fn nfs() -> Volume {
        vol("data", |v| {
            v.nfs = Some(NFSVolumeSource {
                server: "10.0.0.1".into(),
                path: "/".into(),
                ..Default::default()
            })
        })
    }

    #[test]
    fn types_are_named_as_the_api_spells_them() {
        assert_eq!(volume_types(&nfs()), ["nfs"]);
        let e = vol("e", |v| v.empty_dir = Some(EmptyDirVolumeSource::default()));
        assert_eq!(volume_types(&e), ["emptyDir"]);
        assert_eq!(volume_types(&vol("bare", |_| {})), ["emptyDir"]);
    }

    #[test]
    fn a_second_source_cannot_hide_behind_an_allowed_one() {
        let mut two = nfs();
        two.empty_dir = Some(EmptyDirVolumeSource::default());
        let (m, s) = pod_with(|_, s| s.volumes = Some(vec![two]));
        assert_eq!(
            rules(&Policy::default().violations(&m, &s)),
            [("spec.volumes[0].nfs", "plugin: volume-types")]
        );
    }

    #[test]
    fn default_types_are_allowed() {
        let e = vol("e", |v| v.empty_dir = Some(EmptyDirVolumeSource::default()));
        let (m, s) = pod_with(|_, s| s.volumes = Some(vec![e]));
        assert!(Policy::default().violations(&m, &s).is_empty());
    }

    #[test]
    fn other_types_are_refused_with_their_field() {
        let git = vol("src", |v| {
            v.git_repo = Some(GitRepoVolumeSource {
                repository: "https://example.org/r.git".into(),
                ..Default::default()
            })
        });
        let csi = vol("c", |v| {
            v.csi = Some(CSIVolumeSource {
                driver: "x".into(),
                ..Default::default()
            })
        });
        let (m, s) = pod_with(|_, s| s.volumes = Some(vec![nfs(), git, csi]));
        let v = Policy::default().violations(&m, &s);
        assert_eq!(
            rules(&v),
            [
                ("spec.volumes[0].nfs", "plugin: volume-types"),
                ("spec.volumes[1].gitRepo", "plugin: volume-types"),
                ("spec.volumes[2].csi", "plugin: volume-types"),
            ]
        );
    }

    #[test]
    fn the_operator_can_allow_a_type_or_all() {
        let (m, s) = pod_with(|_, s| s.volumes = Some(vec![nfs()]));
        let mut p = Policy::default();
        p.volume_types.insert("NFS".into());
        assert!(p.violations(&m, &s).is_empty());
        p.volume_types = ["*".to_string()].into();
        assert!(p.violations(&m, &s).is_empty());
    }

    #[test]
    fn host_path_is_left_to_the_baseline_control() {
        let hp = vol("root", |v| {
            v.host_path = Some(HostPathVolumeSource {
                path: "/".into(),
                ..Default::default()
            })
        });
        let (m, s) = pod_with(|_, s| s.volumes = Some(vec![hp]));
        let v = Policy::default().violations(&m, &s);
        assert_eq!(
            rules(&v),
            [("spec.volumes[0].hostPath", "baseline: host-path-volumes")]
        );
        let p = Policy {
            allow_host_path: true,
            ..Policy::default()
        };
        assert!(p.violations(&m, &s).is_empty());
    }

    #[test]
    fn restricted_refuses_allowed_types_outside_its_set() {
        let (m, s) = pod_with(|_, s| s.volumes = Some(vec![nfs()]));
        let mut p = Policy {
            level: Level::Restricted,
            ..Policy::default()
        };
        p.volume_types.insert("nfs".into());
        let v = p.violations(&m, &s);
        assert!(
            rules(&v).contains(&("spec.volumes[0].nfs", "restricted: volume-types")),
            "{v:?}"
        );
    }
}
