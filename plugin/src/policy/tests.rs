//! Fixtures shared by the rule tests, and tests of the policy as a whole.

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::*;

/// A plain pod (one container `app`, nothing asked), changed by `f`.
pub(crate) fn pod_with(f: impl FnOnce(&mut ObjectMeta, &mut PodSpec)) -> (ObjectMeta, PodSpec) {
    let mut m = ObjectMeta {
        name: Some("p".into()),
        ..Default::default()
    };
    let mut s = PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("busybox".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    f(&mut m, &mut s);
    (m, s)
}

/// A pod that meets the Restricted level.
pub(crate) fn restricted_pod() -> (ObjectMeta, PodSpec) {
    pod_with(|_, s| {
        s.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        s.containers[0].security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        });
    })
}

/// (field, rule) of each violation, to compare in one assert.
pub(crate) fn rules(v: &[Violation]) -> Vec<(&str, &str)> {
    v.iter()
        .map(|x| (x.field.as_str(), x.rule.as_str()))
        .collect()
}

#[test]
fn the_default_is_baseline_with_the_default_volume_types() {
    let p = Policy::default();
    assert_eq!(p.level, Level::Baseline);
    assert!(p.volume_types.contains("persistentVolumeClaim"));
    assert!(!p.volume_types.contains("csi"));
    let (m, s) = pod_with(|_, _| {});
    assert!(p.violations(&m, &s).is_empty());
}

#[test]
fn levels_parse_and_print() {
    for l in [Level::Privileged, Level::Baseline, Level::Restricted] {
        assert_eq!(l.to_string().parse::<Level>(), Ok(l));
    }
    assert_eq!("Restricted".parse::<Level>(), Ok(Level::Restricted));
    assert!("strict".parse::<Level>().is_err());
}

/// Everything wrong with a pod comes back in one answer, in spec order.
#[test]
fn every_violation_is_reported_at_once() {
    let (m, s) = pod_with(|_, s| {
        s.host_network = Some(true);
        s.host_pid = Some(true);
        s.containers[0].security_context = Some(SecurityContext {
            privileged: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["CHOWN".into(), "SYS_ADMIN".into()]),
                drop: None,
            }),
            proc_mount: Some("Unmasked".into()),
            ..Default::default()
        });
    });
    let v = Policy::default().violations(&m, &s);
    assert_eq!(
        rules(&v),
        [
            ("spec.hostNetwork", "baseline: host-namespaces"),
            ("spec.hostPID", "baseline: host-namespaces"),
            (
                "spec.containers[0].securityContext.privileged",
                "baseline: privileged"
            ),
            (
                "spec.containers[0].securityContext.capabilities.add[1]",
                "baseline: capabilities"
            ),
            (
                "spec.containers[0].securityContext.procMount",
                "baseline: proc-mount"
            ),
        ]
    );
    assert!(
        v[0].to_string().starts_with("spec.hostNetwork: "),
        "{}",
        v[0]
    );
    assert!(Policy::permissive().violations(&m, &s).is_empty());
}

#[test]
fn the_privileged_level_checks_no_standard_but_the_volume_allowlist() {
    let p = Policy {
        level: Level::Privileged,
        ..Policy::default()
    };
    let (m, s) = pod_with(|_, s| {
        s.host_ipc = Some(true);
        s.volumes = Some(vec![k8s_openapi::api::core::v1::Volume {
            name: "v".into(),
            nfs: Some(Default::default()),
            ..Default::default()
        }]);
    });
    assert_eq!(
        rules(&p.violations(&m, &s)),
        [("spec.volumes[0].nfs", "plugin: volume-types")]
    );
}

#[test]
fn security_annotations_are_recognised() {
    for k in [
        "seccomp.security.alpha.kubernetes.io/pod",
        "container.seccomp.security.alpha.kubernetes.io/app",
        "container.apparmor.security.beta.kubernetes.io/app",
        "security.kubernetes.io/x",
    ] {
        assert!(is_security_annotation(k), "{k}");
    }
    for k in [
        "team",
        "kubernetes.io/description",
        "example.com/security.kubernetes.io",
        "security.example.com/x",
    ] {
        assert!(!is_security_annotation(k), "{k}");
    }
}

#[test]
fn security_annotations_are_dropped_unless_kept() {
    let mut p = Policy::default();
    let apparmor = "container.apparmor.security.beta.kubernetes.io/app";
    assert!(p.keeps_annotation("team"));
    assert!(!p.keeps_annotation(apparmor));
    p.kept_security_annotations = vec!["container.apparmor.security.beta.kubernetes.io/*".into()];
    assert!(p.keeps_annotation(apparmor));
    assert!(!p.keeps_annotation("seccomp.security.alpha.kubernetes.io/pod"));
    p.kept_security_annotations = vec!["seccomp.security.alpha.kubernetes.io/pod".into()];
    assert!(p.keeps_annotation("seccomp.security.alpha.kubernetes.io/pod"));
}
