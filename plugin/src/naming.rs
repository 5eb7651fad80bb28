//! Remote names: pure, deterministic, RFC 1123 labels of at most 63 characters.
//!
//! A remote object name is `<base>-<local pod uid>` when that fits and `base`
//! is already a valid label (the Python plugin's scheme, readable and
//! compatible), and otherwise `<truncated, sanitised base>-<16 hex of
//! sha256(kind, base, uid)>`. The two forms cannot be equal: a UID form ends in
//! `-` followed by 12 hex characters (the last UUID group), a hash form has a
//! hex character at that position. Two different pods therefore never map to
//! the same remote name, however long their names are.

use sha2::{Digest, Sha256};

/// Longest Kubernetes label (and namespace, and hostname).
pub const MAX_LABEL: usize = 63;
/// Hex characters of the hash suffix.
const HASH_HEX: usize = 16;

/// What a remote name is for; part of the hash so a projected-volume Secret
/// can never take the name of a user Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Pod,
    ConfigMap,
    Secret,
    /// Secret holding the rendered files of a projected/downward-API volume.
    VolumeData,
}

impl NameKind {
    fn tag(self) -> &'static str {
        match self {
            NameKind::Pod => "pod",
            NameKind::ConfigMap => "configmap",
            NameKind::Secret => "secret",
            NameKind::VolumeData => "volume-data",
        }
    }
}

/// Is `s` an RFC 1123 label (lower-case alphanumerics and `-`, alphanumeric at
/// both ends, 1..=63 characters)?
///
/// RFC 1123 (not RFC 1035) because this is the rule Kubernetes applies to the
/// names the plugin checks or makes: namespaces, container and volume names,
/// label values and most object names may start with a digit (a UID often
/// does). Service names follow the stricter RFC 1035 label, see
/// `gateway_manager::objects::is_rfc1035_label`.
pub fn is_rfc1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Is `s` an RFC 1123 subdomain (labels joined by dots, at most 253
/// characters)? The Kubernetes rule for pod, ConfigMap and Secret names.
pub fn is_rfc1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_rfc1123_label_any_len)
}

/// An RFC 1123 label without the 63-character limit (a subdomain limits the
/// whole name instead).
fn is_rfc1123_label_any_len(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Is `s` usable as a local pod UID? Kubernetes UIDs are UUIDs, and a UID
/// goes into label values, remote names and label selectors: only the
/// canonical lower-case form (8-4-4-4-12 hex digits) is accepted, so no
/// caller can smuggle a selector or a name of its choosing through it.
pub fn is_valid_uid(s: &str) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == GROUPS.len()
        && parts.iter().zip(GROUPS).all(|(p, n)| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        // A separator no Kubernetes name contains, so ("ab","c") != ("a","bc").
        h.update([0u8]);
    }
    let digest = h.finalize();
    hex::encode(digest)[..HASH_HEX].to_string()
}

/// Lower-cases and replaces every character that is not `[a-z0-9-]` by `-`,
/// then trims `-` from both ends.
fn sanitize(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_string()
}

/// Remote name of an object derived from `base` (a local pod, ConfigMap,
/// Secret or volume name) for the local pod `uid`.
pub fn remote_name(kind: NameKind, base: &str, uid: &str) -> String {
    let uid_form = format!("{base}-{uid}");
    if kind != NameKind::VolumeData && is_rfc1123_label(base) && is_rfc1123_label(&uid_form) {
        return uid_form;
    }
    let hash = short_hash(&[kind.tag(), base, uid]);
    let mut stem = sanitize(base);
    stem.truncate(MAX_LABEL - 1 - HASH_HEX);
    let stem = stem.trim_end_matches('-');
    if stem.is_empty() {
        // Keep the name starting with a letter for readability.
        format!("x-{hash}")
    } else {
        format!("{stem}-{hash}")
    }
}

/// Maps local namespaces to remote ones: `<prefix>-<namespace>`, or the
/// namespace itself when it is excluded (the Python plugin's exclusions).
///
/// The mapping must never reach a namespace the plugin does not own: an
/// empty prefix, a prefix or exclusion that names a system namespace, or a
/// local namespace that maps onto the plugin's or the bastion's namespace is
/// refused ([`NamespaceMapper::check_config`] at start-up,
/// [`NamespaceMapper::checked_remote`] per request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceMapper {
    pub prefix: String,
    pub exclusions: Vec<String>,
    /// Namespaces no request may map onto besides `kube-*` and `default`:
    /// the plugin's own and the bastion's (where the bastion key lives).
    pub protected: Vec<String>,
}

