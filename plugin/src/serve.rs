//! Listeners: TCP, TCP with TLS (optionally mTLS), unix socket. Serving is
//! `offload_runtime::tls` (one accept loop with a handshake timeout and a
//! graceful drain: in-flight requests finish, log streams are cut when the
//! server stops).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{Router, serve::ListenerExt};
use offload_runtime::tls::{self as rt_tls, ClientAuth, HANDSHAKE_TIMEOUT, TlsError};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Listen;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound listener.
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Bound {
    pub async fn bind(listen: &Listen) -> Result<Self, ServeError> {
        match listen {
            Listen::Tcp(addr) => TcpListener::bind(addr)
                .await
                .map(Bound::Tcp)
                .map_err(|source| ServeError::Bind {
                    what: addr.to_string(),
                    source,
                }),
            Listen::Unix(path) => {
                // A stale socket from a previous run would make bind fail.
                if path.exists() {
                    let _ = std::fs::remove_file(path);
                }
                UnixListener::bind(path)
                    .map(|l| Bound::Unix(l, path.clone()))
                    .map_err(|source| ServeError::Bind {
                        what: path.display().to_string(),
                        source,
                    })
            }
        }
    }

    /// The TCP address (for unix sockets: 0.0.0.0:0).
    pub fn addr(&self) -> SocketAddr {
        match self {
            Bound::Tcp(l) => l
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            Bound::Unix(..) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

/// Server TLS from PEM files; with a client CA, clients must authenticate.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&PathBuf>,
) -> Result<Arc<ServerConfig>, ServeError> {
    let client = client_ca.map_or(ClientAuth::None, |ca| ClientAuth::Required(ca));
    Ok(rt_tls::load_server_config(cert, key, client)?)
}

/// Serves `app` until `cancel`, then waits (at most 10 s) for open connections.
pub async fn run(
    bound: Bound,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    cancel: CancellationToken,
) {
    match bound {
        Bound::Tcp(l) => {
            info!(addr = ?l.local_addr().ok(), tls = tls.is_some(), "plugin API listening");
            let loopback = l.local_addr().is_ok_and(|a| a.ip().is_loopback());
            if tls.is_none() && !loopback {
                // The bearer token and every answer (the bastion key the
                // provider authorizes included) cross the network in clear.
                warn!(
                    addr = ?l.local_addr().ok(),
                    "INSECURE: plugin API in plain HTTP on a network address; give --tls-cert/--tls-key \
                     (the chart does by default) so the provider can pin the certificate"
                );
            }
            // Small request/response exchanges: no Nagle delay.
            let l = l.tap_io(|s| {
                let _ = s.set_nodelay(true);
            });
            match tls {
                Some(config) => rt_tls::serve_tls(l, config, app, cancel, HANDSHAKE_TIMEOUT).await,
                None => rt_tls::serve(l, app, cancel).await,
            }
        }
        Bound::Unix(l, path) => {
            info!(socket = %path.display(), "plugin API listening");
            rt_tls::serve(l, app, cancel).await;
            let _ = std::fs::remove_file(path);
        }
    }
}
