//! The 1.20 seccomp annotations, carried into the securityContext fields
//! before the annotations are dropped from the remote pod: dropping
//! `runtime/default` must not leave the remote container unconfined (the
//! default of a 1.20 kubelet).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, SeccompProfile};

use super::baseline::{SECCOMP_CONTAINER_PREFIX, SECCOMP_POD_ANNOTATION};

/// The profile a seccomp annotation value names, as the field spells it.
pub(super) fn profile_of(value: &str) -> Option<SeccompProfile> {
    let v = value.trim();
    let (type_, localhost_profile) = match v {
        "runtime/default" | "docker/default" => ("RuntimeDefault", None),
        "unconfined" => ("Unconfined", None),
        _ => (
            "Localhost",
            Some(v.strip_prefix("localhost/").filter(|p| !p.is_empty())?),
        ),
    };
    Some(SeccompProfile {
        type_: type_.into(),
        localhost_profile: localhost_profile.map(Into::into),
    })
}

/// Sets each seccomp field the annotations ask for where the field is unset,
/// as 1.19+ apiservers do on create.
pub fn carry_seccomp_annotations(annotations: &BTreeMap<String, String>, spec: &mut PodSpec) {
    if let Some(p) = annotations
        .get(SECCOMP_POD_ANNOTATION)
        .and_then(|v| profile_of(v))
    {
        let sc = spec.security_context.get_or_insert_with(Default::default);
        sc.seccomp_profile.get_or_insert(p);
    }
    let containers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in containers {
        let key = format!("{SECCOMP_CONTAINER_PREFIX}{}", c.name);
        if let Some(p) = annotations.get(&key).and_then(|v| profile_of(v)) {
            let sc = c.security_context.get_or_insert_with(Default::default);
            sc.seccomp_profile.get_or_insert(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::pod_with;

    #[test]
    fn values_map_to_the_field() {
        let t = |v| profile_of(v).map(|p| (p.type_, p.localhost_profile));
        assert_eq!(t("runtime/default"), Some(("RuntimeDefault".into(), None)));
        assert_eq!(t("docker/default"), Some(("RuntimeDefault".into(), None)));
        assert_eq!(
            t("localhost/prof.json"),
            Some(("Localhost".into(), Some("prof.json".into())))
        );
        assert_eq!(t("unconfined"), Some(("Unconfined".into(), None)));
        assert_eq!(t("localhost/"), None);
        assert_eq!(t("bogus"), None);
    }

    #[test]
    fn annotations_fill_unset_fields_only() {
        let (_, mut s) = pod_with(|_, s| {
            let mut d = s.containers[0].clone();
            d.name = "d".into();
            d.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
                seccomp_profile: profile_of("localhost/own"),
                ..Default::default()
            });
            s.containers.push(d);
        });
        let ann = BTreeMap::from([
            (
                SECCOMP_POD_ANNOTATION.to_string(),
                "runtime/default".to_string(),
            ),
            (
                format!("{SECCOMP_CONTAINER_PREFIX}app"),
                "localhost/a".to_string(),
            ),
            (
                format!("{SECCOMP_CONTAINER_PREFIX}d"),
                "runtime/default".to_string(),
            ),
        ]);
        carry_seccomp_annotations(&ann, &mut s);
        let pod_type = s
            .security_context
            .and_then(|sc| sc.seccomp_profile)
            .map(|p| p.type_);
        assert_eq!(pod_type.as_deref(), Some("RuntimeDefault"));
        let own = |i: usize| {
            s.containers[i]
                .security_context
                .as_ref()
                .and_then(|sc| sc.seccomp_profile.as_ref())
                .and_then(|p| p.localhost_profile.clone())
        };
        assert_eq!(own(0).as_deref(), Some("a"));
        assert_eq!(own(1).as_deref(), Some("own"), "a set field wins");
    }
}
