//! TLS for the kubelet API. Loading and serving are `offload_runtime::tls`
//! (re-exported here for the provider's callers); what stays here is the
//! self-signed serving certificate made at start when no files are given
//! (rcgen: the plugin links the runtime and must not link rcgen).

use std::path::Path;
use std::sync::Arc;

use offload_runtime::tls::ClientAuth;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use offload_runtime::tls::{TlsError, load_certs, load_key};

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

/// The server config. With a client CA, client certificates are verified
/// against it but not required (bearer tokens are the other way in); the
/// handler decides on 401.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let client = client_ca.map_or(ClientAuth::None, ClientAuth::Optional);
    offload_runtime::tls::server_config(certs, key, client)
}
