//! Environment: the local cluster's `KUBERNETES_*` variables stay behind,
//! references are renamed, the pod's own identity is written in.

use k8s_openapi::api::core::v1::{Container, EnvVar};

use super::{
    Result,
    context::{Ctx, RefKind},
};

/// Variables the local kubelet injects to reach the *local* API server.
fn is_kubernetes_env(name: &str) -> bool {
    name == "KUBERNETES_SERVICE_HOST"
        || name == "KUBERNETES_SERVICE_PORT"
        || name == "KUBERNETES_SERVICE_PORT_HTTPS"
        || name == "KUBERNETES_PORT"
        || name.starts_with("KUBERNETES_PORT_")
}

/// Renames the ConfigMap/Secret references of `env` and `envFrom` and turns
/// `fieldRef`s to the pod's identity into the local values.
pub(super) fn translate_env(ctx: &mut Ctx<'_>, c: &mut Container) -> Result<()> {
    let by = format!("container {:?}", c.name);
    if let Some(env) = c.env.take() {
        let mut out: Vec<EnvVar> = Vec::with_capacity(env.len());
        for mut e in env {
            if ctx.cfg.drop_kubernetes_env && is_kubernetes_env(&e.name) {
                continue;
            }
            let by_var = format!("{by} env {:?}", e.name);
            if let Some(vf) = e.value_from.as_mut() {
                if let Some(r) = vf.config_map_key_ref.as_mut() {
                    r.name = ctx.use_ref(
                        RefKind::ConfigMap,
                        &r.name,
                        r.optional,
                        Some(&r.key),
                        &by_var,
                    )?;
                }
                if let Some(r) = vf.secret_key_ref.as_mut() {
                    r.name =
                        ctx.use_ref(RefKind::Secret, &r.name, r.optional, Some(&r.key), &by_var)?;
                }
                if let Some(f) = vf.field_ref.as_ref() {
                    // The remote pod has another name, namespace and uid; the
                    // workload asked for its own (local) ones.
                    let literal = match f.field_path.as_str() {
                        "metadata.name" => Some(ctx.id.name.clone()),
                        "metadata.namespace" => Some(ctx.id.namespace.clone()),
                        "metadata.uid" => Some(ctx.id.uid.clone()),
                        _ => None,
                    };
                    if let Some(l) = literal {
                        e.value = Some(l);
                        e.value_from = None;
                    }
                }
            }
            out.push(e);
        }
        c.env = if out.is_empty() { None } else { Some(out) };
    }
    for ef in c.env_from.iter_mut().flatten() {
        // One of the two is set; each names an object shipped and renamed.
        let config_map = ef
            .config_map_ref
            .as_mut()
            .map(|r| (RefKind::ConfigMap, &mut r.name, r.optional));
        let secret = ef
            .secret_ref
            .as_mut()
            .map(|r| (RefKind::Secret, &mut r.name, r.optional));
        for (kind, name, optional) in config_map.into_iter().chain(secret) {
            *name = ctx.use_ref(kind, name, optional, None, &format!("{by} envFrom"))?;
        }
    }
    Ok(())
}
