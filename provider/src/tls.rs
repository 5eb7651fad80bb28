//! TLS for the kubelet API. Loading, the server config and serving are
//! `offload_runtime::tls`; what stays here is the self-signed serving
//! certificate made at start when no files are given (rcgen: the plugin
//! links the runtime and must not link rcgen).

use offload_runtime::tls::TlsError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed serving certificate for the node name and IP.
pub fn self_signed(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((vec![ck.cert.der().clone()], key))
}

// ---------------------------------------------------------------------------
// The plugin link: the provider as a TLS client of the plugin.
//
// What the provider trusts on the link is the plugin it was pointed at, not
// "any certificate some CA signed": either the plugin's own CA (the plugin
// chart generates one) or the SHA-256 of the plugin's certificate, which is
// then the only certificate accepted (like an SSH host key: names and dates
// do not matter, the exact certificate does).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The SHA-256 of a DER certificate (what `openssl x509 -fingerprint -sha256`
/// prints, colons and case aside).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    pub fn of(der: &[u8]) -> Self {
        CertFingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `sha256:ab12...`, `SHA256=AB:12:...` or bare hex: 64 hex digits, colons
/// and blanks ignored (the forms openssl, browsers and `sha256sum` print).
pub fn parse_fingerprint(s: &str) -> Result<CertFingerprint, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_prefix("sha256:")
        .or_else(|| lower.strip_prefix("sha256="))
        .or_else(|| lower.strip_prefix("sha256 fingerprint="))
        .unwrap_or(&lower);
    let hex: String = body
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "certificate fingerprint {t:?} is not a SHA-256 (64 hex digits, e.g. sha256:3f2a...)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(CertFingerprint(out))
}

/// Accepts exactly the certificate whose SHA-256 is pinned; the handshake
/// signatures are still verified (the peer must hold its key).
#[derive(Debug)]
pub struct PinnedCertVerifier {
    pin: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertVerifier {
    pub fn new(pin: CertFingerprint, algorithms: WebPkiSupportedAlgorithms) -> Self {
        PinnedCertVerifier { pin, algorithms }
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = CertFingerprint::of(end_entity);
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the plugin's certificate {got} is not the pinned {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// How the provider checks the plugin's certificate.
#[derive(Clone, Debug)]
pub enum ServerTrust<'a> {
    /// Only certificates this CA bundle signed, for the URL's host name.
    Ca(&'a Path),
    /// Only the certificate with this SHA-256.
    Pinned(CertFingerprint),
}

/// A rustls client config for the plugin link: `trust` for the server, and
/// the client certificate (mTLS) when given. ALPN h2 and http/1.1.
pub fn plugin_client_config(
    trust: ServerTrust<'_>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    use offload_runtime::tls::{load_certs, load_key, load_roots};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match trust {
        ServerTrust::Ca(ca) => builder.with_root_certificates(load_roots(ca)?),
        ServerTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier::new(pin, algorithms))),
    };
    let mut cfg = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests;
