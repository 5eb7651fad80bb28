//! Throw-away certificate authorities and client certificates for tests
//! that play someone holding the wrong certificate (rcgen; test support
//! only, no production crate links this).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca")
}

/// A client certificate for `common_name` signed by `issuer`, followed by its
/// key, in PEM (what `reqwest::Identity::from_pem` takes).
pub fn client_identity(issuer: &CertifiedIssuer<'_, KeyPair>, common_name: &str) -> String {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, issuer).expect("sign");
    format!("{}{}", cert.pem(), key.serialize_pem())
}
