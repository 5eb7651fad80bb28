//! What the remote operator allows: the Kubernetes Pod Security Standards
//! (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>)
//! at the level the operator chose, plus our own volume-type allowlist. Pure;
//! checked on the local pod before anything is written to the remote cluster.
//!
//! The remote cluster may run no Pod Security admission at all (1.20 has
//! none), so the plugin is the only gate between a tenant of the local
//! cluster and the remote nodes: by default it enforces **Baseline** in full.
//! Every rule reports every offending field (a pod hears all its problems in
//! one answer), each [`Violation`] naming the field path and the rule.
//!
//! Layout: `baseline` and `restricted` hold the rules of each level, one pure
//! function per control; `volumes` the volume-type allowlist; this file the
//! [`Policy`] that runs them, the container walk they share, and the filter of
//! `*.security.*kubernetes.io` annotations; `annotations` carries the 1.20
//! seccomp annotations into the fields before they are dropped.

mod annotations;
mod baseline;
mod restricted;
mod volumes;

use std::{collections::BTreeSet, fmt, str::FromStr};

use k8s_openapi::{
    api::core::v1::{ContainerPort, Lifecycle, PodSpec, Probe, SecurityContext},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::Serialize;

pub use self::{annotations::carry_seccomp_annotations, volumes::DEFAULT_VOLUME_TYPES};

/// The Pod Security Standards level enforced on every pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    /// No Pod Security Standards check (only the volume allowlist and the
    /// annotation filter). Only when the operator asks for it.
    Privileged,
    /// Prevents known privilege escalations (the default).
    #[default]
    Baseline,
    /// Baseline plus the hardening of the Restricted profile.
    Restricted,
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(format!(
                "{s:?} is not a Pod Security Standards level (privileged, baseline, restricted)"
            )),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        })
    }
}

/// One reason a pod is refused: the field, the rule it breaks and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Path of the offending field in the pod, Kubernetes style, e.g.
    /// `spec.containers[1].securityContext.capabilities.add[0]`.
    pub field: String,
    /// `<level or "plugin">: <control>`, e.g. `baseline: capabilities`.
    pub rule: String,
    /// What is wrong, and the flag that allows it where there is one.
    pub message: String,
}

impl Violation {
    pub(crate) fn new(
        field: impl Into<String>,
        rule: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.field, self.message, self.rule)
    }
}

/// The admission policy. The `allow_*` toggles are the operator's
/// exceptions to single controls; they hold at every level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub level: Level,
    pub allow_host_path: bool,
    pub allow_privileged: bool,
    pub allow_host_network: bool,
    pub allow_host_pid: bool,
    pub allow_host_ipc: bool,
    /// Volume types (the `PodSpec.volumes[*]` keys, e.g. `nfs`, `csi`)
    /// allowed; `*` allows every type. hostPath is not decided here but by
    /// the level and `allow_host_path`.
    pub volume_types: BTreeSet<String>,
    /// Capabilities allowed on top of the baseline set (`NET_ADMIN`, ...).
    pub extra_capabilities: BTreeSet<String>,
    /// Sysctls allowed on top of the safe set.
    pub extra_sysctls: BTreeSet<String>,
    /// `*.security.*kubernetes.io` annotations kept on the remote pod: exact
    /// keys, or prefixes ending in `*`.
    pub kept_security_annotations: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            level: Level::Baseline,
            allow_host_path: false,
            allow_privileged: false,
            allow_host_network: false,
            allow_host_pid: false,
            allow_host_ipc: false,
            volume_types: DEFAULT_VOLUME_TYPES.iter().map(|s| s.to_string()).collect(),
            extra_capabilities: BTreeSet::new(),
            extra_sysctls: BTreeSet::new(),
            kept_security_annotations: Vec::new(),
        }
    }
}

impl Policy {
    /// Everything allowed (what the Python plugin did, minus its silent drops).
    pub fn permissive() -> Self {
        Self {
            level: Level::Privileged,
            allow_host_path: true,
            allow_privileged: true,
            allow_host_network: true,
            allow_host_pid: true,
            allow_host_ipc: true,
            volume_types: BTreeSet::from(["*".to_string()]),
            kept_security_annotations: vec!["*".into()],
            ..Self::default()
        }
    }

