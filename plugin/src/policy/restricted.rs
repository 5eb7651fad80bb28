//! The Restricted level of the Pod Security Standards, on top of Baseline
//! (its volume types are in `volumes`). One function per control.

use super::{
    ContainerView, PodView, Policy, Violation,
    baseline::{capability_allowed, container_seccomp, normalize_capability, pod_seccomp},
};

/// Every Restricted control but volume types.
pub(super) fn check(policy: &Policy, pod: &PodView<'_>, out: &mut Vec<Violation>) {
    privilege_escalation(pod, out);
    run_as_non_root(pod, out);
    run_as_user(pod, out);
    seccomp(pod, out);
    capabilities(policy, pod, out);
}

fn rule(control: &str) -> String {
    format!("restricted: {control}")
}

/// `allowPrivilegeEscalation: false` on every container, explicitly (the
/// runtime's default is true).
pub(super) fn privilege_escalation(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for c in &pod.containers {
        if c.security_context
            .and_then(|s| s.allow_privilege_escalation)
            != Some(false)
        {
            out.push(Violation::new(
                c.sc_path("allowPrivilegeEscalation"),
                rule("privilege-escalation"),
                format!(
                    "container {:?} must set allowPrivilegeEscalation: false",
                    c.name
                ),
            ));
        }
    }
}

/// `runAsNonRoot: true` on the pod or on every container, never false.
pub(super) fn run_as_non_root(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    let pod_level = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root);
    if pod_level == Some(false) {
        out.push(Violation::new(
            "spec.securityContext.runAsNonRoot",
            rule("run-as-non-root"),
            "the pod must not set runAsNonRoot: false",
        ));
    }
    for c in &pod.containers {
        let own = c.security_context.and_then(|s| s.run_as_non_root);
        let bad = match own {
            Some(v) => !v,
            None => pod_level != Some(true),
        };
        if bad {
            out.push(Violation::new(
                c.sc_path("runAsNonRoot"),
                rule("run-as-non-root"),
                format!(
                    "container {:?} must run as non-root (runAsNonRoot: true here or in spec.securityContext)",
                    c.name
                ),
            ));
        }
    }
}

/// `runAsUser: 0` nowhere.
pub(super) fn run_as_user(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    let pod_sc = pod.spec.security_context.as_ref();
    if pod_sc.and_then(|s| s.run_as_user) == Some(0) {
        out.push(Violation::new(
            "spec.securityContext.runAsUser",
            rule("run-as-user"),
            "the pod must not run as UID 0",
        ));
    }
    for c in &pod.containers {
        if c.security_context.and_then(|s| s.run_as_user) == Some(0) {
            out.push(Violation::new(
                c.sc_path("runAsUser"),
                rule("run-as-user"),
                format!("container {:?} must not run as UID 0", c.name),
            ));
        }
    }
}

fn confined(ty: &str) -> bool {
    ty == "RuntimeDefault" || ty == "Localhost"
}

/// Seccomp RuntimeDefault or Localhost, set on the pod or on every
/// container (Unconfined itself is Baseline's to report).
pub(super) fn seccomp(pod: &PodView<'_>, out: &mut Vec<Violation>) {
    let pod_level = pod_seccomp(pod);
    let pod_ok = pod_level.as_deref().is_some_and(confined);
    for c in &pod.containers {
        match container_seccomp(pod, c) {
            Some(ty) if confined(&ty) || ty == "Unconfined" => {}
            Some(ty) => out.push(seccomp_violation(c, &format!("profile type {ty:?}"))),
            None if pod_ok => {}
            None => out.push(seccomp_violation(c, "no seccomp profile")),
        }
    }
}

fn seccomp_violation(c: &ContainerView<'_>, what: &str) -> Violation {
    Violation::new(
        c.sc_path("seccompProfile.type"),
        rule("seccomp"),
        format!(
            "container {:?} has {what}: set RuntimeDefault or Localhost here or in spec.securityContext.seccompProfile",
            c.name
        ),
    )
}