/// Why a namespace mapping is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceRefusal {
    #[error(
        "the namespace prefix is empty: every local namespace would map onto the remote namespace of the same name (kube-system included); set --namespace-prefix"
    )]
    EmptyPrefix,
    #[error(
        "namespace prefix {0:?} is not valid: lower-case letters, digits and '-', starting and ending alphanumeric, at most {MAX_PREFIX} characters"
    )]
    InvalidPrefix(String),
    #[error("namespace prefix {prefix:?} would map namespaces onto {why}")]
    ReservedPrefix { prefix: String, why: &'static str },
    #[error("namespace exclusion {name:?} is refused: it is {why}")]
    ReservedExclusion { name: String, why: &'static str },
    #[error(
        "local namespace {local:?} maps onto remote namespace {remote:?}, which is {why}; offload from another namespace"
    )]
    Reserved {
        local: String,
        remote: String,
        why: &'static str,
    },
}

/// Longest prefix: leaves 15 characters of the local namespace readable.
pub const MAX_PREFIX: usize = 47;

/// Why `remote` must never hold offloaded pods, if it must not.
pub fn reserved_reason(remote: &str, protected: &[String]) -> Option<&'static str> {
    if remote == "kube" || remote.starts_with("kube-") {
        Some("a Kubernetes system namespace (kube-*)")
    } else if remote == "default" {
        Some("the remote cluster's default namespace")
    } else if protected.iter().any(|p| p == remote) {
        Some("the namespace of the plugin or of its bastion")
    } else {
        None
    }
}

impl NamespaceMapper {
    pub fn new(prefix: impl Into<String>, exclusions: Vec<String>) -> Self {
        Self {
            prefix: prefix.into(),
            exclusions,
            protected: Vec::new(),
        }
    }

    /// The same mapping, refusing also `protected` (empty names ignored).
    pub fn with_protected(mut self, protected: impl IntoIterator<Item = String>) -> Self {
        self.protected
            .extend(protected.into_iter().filter(|p| !p.is_empty()));
        self
    }

    /// The start-up check: a non-empty valid prefix that cannot produce a
    /// system namespace, and no exclusion naming a reserved namespace.
    pub fn check_config(&self) -> Result<(), NamespaceRefusal> {
        if self.prefix.is_empty() {
            return Err(NamespaceRefusal::EmptyPrefix);
        }
        if self.prefix.len() > MAX_PREFIX || !is_rfc1123_label(&self.prefix) {
            return Err(NamespaceRefusal::InvalidPrefix(self.prefix.clone()));
        }
        // Any remote name is `<prefix>-...`: probing one decides for all
        // (only the kube-* rule can match a prefixed name wholesale).
        if let Some(why) = reserved_reason(&format!("{}-x", self.prefix), &[]) {
            return Err(NamespaceRefusal::ReservedPrefix {
                prefix: self.prefix.clone(),
                why,
            });
        }
        for name in &self.exclusions {
            if let Some(why) = reserved_reason(name, &self.protected) {
                return Err(NamespaceRefusal::ReservedExclusion {
                    name: name.clone(),
                    why,
                });
            }
        }
        Ok(())
    }

    /// The remote namespace for `local`, or why no pod may go there.
    pub fn checked_remote(&self, local: &str) -> Result<String, NamespaceRefusal> {
        if self.prefix.is_empty() {
            return Err(NamespaceRefusal::EmptyPrefix);
        }
        let remote = self.remote(local);
        match reserved_reason(&remote, &self.protected) {
            Some(why) => Err(NamespaceRefusal::Reserved {
                local: local.to_owned(),
                remote,
                why,
            }),
            None => Ok(remote),
        }
    }