    /// Every reason this pod is refused (empty: allowed), in spec order.
    pub fn violations(&self, meta: &ObjectMeta, spec: &PodSpec) -> Vec<Violation> {
        let pod = PodView::new(meta, spec);
        let mut out = Vec::new();
        if self.level != Level::Privileged {
            baseline::check(self, &pod, &mut out);
        }
        volumes::check(self, &pod, &mut out);
        if self.level == Level::Restricted {
            restricted::check(self, &pod, &mut out);
        }
        out
    }

    /// Whether the remote pod keeps this annotation of the local pod: every
    /// one but the `*.security.*kubernetes.io` ones the operator did not
    /// list (they name profiles of the local nodes, or loosen the remote
    /// ones; what they ask for, the checked fields carry).
    pub fn keeps_annotation(&self, key: &str) -> bool {
        !is_security_annotation(key)
            || self
                .kept_security_annotations
                .iter()
                .any(|k| match k.strip_suffix('*') {
                    Some(prefix) => key.starts_with(prefix),
                    None => key == k,
                })
    }
}

/// `<anything>.security.<anything>kubernetes.io/<name>`, e.g.
/// `seccomp.security.alpha.kubernetes.io/pod`,
/// `container.apparmor.security.beta.kubernetes.io/app`.
pub fn is_security_annotation(key: &str) -> bool {
    key.split_once('/').is_some_and(|(domain, _)| {
        domain.ends_with("kubernetes.io")
            && (domain.contains(".security.") || domain.starts_with("security."))
    })
}

/// One container of any kind, with the path of its entry in the pod.
pub(crate) struct ContainerView<'a> {
    /// `spec.containers[0]`, `spec.initContainers[1]`, ...
    pub path: String,
    pub name: &'a str,
    pub security_context: Option<&'a SecurityContext>,
    pub ports: &'a [ContainerPort],
    /// (`livenessProbe` | `readinessProbe` | `startupProbe`, the probe).
    pub probes: Vec<(&'static str, &'a Probe)>,
    pub lifecycle: Option<&'a Lifecycle>,
}

impl ContainerView<'_> {
    pub fn sc_path(&self, rest: &str) -> String {
        format!("{}.securityContext.{rest}", self.path)
    }
}

/// The pod as the rules see it: metadata, spec and every container
/// (init, regular, ephemeral: the Standards cover all three).
pub(crate) struct PodView<'a> {
    pub meta: &'a ObjectMeta,
    pub spec: &'a PodSpec,
    pub containers: Vec<ContainerView<'a>>,
}

impl<'a> PodView<'a> {
    pub fn new(meta: &'a ObjectMeta, spec: &'a PodSpec) -> Self {
        // One macro body for two types (Container, EphemeralContainer)
        // with the same fields.
        macro_rules! view {
            ($path:expr, $c:expr) => {
                ContainerView {
                    path: $path,
                    name: &$c.name,
                    security_context: $c.security_context.as_ref(),
                    ports: $c.ports.as_deref().unwrap_or_default(),
                    probes: [
                        ("livenessProbe", $c.liveness_probe.as_ref()),
                        ("readinessProbe", $c.readiness_probe.as_ref()),
                        ("startupProbe", $c.startup_probe.as_ref()),
                    ]
                    .into_iter()
                    .filter_map(|(k, p)| p.map(|p| (k, p)))
                    .collect(),
                    lifecycle: $c.lifecycle.as_ref(),
                }
            };
        }
        let mut containers = Vec::new();
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            containers.push(view!(format!("spec.initContainers[{i}]"), c));
        }
        for (i, c) in spec.containers.iter().enumerate() {
            containers.push(view!(format!("spec.containers[{i}]"), c));
        }
        for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
            containers.push(view!(format!("spec.ephemeralContainers[{i}]"), c));
        }
        Self {
            meta,
            spec,
            containers,
        }
    }

    /// The pod's annotation `key`, if set.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The pod's annotations whose key starts with `prefix`: (rest of the key, value).
    pub fn annotations_with_prefix<'p>(
        &self,
        prefix: &'p str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'p
    where
        'a: 'p,
    {
        self.meta
            .annotations
            .iter()
            .flatten()
            .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_str())))
    }
}

/// `metadata.annotations[<key>]`.
pub(crate) fn annotation_path(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

#[cfg(test)]
pub(crate) mod tests;