/// `capabilities.drop` holds ALL; `add` at most NET_BIND_SERVICE (and the
/// operator's extras). Adds outside the baseline set are Baseline's.
pub(super) fn capabilities(policy: &Policy, pod: &PodView<'_>, out: &mut Vec<Violation>) {
    for c in &pod.containers {
        let caps = c.security_context.and_then(|s| s.capabilities.as_ref());
        let drops_all = caps
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| normalize_capability(x) == "ALL"));
        if !drops_all {
            out.push(Violation::new(
                c.sc_path("capabilities.drop"),
                rule("capabilities"),
                format!("container {:?} must drop ALL capabilities", c.name),
            ));
        }
        let add = caps.and_then(|c| c.add.as_ref());
        for (i, cap) in add.into_iter().flatten().enumerate() {
            let norm = normalize_capability(cap);
            let extra = policy
                .extra_capabilities
                .iter()
                .any(|e| normalize_capability(e) == norm);
            if norm != "NET_BIND_SERVICE" && !extra && capability_allowed(policy, cap) {
                out.push(Violation::new(
                    c.sc_path(&format!("capabilities.add[{i}]")),
                    rule("capabilities"),
                    format!(
                        "container {:?} adds {cap:?}; the restricted level allows only NET_BIND_SERVICE",
                        c.name
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
    };

    use super::*;
    use crate::policy::{
        Level,
        tests::{pod_with, restricted_pod, rules},
    };

    fn restricted() -> Policy {
        Policy {
            level: Level::Restricted,
            ..Policy::default()
        }
    }

    fn sc(s: &mut k8s_openapi::api::core::v1::PodSpec) -> &mut SecurityContext {
        s.containers[0]
            .security_context
            .get_or_insert_with(Default::default)
    }

    #[test]
    fn a_hardened_pod_passes() {
        let (m, s) = restricted_pod();
        assert_eq!(rules(&restricted().violations(&m, &s)), []);
    }

    #[test]
    fn a_plain_pod_hears_every_control() {
        let (m, s) = pod_with(|_, _| {});
        let v = restricted().violations(&m, &s);
        assert_eq!(
            rules(&v),
            [
                (
                    "spec.containers[0].securityContext.allowPrivilegeEscalation",
                    "restricted: privilege-escalation"
                ),
                (
                    "spec.containers[0].securityContext.runAsNonRoot",
                    "restricted: run-as-non-root"
                ),
                (
                    "spec.containers[0].securityContext.seccompProfile.type",
                    "restricted: seccomp"
                ),
                (
                    "spec.containers[0].securityContext.capabilities.drop",
                    "restricted: capabilities"
                ),
            ]
        );
        assert!(Policy::default().violations(&m, &s).is_empty());
    }

    #[test]
    fn privilege_escalation_must_be_false() {
        let (m, mut s) = restricted_pod();
        sc(&mut s).allow_privilege_escalation = Some(true);
        assert_eq!(
            rules(&restricted().violations(&m, &s)),
            [(
                "spec.containers[0].securityContext.allowPrivilegeEscalation",
                "restricted: privilege-escalation"
            )]
        );
    }

    #[test]
    fn run_as_non_root_on_container_or_pod() {
        let (m, mut s) = restricted_pod();
        s.security_context = None;
        sc(&mut s).run_as_non_root = Some(true);
        sc(&mut s).seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        });
        assert_eq!(rules(&restricted().violations(&m, &s)), []);
        sc(&mut s).run_as_non_root = Some(false);
        assert_eq!(
            rules(&restricted().violations(&m, &s)),
            [(
                "spec.containers[0].securityContext.runAsNonRoot",
                "restricted: run-as-non-root"
            )]
        );
    }

    #[test]
    fn uid_zero_is_refused() {
        let (m, mut s) = restricted_pod();
        sc(&mut s).run_as_user = Some(1000);
        assert_eq!(rules(&restricted().violations(&m, &s)), []);
        if let Some(p) = s.security_context.as_mut() {
            p.run_as_user = Some(0);
        }
        assert_eq!(
            rules(&restricted().violations(&m, &s)),
            [("spec.securityContext.runAsUser", "restricted: run-as-user")]
        );
    }

    #[test]
    fn seccomp_from_the_pod_or_the_1_20_annotation() {
        let (mut m, mut s) = restricted_pod();
        s.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        assert_eq!(
            rules(&restricted().violations(&m, &s)),
            [(
                "spec.containers[0].securityContext.seccompProfile.type",
                "restricted: seccomp"
            )]
        );
        m.annotations = Some(
            [(
                "seccomp.security.alpha.kubernetes.io/pod".to_string(),
                "runtime/default".to_string(),
            )]
            .into(),
        );
        assert_eq!(rules(&restricted().violations(&m, &s)), []);
    }

    #[test]
    fn only_net_bind_service_may_be_added() {
        let (m, mut s) = restricted_pod();
        let caps = Capabilities {
            add: Some(vec!["NET_BIND_SERVICE".into(), "CHOWN".into()]),
            drop: Some(vec!["ALL".into()]),
        };
        sc(&mut s).capabilities = Some(caps);
        assert_eq!(
            rules(&restricted().violations(&m, &s)),
            [(
                "spec.containers[0].securityContext.capabilities.add[1]",
                "restricted: capabilities"
            )]
        );
    }
}
