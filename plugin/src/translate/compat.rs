//! Fields newer than the remote apiserver (`TranslateConfig::remote_minor`):
//! refused when dropping them would change what the pod does, dropped (with a
//! warning when a user may care) otherwise.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::{Result, TranslateError, context::Ctx};

/// Fields newer than the remote apiserver: refuse those whose loss changes
/// behaviour, drop the others.
pub(super) fn compat_container(ctx: &mut Ctx<'_>, c: &mut Container, init: bool) -> Result<()> {
    let minor = ctx.cfg.remote_minor;
    let what = if init { "init container" } else { "container" };
    let name = c.name.clone();
    let unsupported = |feature: &str, need: u32| {
        TranslateError::Unsupported(format!(
            "{what} {name:?}: {feature} needs Kubernetes 1.{need} on the remote cluster (it runs 1.{minor})"
        ))
    };
    if init && c.restart_policy.is_some() && minor < 28 {
        return Err(unsupported("restartPolicy (native sidecar container)", 28));
    }
    if !init && c.restart_policy.is_some() && minor < 34 {
        // Per-container restartPolicy on regular containers is 1.34+.
        c.restart_policy = None;
    }
    if c.resources
        .as_ref()
        .is_some_and(|r| r.claims.as_ref().is_some_and(|v| !v.is_empty()))
        && minor < 26
    {
        return Err(unsupported(
            "resources.claims (dynamic resource allocation)",
            26,
        ));
    }
    for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
        .into_iter()
        .flatten()
    {
        if probe.grpc.is_some() && minor < 24 {
            return Err(unsupported("a gRPC probe", 24));
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        if minor < 22 {
            probe.termination_grace_period_seconds = None;
        }
    }
    if let Some(lc) = c.lifecycle.as_mut() {
        for h in [&lc.post_start, &lc.pre_stop].into_iter().flatten() {
            if h.sleep.is_some() && minor < 29 {
                return Err(unsupported("a sleep lifecycle hook", 29));
            }
        }
        if minor < 33 {
            lc.stop_signal = None;
        }
    }
    if minor < 27 {
        c.resize_policy = None;
    }
    if let Some(sc) = c.security_context.as_mut()
        && minor < 30
        && sc.app_armor_profile.take().is_some()
    {
        ctx.warnings.push(format!(
            "{what} {name:?}: securityContext.appArmorProfile dropped (remote is 1.{minor})"
        ));
    }
    Ok(())
}

/// Pod-level fields newer than the remote apiserver, and fields the local
/// cluster set that the remote one would refuse.
pub(super) fn compat_pod(ctx: &mut Ctx<'_>, spec: &mut PodSpec) -> Result<()> {
    let minor = ctx.cfg.remote_minor;
    let unsupported = |feature: &str, need: u32| {
        TranslateError::Unsupported(format!(
            "{feature} needs Kubernetes 1.{need} on the remote cluster (it runs 1.{minor})"
        ))
    };
    if spec.resource_claims.as_ref().is_some_and(|v| !v.is_empty()) && minor < 26 {
        return Err(unsupported("spec.resourceClaims", 26));
    }
    if spec.resources.is_some() && minor < 32 {
        return Err(unsupported("pod-level spec.resources", 32));
    }
    if minor < 25 {
        spec.os = None;
        if spec.host_users.take().is_some() {
            ctx.warnings
                .push(format!("spec.hostUsers dropped (remote is 1.{minor})"));
        }
    }
    if let Some(sc) = spec.security_context.as_mut() {
        if minor < 30 {
            sc.app_armor_profile = None;
        }
        if minor < 31 {
            sc.supplemental_groups_policy = None;
        }
        if minor < 32 {
            sc.se_linux_change_policy = None;
        }
    }
    for t in spec.topology_spread_constraints.iter_mut().flatten() {
        if minor < 25 {
            t.min_domains = None;
        }
        if minor < 26 {
            t.node_affinity_policy = None;
            t.node_taints_policy = None;
        }
        if minor < 27 {
            t.match_label_keys = None;
        }
    }
    // The local pod was already scheduled, so its gates are lifted; the other
    // two are set by the local cluster's admission and would be refused.
    spec.scheduling_gates = None;
    spec.ephemeral_containers = None;
    spec.overhead = None;
    Ok(())
}
