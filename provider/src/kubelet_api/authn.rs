//! Who is calling, in the kubelet's terms (pure): a client certificate's
//! subject (CN is the user, each O a group, as the apiserver's x509
//! authenticator reads it), or the user a TokenReview answered for a bearer
//! token.

use axum::http::{HeaderMap, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::authz::UserInfo;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("the client certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("the client certificate's subject has no common name (the user name)")]
    NoCommonName,
}

/// The user of a client certificate (already verified against the client
/// CA by the TLS layer): CN -> user, O -> groups.
pub fn cert_user(der: &[u8]) -> Result<UserInfo, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or(CertError::NoCommonName)?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(UserInfo {
        name,
        groups,
        ..Default::default()
    }
    .authenticated())
}

/// The bearer token of a request, if any.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// What the token cache keeps a token under: its SHA-256, so tokens are not
/// held in memory as such and no other token can land on the same entry.
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The TokenReview for `token` (the apiserver's default audiences).
pub fn token_review(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The user a TokenReview answered, `None` when the token is not
/// authenticated (or the answer names nobody).
pub fn reviewed_user(status: Option<TokenReviewStatus>) -> Option<UserInfo> {
    let status = status?;
    if status.authenticated != Some(true) {
        return None;
    }
    let user = status.user?;
    let name = user.username.filter(|n| !n.is_empty())?;
    Some(
        UserInfo {
            name,
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }
        .authenticated(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo as K8sUser;
    use pretty_assertions::assert_eq;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(subject: &[(DnType, &str)]) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        // rcgen's default subject has a CN of its own.
        p.distinguished_name = DistinguishedName::new();
        for (t, v) in subject {
            p.distinguished_name.push(t.clone(), *v);
        }
        let key = KeyPair::generate().expect("key");
        p.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn cert_subject_is_user_and_groups() {
        let der = cert(&[
            (DnType::OrganizationName, "system:masters"),
            (DnType::CommonName, "kube-apiserver-kubelet-client"),
        ]);
        let u = cert_user(&der).expect("user");
        assert_eq!(u.name, "kube-apiserver-kubelet-client");
        assert_eq!(u.groups, vec!["system:masters", "system:authenticated"]);
        let der = cert(&[(DnType::CommonName, "mallory")]);
        assert_eq!(
            cert_user(&der).expect("user").groups,
            vec!["system:authenticated"]
        );
    }

    #[test]
    fn cert_without_common_name_is_nobody() {
        let der = cert(&[(DnType::OrganizationName, "system:masters")]);
        assert_eq!(cert_user(&der), Err(CertError::NoCommonName));
        assert!(matches!(cert_user(b"junk"), Err(CertError::Parse(_))));
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  abc ".parse().expect("hv"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Bearer ".parse().expect("hv"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("hv"));
        assert_eq!(bearer(&h), None);
        assert_ne!(token_key("a"), token_key("b"));
    }

    #[test]
    fn reviewed_users() {
        let ok = TokenReviewStatus {
            authenticated: Some(true),
            user: Some(K8sUser {
                username: Some("system:serviceaccount:ns:sa".into()),
                uid: Some("u".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let u = reviewed_user(Some(ok.clone())).expect("user");
        assert_eq!(u.name, "system:serviceaccount:ns:sa");
        assert_eq!(u.uid, "u");
        assert_eq!(
            u.groups,
            vec!["system:serviceaccounts", "system:authenticated"]
        );
        let no = TokenReviewStatus {
            authenticated: Some(false),
            ..ok.clone()
        };
        assert_eq!(reviewed_user(Some(no)), None);
        let nameless = TokenReviewStatus {
            user: Some(K8sUser::default()),
            ..ok
        };
        assert_eq!(reviewed_user(Some(nameless)), None);
        assert_eq!(reviewed_user(None), None);
    }
}
