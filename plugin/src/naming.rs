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

/// Is `s` usable as a local pod UID? Kubernetes UIDs are lower-case UUIDs; we
/// accept any lower-case alphanumeric/`-` string that is a valid label value,
/// because the UID goes into label values and remote names.
pub fn is_valid_uid(s: &str) -> bool {
    is_rfc1123_label(s)
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
/// namespace itself when the prefix is empty or the namespace is excluded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceMapper {
    pub prefix: String,
    pub exclusions: Vec<String>,
}

impl NamespaceMapper {
    pub fn new(prefix: impl Into<String>, exclusions: Vec<String>) -> Self {
        Self {
            prefix: prefix.into(),
            exclusions,
        }
    }

    /// The remote namespace for `local`, always a valid label when `local` is
    /// one. Too long a result is shortened with a hash of the local name, so
    /// two local namespaces never share a remote one.
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
}
