//! TLS and HTTP serving shared by every server of the tree (the provider's
//! kubelet API, the plugin API, the gateway-manager webhook, admin ports).
//!
//! - Loading: [`load_certs`], [`load_key`], [`server_config`] (ALPN `h2`,
//!   `http/1.1`; optional client certificates verified against a CA).
//! - Serving: [`serve_tls`] and [`serve`] run an axum `Router` with the
//!   hyper-util auto builder (HTTP/1.1 and HTTP/2, upgrades) until the
//!   shutdown token is cancelled, then drain: open connections finish their
//!   requests within [`DRAIN_TIMEOUT`], after which they are cut. A TLS
//!   handshake that does not finish within the given timeout is dropped, off
//!   the accept loop, so a slow client never blocks the others.
//! - A verified client certificate chain reaches the handlers as the
//!   request extension [`PeerCertificates`].

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long open connections may finish their requests after shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The serving certificate of an HTTPS server, both files or neither
/// (without them the binary makes one at start). Flattened into the
/// provider's and the standalone gateway-manager's flags, so both take the
/// same names.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct ServingCertArgs {
    /// Serving certificate (PEM). Without it one is made at start.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM), with --tls-cert-file.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}

impl ServingCertArgs {
    /// The certificate and key files, when given.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((
            self.tls_cert_file.as_deref()?,
            self.tls_key_file.as_deref()?,
        ))
    }
}

/// The handshake timeout every server of the tree uses.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no certificate found in {0}")]
    NoCert(String),
    #[error("no private key found in {0}")]
    NoKey(String),
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// Whether and how clients present certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth<'a> {
    /// No client certificates are asked for.
    None,
    /// Verified against this CA bundle when presented; a client without one
    /// still connects (the handler decides, e.g. on a bearer token).
    Optional(&'a Path),
    /// Every client must present a certificate signed by this CA bundle.
    Required(&'a Path),
}

/// The verified certificate chain of the client (leaf first), inserted into
/// every request of a connection whose client presented one.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = parse_certs(&read(path)?).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.display().to_string()));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut read(path)?.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(path.display().to_string()))
}

fn parse_certs(pem: &[u8]) -> std::io::Result<Vec<CertificateDer<'static>>> {
    rustls_pemfile::certs(&mut &pem[..]).collect()
}

/// The certificates of a CA bundle as trust roots.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// A server config for `certs` (leaf first) and `key`, ALPN `h2` then
/// `http/1.1`. The rustls crypto provider must be installed first (every
/// `main` installs ring).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client: ClientAuth<'_>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(ca) | ClientAuth::Required(ca) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(load_roots(ca)?));
            let verifier = if matches!(client, ClientAuth::Optional(_)) {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// [`server_config`] from a certificate and a key PEM file.
pub fn load_server_config(
    cert: &Path,
    key: &Path,
    client: ClientAuth<'_>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config(load_certs(cert)?, load_key(key)?, client)
}

/// Serves `router` over TLS on `listener` until `shutdown`, then drains.
pub async fn serve_tls<L>(
    listener: L,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
) where
    L: Listener,
    L::Addr: Debug + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    debug!(addr = ?listener.local_addr().ok(), tls = true, "listening");
    accept_loop(listener, shutdown, |io, addr, graceful, conns| {
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        conns.spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(peer = ?addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(peer = ?addr, "TLS handshake timed out");
                    return;
                }
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|c| PeerCertificates(Arc::new(c.to_vec())));
            let svc = hyper::service::service_fn(move |mut req| {
                if let Some(p) = &peer {
                    req.extensions_mut().insert(p.clone());
                }
                tower::ServiceExt::oneshot(router.clone(), req)
            });
            let conn = Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                debug!(peer = ?addr, error = %e, "connection ended with an error");
            }
        });
    })
    .await;
}

/// Serves `router` over plain HTTP on `listener` until `shutdown`, then
/// drains (admin ports, the plugin API without TLS, unix sockets).
pub async fn serve<L>(listener: L, router: Router, shutdown: CancellationToken)
where
    L: Listener,
    L::Addr: Debug + 'static,
{
    debug!(addr = ?listener.local_addr().ok(), tls = false, "listening");
    accept_loop(listener, shutdown, |io, addr, graceful, conns| {
        serve_plain(io, addr, router.clone(), graceful, conns)
    })
    .await;
}

fn serve_plain<I, A>(
    io: I,
    addr: A,
    router: Router,
    graceful: &GracefulShutdown,
    conns: &mut JoinSet<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Debug + Send + 'static,
{
    let conn = Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(router))
        .into_owned();
    let conn = graceful.watch(conn);
    conns.spawn(async move {
        if let Err(e) = conn.await {
            debug!(peer = ?addr, error = %e, "connection ended with an error");
        }
    });
}

/// Accepts until `shutdown`, hands every connection to `on_conn`, then
/// drains for at most [`DRAIN_TIMEOUT`] and cuts what is left.
async fn accept_loop<L, F>(mut listener: L, shutdown: CancellationToken, mut on_conn: F)
where
    L: Listener,
    F: FnMut(L::Io, L::Addr, &GracefulShutdown, &mut JoinSet<()>),
{
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
        tokio::select! {
            _ = shutdown.cancelled() => break,
            (io, addr) = listener.accept() => on_conn(io, addr, &graceful, &mut conns),
        }
    }
    drop(listener);
    drain(graceful.shutdown(), &mut conns).await;
}

async fn drain(graceful: impl Future<Output = ()>, conns: &mut JoinSet<()>) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful).await.is_err() {
        warn!(
            open = conns.len(),
            "connections still open {}s after shutdown; cutting them",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests;
