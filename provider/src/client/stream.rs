//! The plugin's streaming extension (`offload_wire::stream`): one WebSocket
//! per exec, attach or port-forward connection, over the same link as every
//! other call (the same URL, TLS trust, client certificate and token), with
//! HTTP/1.1 only (a WebSocket upgrade does not exist in HTTP/2 here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::{ClientSettings, PluginClient, PluginError, Scheme, check_scheme, error_chain, is_tls};
use crate::tls::{ServerTrust, plugin_client_config};

/// The byte stream under a plugin WebSocket (TCP, TLS or a unix socket).
pub trait StreamIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> StreamIo for T {}

/// A WebSocket to the plugin.
pub type PluginSocket = WebSocketStream<Box<dyn StreamIo>>;

/// How streams reach the plugin, fixed at start from the client settings.
pub(super) struct StreamConnector {
    /// `ws://host:port` or `wss://host:port` (`ws://unix` for a socket).
    base: String,
    target: Target,
    connect_timeout: Duration,
}

enum Target {
    Tcp {
        host: String,
        port: u16,
        /// `None`: plain `ws://`; `Err`: TLS without a usable trust.
        tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
    },
    Unix(std::path::PathBuf),
}

impl StreamConnector {
    pub(super) fn new(s: &ClientSettings) -> Result<Self, PluginError> {
        let bad = |m: String| PluginError::Config(m);
        let scheme = check_scheme(&s.url, s.insecure)?;
        if scheme == Scheme::Unix {
            return Ok(StreamConnector {
                base: "ws://unix".into(),
                target: Target::Unix(s.url.trim_start_matches("unix://").into()),
                connect_timeout: s.connect_timeout,
            });
        }
        let uri: http::Uri = s
            .url
            .parse()
            .map_err(|e| bad(format!("plugin URL {:?}: {e}", s.url)))?;
        let https = scheme == Scheme::Https;
        let host = uri
            .host()
            .ok_or_else(|| bad(format!("plugin URL {:?} has no host", s.url)))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(|| tls_config(s));
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
        let prefix = uri.path().trim_end_matches('/');
        Ok(StreamConnector {
            base: format!("{}://{authority}{prefix}", if https { "wss" } else { "ws" }),
            target: Target::Tcp {
                host: host.trim_start_matches('[').trim_end_matches(']').into(),
                port,
                tls,
            },
            connect_timeout: s.connect_timeout,
        })
    }

    async fn io(&self) -> Result<Box<dyn StreamIo>, PluginError> {
        let conn = |e: std::io::Error| PluginError::Connect(e.to_string());
        match &self.target {
            #[cfg(unix)]
            Target::Unix(path) => Ok(Box::new(
                tokio::net::UnixStream::connect(path).await.map_err(conn)?,
            )),
            #[cfg(not(unix))]
            Target::Unix(_) => Err(PluginError::Config("unix sockets need unix".into())),
            Target::Tcp { host, port, tls } => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(conn)?;
                let _ = tcp.set_nodelay(true);
                let Some(tls) = tls else {
                    return Ok(Box::new(tcp));
                };
                let cfg = tls.clone().map_err(PluginError::Config)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| PluginError::Config(format!("{host}: {e}")))?;
                let s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        if is_tls(&e) {
                            PluginError::Tls(error_chain(&e))
                        } else {
                            PluginError::Connect(error_chain(&e))
                        }
                    })?;
                Ok(Box::new(s))
            }
        }
    }
}

/// The plugin link's TLS for WebSockets: its trust and client certificate,
/// ALPN `http/1.1` only.
fn tls_config(s: &ClientSettings) -> Result<Arc<rustls::ClientConfig>, String> {
    let trust = match (&s.cert_sha256, &s.ca_file) {
        (Some(pin), _) => ServerTrust::Pinned(*pin),
        (None, Some(ca)) => ServerTrust::Ca(ca),
        (None, None) => {
            return Err(
                "streaming (exec, attach, port-forward) to an https:// plugin needs \
                 --plugin-ca-file or --plugin-cert-sha256"
                    .into(),
            );
        }
    };
    let client_cert = s
        .client_cert
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    let mut cfg = plugin_client_config(trust, client_cert).map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn ws_error(e: tungstenite::Error) -> PluginError {
    match e {
        tungstenite::Error::Http(resp) => PluginError::Status {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(2000)]).into_owned())
                .unwrap_or_default(),
        },
        tungstenite::Error::Io(e) => PluginError::Connect(e.to_string()),
        other => PluginError::Other(other.to_string()),
    }
}

impl PluginClient {
    /// Opens the WebSocket of a streaming endpoint (`path` and `query` of
    /// `offload_wire::stream`), asking for subprotocol `protocol`.
    pub async fn open_stream(
        &self,
        op: &'static str,
        path: &str,
        query: &str,
        protocol: Option<&str>,
    ) -> Result<PluginSocket, PluginError> {
        let started = Instant::now();
        let result = self.open_stream_inner(path, query, protocol).await;
        if let Some(m) = &self.inner.metrics {
            m.observe_plugin_call(op, started.elapsed(), result.as_ref().err());
        }
        result
    }

    async fn open_stream_inner(
        &self,
        path: &str,
        query: &str,
        protocol: Option<&str>,
    ) -> Result<PluginSocket, PluginError> {
        let c = &self.inner.stream;
        let token = self.token()?;
        let mut req = format!("{}{path}?{query}", c.base)
            .into_client_request()
            .map_err(ws_error)?;
        let header =
            |v: String| HeaderValue::from_str(&v).map_err(|e| PluginError::Config(e.to_string()));
        if let Some(t) = token {
            req.headers_mut()
                .insert(AUTHORIZATION, header(format!("Bearer {t}"))?);
        }
        if let Some(p) = protocol {
            req.headers_mut()
                .insert(SEC_WEBSOCKET_PROTOCOL, header(p.to_string())?);
        }
        let connect = async {
            let io = c.io().await?;
            tokio_tungstenite::client_async_with_config(req, io, None)
                .await
                .map_err(ws_error)
        };
        let (ws, _resp) = tokio::time::timeout(c.connect_timeout + self.timeout(), connect)
            .await
            .map_err(|_| PluginError::Timeout)??;
        Ok(ws)
    }
}

impl PluginClient {
    /// Whether the plugin offers extension `name` (`offload_wire::watch`):
    /// `false` when it has no capabilities route (interLink's plugins).
    pub async fn offers(&self, name: &str) -> Result<bool, PluginError> {
        Ok(self.capabilities().await?.offers(name))
    }
}
