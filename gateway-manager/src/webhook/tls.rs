//! The webhook's serving certificate: a CA made at start (its PEM is the
//! `caBundle` of the registration), or files given by the operator.

use std::path::Path;
use std::sync::Arc;

use offload_runtime::tls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The errors of loading or making the certificate (the runtime's).
pub use offload_runtime::tls::TlsError;

/// A serving certificate, its key and the PEM CA bundle the apiserver must
/// trust (the `caBundle` of the webhook configuration).
pub struct ServingCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca_pem: String,
}

impl ServingCert {
    /// A fresh CA and a certificate it signs for `names` (DNS names or IPs,
    /// as the apiserver dials the webhook). Made at every start; registering
    /// the webhook publishes the new CA.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
        if names.is_empty() {
            return Err(TlsError::Generate(
                "no DNS name or IP to put in the certificate".to_owned(),
            ));
        }
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(g)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "offload gateway-manager webhook CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(g)?).map_err(g)?;
        let mut leaf = CertificateParams::new(names.to_vec()).map_err(g)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "offload gateway-manager webhook");
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(g)?;
        let cert = leaf.signed_by(&leaf_key, &ca).map_err(g)?;
        let key = PrivateKeyDer::try_from(leaf_key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            chain: vec![cert.der().clone()],
            key,
            ca_pem: ca.pem(),
        })
    }

    /// Certificate chain and key from PEM files; the CA bundle is `ca` if
    /// given, else the certificate file itself.
    pub fn from_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Self, TlsError> {
        let chain = tls::load_certs(cert)?;
        let key = tls::load_key(key)?;
        let ca_file = ca.unwrap_or(cert);
        let ca_pem = std::fs::read(ca_file).map_err(|source| TlsError::Read {
            path: ca_file.display().to_string(),
            source,
        })?;
        Ok(Self {
            chain,
            key,
            ca_pem: String::from_utf8_lossy(&ca_pem).into_owned(),
        })
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        tls::server_config(
            self.chain.clone(),
            self.key.clone_key(),
            tls::ClientAuth::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_cert_has_a_ca_and_serves() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = ServingCert::self_signed(&["10.201.0.1".into(), "gm.offload-system.svc".into()])
            .expect("cert");
        assert!(c.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(c.chain.len(), 1);
        c.server_config().expect("server config");
        assert!(ServingCert::self_signed(&[]).is_err());
    }
}
