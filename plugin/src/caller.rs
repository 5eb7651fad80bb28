//! Who is calling: the authenticated principal of a request and, with the
//! local virtual node a pod is bound to, the caller whose liveness the orphan
//! sweep judges that pod by ([`crate::sweep`]).
//!
//! The principal is what the authentication layer proved: the subject of
//! the client certificate (mTLS), else `token` (the holder of the plugin's one
//! bearer token, the same across token rotations), else `anonymous`
//! (`--insecure-no-auth`, e.g. a unix socket behind a stock interLink API
//! server). A caller is that principal plus the pod's
//! `spec.nodeName` (the interLink API server passes pods with their node), so
//! two local clusters, or two virtual nodes of one, are two callers even with
//! one shared token. The label value is a short hash: no secret, no name of
//! the local cluster on the remote one.

use std::{collections::BTreeSet, convert::Infallible};

use axum::{extract::FromRequestParts, http::request::Parts};
use k8s_openapi::api::core::v1::Pod;
use offload_runtime::tls::PeerCertificates;
use offload_wire::keys;
use sha2::{Digest, Sha256};

/// The authenticated principal of a request (an axum extractor; never fails).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(String);

impl Principal {
    /// From the request's client certificate or bearer token.
    pub fn of(parts: &Parts) -> Self {
        if let Some(PeerCertificates(certs)) = parts.extensions.get::<PeerCertificates>()
            && let Some(leaf) = certs.first()
        {
            // The subject survives certificate renewal; the whole certificate
            // is the fallback for one we cannot walk.
            let id = subject_der(leaf.as_ref()).unwrap_or(leaf.as_ref());
            return Self(format!("cert:{}", short_hash(&[id])));
        }
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        // The plugin accepts one token (the auth layer checked it), so its
        // holder is one principal; naming it by the token itself would turn
        // every token rotation into new callers whose old pods are never swept.
        match bearer {
            Some(_) => Self("token".into()),
            None => Self("anonymous".into()),
        }
    }

    /// The principal as text (hashes only, safe to log).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The caller of pods bound to local node `node`.
    pub fn caller(&self, node: &str) -> String {
        short_hash(&[self.0.as_bytes(), node.as_bytes()])
    }

    /// The caller of `pod` (by its `spec.nodeName`, empty if unbound).
    pub fn caller_of(&self, pod: &Pod) -> String {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        self.caller(node)
    }

    /// The distinct callers of a status call's pods.
    pub fn callers_of<'a>(&self, pods: impl IntoIterator<Item = &'a Pod>) -> BTreeSet<String> {
        pods.into_iter().map(|p| self.caller_of(p)).collect()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

/// Labels the remote pod with its caller and this plugin instance.
pub fn label(pod: &mut Pod, caller: &str, instance: &str) {
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(keys::LABEL_CALLER.into(), caller.into());
    labels.insert(keys::LABEL_PLUGIN_INSTANCE.into(), instance.into());
}

/// 16 hex digits (64 bits) of SHA-256 over the parts, length-prefixed so
/// that ("ab","c") and ("a","bc") differ. A label value (<= 63 chars).
fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(b"offload-caller/v1");
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..8])
}

/// One DER TLV at the start of `der`: (tag, whole element, content).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in der.get(2..2 + n)? {
            len = (len << 8) | *b as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, der.get(..end)?, der.get(header..end)?))
}

/// The DER of a certificate's subject Name (RFC 5280: Certificate ->
/// TBSCertificate -> [0] version?, serial, signature, issuer, validity,
/// subject).
pub fn subject_der(cert: &[u8]) -> Option<&[u8]> {
    let (_, _, certificate) = tlv(cert)?;
    let (_, _, mut tbs) = tlv(certificate)?;
    let mut fields = Vec::with_capacity(6);
    while !tbs.is_empty() && fields.len() < 6 {
        let (tag, whole, _) = tlv(tbs)?;
        tbs = &tbs[whole.len()..];
        // The optional explicit [0] version is not counted.
        if fields.is_empty() && tag == 0xa0 {
            continue;
        }
        fields.push((tag, whole));
    }
    // serial, signature, issuer, validity, subject: the fifth, a SEQUENCE.
    match fields.get(4) {
        Some((0x30, whole)) => Some(whole),
        _ => None,
    }
}

/// The caller and instance labels of a remote pod.
pub fn labels_of(pod: &Pod) -> (Option<String>, Option<String>) {
    let labels = pod.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).cloned();
    (get(keys::LABEL_CALLER), get(keys::LABEL_PLUGIN_INSTANCE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = axum::http::Request::builder();
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn principals_from_token_and_none_and_callers_by_node() {
        let a = Principal::of(&parts(Some("Bearer secret-a")));
        let rotated = Principal::of(&parts(Some("Bearer secret-b")));
        let anon = Principal::of(&parts(None));
        assert_eq!(anon.as_str(), "anonymous");
        assert_eq!(a.as_str(), "token");
        // A rotated token is the same principal: its pods keep their caller.
        assert_eq!(a, rotated);
        assert_ne!(a.caller("vn1"), a.caller("vn2"));
        assert_ne!(a.caller("vn1"), anon.caller("vn1"));
        assert_eq!(a.caller("vn1").len(), 16);
    }

    #[test]
    fn a_certificate_principal_is_its_subject_and_survives_renewal() {
        let cert = |cn: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut p = rcgen::CertificateParams::new(vec![]).expect("params");
            p.distinguished_name
                .push(rcgen::DnType::CommonName, cn.to_string());
            p.self_signed(&key).expect("cert").der().to_vec()
        };
        let (one, renewed, other) = (cert("provider-a"), cert("provider-a"), cert("provider-b"));
        assert_ne!(one, renewed);
        let s1 = subject_der(&one).expect("subject");
        assert!(s1.windows(10).any(|w| w == b"provider-a"));
        assert_eq!(Some(s1), subject_der(&renewed));
        assert_ne!(Some(s1), subject_der(&other));
        let with = |der: Vec<u8>| {
            let mut p = parts(Some("Bearer t"));
            p.extensions
                .insert(PeerCertificates(std::sync::Arc::new(vec![
                    rustls::pki_types::CertificateDer::from(der),
                ])));
            Principal::of(&p)
        };
        assert_eq!(with(one.clone()), with(renewed));
        assert_ne!(with(one.clone()), with(other));
        assert!(with(one).as_str().starts_with("cert:"));
        assert_eq!(subject_der(b"\x30\x03junk"), None);
        assert_eq!(subject_der(b""), None);
    }

    #[test]
    fn labels_are_written_and_read_back() {
        let mut pod = Pod::default();
        label(&mut pod, "c1", "inst");
        assert_eq!(labels_of(&pod), (Some("c1".into()), Some("inst".into())));
        assert_eq!(labels_of(&Pod::default()), (None, None));
    }
}
