//! Listeners: TCP, TCP with TLS (optionally mTLS), unix socket; one accept
//! loop with graceful shutdown (in-flight requests finish, log streams are
//! cut when the server stops).

use std::{io::BufReader, net::SocketAddr, path::PathBuf, sync::Arc};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Listen;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    ReadPem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no {what} found in the PEM file")]
    EmptyPem { path: PathBuf, what: &'static str },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS client CA: {0}")]
    ClientCa(String),
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

fn read_pem(path: &PathBuf) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::ReadPem {
        path: path.clone(),
        source,
    })
}

/// TLS acceptor from PEM files; with a client CA, clients must authenticate.
pub fn tls_acceptor(
    cert: &PathBuf,
    key: &PathBuf,
    client_ca: Option<&PathBuf>,
) -> Result<TlsAcceptor, ServeError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(&read_pem(cert)?[..]))
        .collect::<Result<_, _>>()
        .map_err(|source| ServeError::ReadPem {
            path: cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServeError::EmptyPem {
            path: cert.clone(),
            what: "certificate",
        });
    }
    let key_der = rustls_pemfile::private_key(&mut BufReader::new(&read_pem(key)?[..]))
        .map_err(|source| ServeError::ReadPem {
            path: key.clone(),
            source,
        })?
        .ok_or_else(|| ServeError::EmptyPem {
            path: key.clone(),
            what: "private key",
        })?;
    let builder = rustls::ServerConfig::builder();
    let mut config = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut BufReader::new(&read_pem(ca)?[..])) {
                let c = c.map_err(|source| ServeError::ReadPem {
                    path: ca.clone(),
                    source,
                })?;
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| ServeError::ClientCa(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key_der)?
        }
        None => builder
            .with_no_client_auth()
            .with_single_cert(certs, key_der)?,
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn serve_conn<I>(io: I, app: Router, graceful: &GracefulShutdown)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app);
    let conn = Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "connection ended with an error");
        }
    });
}

/// Serves `app` until `cancel`, then waits (at most 10 s) for open connections.
pub async fn run(bound: Bound, tls: Option<TlsAcceptor>, app: Router, cancel: CancellationToken) {
    let graceful = GracefulShutdown::new();
    match &bound {
        Bound::Tcp(_) => info!(addr = %bound.addr(), tls = tls.is_some(), "plugin API listening"),
        Bound::Unix(_, p) => info!(socket = %p.display(), "plugin API listening"),
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = accept(&bound) => match accepted {
                Ok(Conn::Tcp(stream)) => {
                    let _ = stream.set_nodelay(true);
                    match &tls {
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            let app = app.clone();
                            let watcher = graceful.watcher();
                            // Handshake off the accept loop: a slow client must not block others.
                            tokio::spawn(async move {
                                match acceptor.accept(stream).await {
                                    Ok(tls_stream) => {
                                        let svc = TowerToHyperService::new(app);
                                        let conn = Builder::new(TokioExecutor::new())
                                            .serve_connection_with_upgrades(TokioIo::new(tls_stream), svc)
                                            .into_owned();
                                        if let Err(e) = watcher.watch(conn).await {
                                            debug!(error = %e, "TLS connection ended with an error");
                                        }
                                    }
                                    Err(e) => debug!(error = %e, "TLS handshake failed"),
                                }
                            });
                        }
                        None => serve_conn(stream, app.clone(), &graceful),
                    }
                }
                Ok(Conn::Unix(stream)) => serve_conn(stream, app.clone(), &graceful),
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
    bound_cleanup(bound);
    if tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after 10 s; stopping anyway");
    }
}

fn bound_cleanup(bound: Bound) {
    if let Bound::Unix(l, path) = bound {
        drop(l);
        let _ = std::fs::remove_file(path);
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(bound: &Bound) -> std::io::Result<Conn> {
    match bound {
        Bound::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
        Bound::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}
