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