    /// The remote namespace for `local`, always a valid label when `local` is
    /// one. Too long a result is shortened with a hash of the local name, so
    /// two local namespaces never share a remote one. Unchecked: requests go
    /// through [`NamespaceMapper::checked_remote`] first.
    pub fn remote(&self, local: &str) -> String {
        if self.prefix.is_empty() || self.exclusions.iter().any(|e| e == local) {
            return local.to_string();
        }
        let full = format!("{}-{}", self.prefix, local);
        if is_rfc1123_label(&full) {
            return full;
        }
        let hash = short_hash(&["namespace", &self.prefix, local]);
        let mut stem = sanitize(&full);
        stem.truncate(MAX_LABEL - 1 - HASH_HEX);
        let stem = stem.trim_end_matches('-');
        format!("{stem}-{hash}")
    }
    /// Whether `remote` is a namespace this mapping can produce: only pods in
    /// such namespaces are candidates for the orphan sweep, so two plugins
    /// with different prefixes on one remote cluster never sweep each
    /// other's pods.
    pub fn may_own(&self, remote: &str) -> bool {
        self.prefix.is_empty()
            || self.exclusions.iter().any(|e| e == remote)
            || remote
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn may_own_only_namespaces_of_its_prefix() {
        let m = NamespaceMapper::new("offloading", vec!["shared".into()]);
        assert!(m.may_own(&m.remote("team-a")));
        assert!(m.may_own(&m.remote(&"x".repeat(63))));
        assert!(m.may_own("shared"));
        assert!(!m.may_own("offloadingx-team-a"));
        assert!(!m.may_own("other-team-a"));
        assert!(!m.may_own("kube-system"));
        assert!(NamespaceMapper::new("", vec![]).may_own("anything"));
    }

    const UID: &str = "6f1c1f1e-0000-4000-8000-000000000001";
    const UID2: &str = "6f1c1f1e-0000-4000-8000-000000000002";

    #[test]
    fn short_names_keep_the_python_plugin_form() {
        assert_eq!(
            remote_name(NameKind::Pod, "hello", UID),
            format!("hello-{UID}")
        );
    }

    #[test]
    fn long_names_are_truncated_with_a_hash_and_stay_distinct() {
        let long = "my-very-long-deployment-name-7c9f8d6b5-abcde";
        let a = remote_name(NameKind::Pod, long, UID);
        let b = remote_name(NameKind::Pod, long, UID2);
        assert!(a.len() <= 63 && is_rfc1123_label(&a), "{a}");
        assert!(a.starts_with(
            "my-very-long-deployment-name-7c9f8d6b5-abcde"[..30].trim_end_matches('-')
        ));
        assert_ne!(a, b);
        // deterministic
        assert_eq!(a, remote_name(NameKind::Pod, long, UID));
    }

    #[test]
    fn names_of_253_chars_and_dots_map_to_labels() {
        let name = format!("{}.{}", "a".repeat(200), "b".repeat(52));
        let r = remote_name(NameKind::Pod, &name, UID);
        assert!(is_rfc1123_label(&r), "{r}");
        let dotted = remote_name(NameKind::ConfigMap, "app.config", UID);
        assert!(is_rfc1123_label(&dotted), "{dotted}");
        assert_ne!(dotted, remote_name(NameKind::ConfigMap, "app-config", UID));
    }

    #[test]
    fn names_differing_only_after_the_cut_do_not_collide() {
        let a = format!("{}-one", "x".repeat(60));
        let b = format!("{}-two", "x".repeat(60));
        assert_ne!(
            remote_name(NameKind::Pod, &a, UID),
            remote_name(NameKind::Pod, &b, UID)
        );
    }

    #[test]
    fn volume_data_never_takes_a_user_secret_name() {
        let v = remote_name(NameKind::VolumeData, "creds", UID);
        let s = remote_name(NameKind::Secret, "creds", UID);
        assert_ne!(v, s);
        assert!(is_rfc1123_label(&v));
    }

    #[test]
    fn uid_form_and_hash_form_cannot_coincide() {
        // In the UID form position -13 is '-', in the hash form a hex digit.
        let u = remote_name(NameKind::Pod, "p", UID);
        let h = remote_name(NameKind::Pod, &"p".repeat(40), UID);
        assert_eq!(u.as_bytes()[u.len() - 13], b'-');
        assert_ne!(h.as_bytes()[h.len() - 13], b'-');
    }

    #[test]
    fn namespace_mapping() {
        let m = NamespaceMapper::new("offloading", vec!["keep".into()]);
        assert_eq!(m.remote("default"), "offloading-default");
        assert_eq!(m.remote("keep"), "keep");
        assert_eq!(NamespaceMapper::default().remote("default"), "default");
        let long = "n".repeat(60);
        let r = m.remote(&long);
        assert!(is_rfc1123_label(&r), "{r}");
        assert_ne!(r, m.remote(&"n".repeat(59)));
    }

    #[test]
    fn label_and_subdomain_checks() {
        assert!(is_rfc1123_label("a-1"));
        assert!(!is_rfc1123_label("A"));
        assert!(!is_rfc1123_label("-a"));
        assert!(!is_rfc1123_label(&"a".repeat(64)));
        assert!(is_rfc1123_subdomain("a.b-c"));
        assert!(!is_rfc1123_subdomain("a..b"));
        assert!(!is_rfc1123_subdomain("a_b"));
        assert!(is_valid_uid(UID));
        assert!(!is_valid_uid("UPPER-case"));
    }

    #[test]
    fn uids_must_be_canonical_lower_case_uuids() {
        assert!(is_valid_uid("00000000-0000-0000-0000-000000000000"));
        for bad in [
            "",
            "u",
            "not-a-uuid",
            "6F1C1F1E-0000-4000-8000-000000000001",
            "6f1c1f1e000040008000000000000001",
            "6f1c1f1e-0000-4000-8000-00000000000",
            "6f1c1f1e-0000-4000-8000-0000000000011",
            "6f1c1f1e-0000-4000-8000-00000000000g",
            "{6f1c1f1e-0000-4000-8000-000000000001}",
            "6f1c1f1e-0000-4000-8000-000000000001,x=y",
        ] {
            assert!(!is_valid_uid(bad), "{bad:?}");
        }
    }

    #[test]
    fn config_refuses_empty_system_and_reserved_mappings() {
        let ok = NamespaceMapper::new("offloading", vec!["shared".into()]);
        assert_eq!(ok.check_config(), Ok(()));
        assert_eq!(
            NamespaceMapper::new("", vec![]).check_config(),
            Err(NamespaceRefusal::EmptyPrefix)
        );
        for prefix in ["kube", "kube-x", "Bad", "-a", &"p".repeat(MAX_PREFIX + 1)] {
            assert!(
                NamespaceMapper::new(prefix, vec![]).check_config().is_err(),
                "{prefix:?}"
            );
        }
        // "kubernetes-..." is not kube-*.
        assert_eq!(
            NamespaceMapper::new("kubernetes", vec![]).check_config(),
            Ok(())
        );
        let protected = || vec!["offload-system".to_string(), "plugin-ns".into()];
        for excl in [
            "kube-system",
            "kube-public",
            "default",
            "offload-system",
            "plugin-ns",
        ] {
            let m =
                NamespaceMapper::new("offloading", vec![excl.into()]).with_protected(protected());
            assert!(
                matches!(
                    m.check_config(),
                    Err(NamespaceRefusal::ReservedExclusion { .. })
                ),
                "{excl}"
            );
        }
    }

    #[test]
    fn requests_mapping_onto_protected_namespaces_are_refused() {
        let m = NamespaceMapper::new("offloading", vec![])
            .with_protected(["offloading-system".to_string(), String::new()]);
        assert_eq!(m.protected, vec!["offloading-system".to_string()]);
        assert_eq!(m.checked_remote("team-a"), Ok("offloading-team-a".into()));
        let e = m.checked_remote("system").expect_err("bastion namespace");
        assert!(e.to_string().contains("\"offloading-system\""), "{e}");
        assert!(matches!(e, NamespaceRefusal::Reserved { .. }));
        // An exclusion cannot be used to reach a system namespace either,
        // even if the start-up check was skipped.
        let m = NamespaceMapper::new("offloading", vec!["kube-system".into()]);
        assert!(m.checked_remote("kube-system").is_err());
        assert!(
            m.checked_remote("default").is_ok(),
            "maps to offloading-default"
        );
        assert_eq!(
            NamespaceMapper::default().checked_remote("team-a"),
            Err(NamespaceRefusal::EmptyPrefix)
        );
    }
}
