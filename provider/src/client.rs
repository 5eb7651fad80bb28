//! HTTP client for the plugin protocol, in its two flavours:
//!
//! | call   | `PluginMode::Plugin`                | `PluginMode::Interlink`             |
//! |--------|-------------------------------------|-------------------------------------|
//! | create | `POST /create` `RetrievedPodData`   | `POST /create` `PodCreateRequests`  |
//! | delete | `POST /delete` `v1.Pod`             | `DELETE /delete` `v1.Pod`           |
//! | status | `GET /status` `[v1.Pod]`            | same                                |
//! | logs   | `GET /getLogs` `LogStruct` (stream) | same                                |
//! | ping   | `GET /status` `[]`                  | `POST /pinglink`                    |
//!
//! Only HTTP 200 is success (interLink's rule). Connection errors are retried
//! with jittered backoff; every call is idempotent on the plugin side.
//!
//! The link is TLS unless told otherwise: `https://` with the plugin's CA or
//! its certificate's SHA-256 pinned (`crate::tls`), optionally with a client
//! certificate; plain `http://` only to a loopback address (a sidecar) or
//! with `--plugin-insecure`. Answers are read up to a size cap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use offload_wire::{CreateStruct, LogStruct, PingResponse, PodStatus, RetrievedPodData};
use serde::Serialize;

use crate::config::{Config, PluginMode};
use crate::metrics::Metrics;
use crate::payload::to_create_requests;
use crate::retry::Backoff;
use crate::tls::CertFingerprint;
use tracing::warn;

mod link;
mod stats;
pub mod stream;
pub mod watch;
use link::with_tls;
pub use link::{Scheme, check_scheme, read_capped};

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot reach the plugin: {0}")]
    Connect(String),
    #[error("plugin call timed out")]
    Timeout,
    #[error("plugin answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("plugin answer is not valid: {0}")]
    Decode(String),
    #[error("cannot read the plugin token file: {0}")]
    Token(String),
    #[error("invalid plugin client configuration: {0}")]
    Config(String),
    #[error("TLS with the plugin failed (certificate not trusted or not the pinned one?): {0}")]
    Tls(String),
    #[error("plugin answer larger than {limit} bytes (--plugin-max-response-size): cut")]
    TooLarge { limit: u64 },
    #[error("plugin request failed: {0}")]
    Other(String),
}

impl PluginError {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PluginError::Connect(_) => "connect",
            PluginError::Timeout => "timeout",
            PluginError::Status { .. } => "status",
            PluginError::Decode(_) => "decode",
            PluginError::Token(_) => "token",
            PluginError::Config(_) => "config",
            PluginError::Tls(_) => "tls",
            PluginError::TooLarge { .. } => "too_large",
            PluginError::Other(_) => "other",
        }
    }

    /// Whether the plugin could not be reached at all (as opposed to
    /// answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            PluginError::Connect(_) | PluginError::Timeout | PluginError::Tls(_)
        )
    }
}

/// Whether a rustls error is somewhere in the chain (a refused certificate
/// is no reason to retry at once, and must say so). `io::Error` hides its
/// payload from `source()`, so it is opened explicitly, at any depth.
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut depth = 0;
    while let Some(err) = cur {
        depth += 1;
        if depth > 16 {
            return false;
        }
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && is_tls(inner)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

pub(crate) fn classify(e: reqwest::Error) -> PluginError {
    if is_tls(&e) {
        PluginError::Tls(error_chain(&e))
    } else if e.is_timeout() {
        PluginError::Timeout
    } else if e.is_connect() {
        PluginError::Connect(error_chain(&e))
    } else {
        PluginError::Other(error_chain(&e))
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The plugin client. Cheap to clone.
#[derive(Clone)]
pub struct PluginClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    mode: PluginMode,
    token_file: Option<PathBuf>,
    retries: u32,
    backoff: Backoff,
    timeout: Duration,
    max_response: u64,
    /// Slots for create, delete, status and follow calls
    /// (`--plugin-max-requests`).
    in_flight: Arc<tokio::sync::Semaphore>,
    metrics: Option<Metrics>,
    /// WebSockets of the streaming extension (exec, attach, port-forward).
    stream: stream::StreamConnector,
}

impl std::fmt::Debug for PluginClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginClient")
            .field("base", &self.inner.base)
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

/// Settings of a [`PluginClient`].
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub url: String,
    pub mode: PluginMode,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub backoff: Backoff,
    /// SHA-256 of the plugin's certificate: only that one is accepted.
    pub cert_sha256: Option<CertFingerprint>,
    /// Client certificate and key files (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Allow plain `http://` to a non-loopback host.
    pub insecure: bool,
    /// Largest answer read.
    pub max_response: u64,
    /// Create, delete, status and follow calls in flight at once.
    pub max_in_flight: usize,
}

impl ClientSettings {
    pub fn from_config(c: &Config) -> Self {
        ClientSettings {
            url: c.plugin_url.clone(),
            mode: c.plugin_mode,
            token_file: c.plugin_token_file.clone(),
            ca_file: c.plugin_ca_file.clone(),
            timeout: c.plugin_timeout,
            connect_timeout: c.plugin_connect_timeout,
            retries: c.plugin_retries,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(2)),
            cert_sha256: c.plugin_cert_sha256,
            client_cert: c
                .plugin_client_cert_file
                .clone()
                .zip(c.plugin_client_key_file.clone()),
            insecure: c.plugin_insecure,
            max_response: c.plugin_max_response_size,
            max_in_flight: c.plugin_max_requests,
        }
    }

    pub fn new(url: &str, mode: PluginMode) -> Self {
        ClientSettings {
            url: url.into(),
            mode,
            token_file: None,
            ca_file: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(2)),
            cert_sha256: None,
            client_cert: None,
            insecure: false,
            max_response: 64 << 20,
            max_in_flight: 32,
        }
    }
}

fn session(op: &str) -> String {
    format!("{op}#{}", uuid::Uuid::new_v4().simple())
}

impl PluginClient {
    pub fn new(s: ClientSettings, metrics: Option<Metrics>) -> Result<Self, PluginError> {
        // No total timeout on the client: log streams run as long as they
        // follow. Each non-streaming call sets its own.
        let mut b = reqwest::Client::builder()
            .connect_timeout(s.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90));
        let scheme = check_scheme(&s.url, s.insecure)?;
        let stream = stream::StreamConnector::new(&s)?;
        let base = match &scheme {
            Scheme::Unix => {
                #[cfg(unix)]
                {
                    let path = s.url.trim_start_matches("unix://");
                    b = b.unix_socket(PathBuf::from(path));
                }
                "http://unix".to_string()
            }
            Scheme::Http { loopback } => {
                if *loopback {
                    warn!(url = %s.url, "plugin link is plain HTTP (loopback only: a sidecar)");
                } else {
                    warn!(
                        url = %s.url,
                        "INSECURE: plugin link is plain HTTP (--plugin-insecure): anyone on the path \
                         reads the bearer token and can answer in the plugin's name, including the \
                         bastion key the gateway authorizes"
                    );
                }
                s.url.trim_end_matches('/').to_string()
            }
            Scheme::Https => s.url.trim_end_matches('/').to_string(),
        };
        if scheme == Scheme::Https {
            b = with_tls(b, &s)?;
        }
        let http = b
            .build()
            .map_err(|e| PluginError::Config(error_chain(&e)))?;
        Ok(PluginClient {
            inner: Arc::new(Inner {
                http,
                base,
                mode: s.mode,
                token_file: s.token_file,
                retries: s.retries,
                backoff: s.backoff,
                timeout: s.timeout,
                max_response: s.max_response,
                in_flight: Arc::new(tokio::sync::Semaphore::new(s.max_in_flight.max(1))),
                metrics,
                stream,
            }),
        })
    }

    pub fn mode(&self) -> PluginMode {
        self.inner.mode
    }

    /// The metrics this client reports to, if any.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.inner.metrics.as_ref()
    }

    fn token(&self) -> Result<Option<String>, PluginError> {
        match &self.inner.token_file {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| PluginError::Token(format!("{}: {e}", p.display()))),
        }
    }

    /// One call with retries on connection errors; returns the 200 response.
    pub(crate) async fn call<B: Serialize + ?Sized>(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, PluginError> {
        let url = format!("{}{}", self.inner.base, path);
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(b).map_err(|e| PluginError::Other(format!("encode: {e}")))?,
            ),
            None => None,
        };
        let token = self.token()?;
        // The bulk calls share a bound under the plugin's own concurrency
        // limit: thousands of pods created or deleted at once wait here
        // rather than being shed with 503 and retried after a backoff. The
        // ping, streams and logs do not wait behind them.
        let _slot = match op {
            "create" | "delete" | "status" | "follow" => Some(
                self.inner
                    .in_flight
                    .acquire()
                    .await
                    .map_err(|_| PluginError::Other("the plugin client is closed".into()))?,
            ),
            _ => None,
        };
        let started = Instant::now();
        tracing::debug!(op, %url, "plugin call");
        let mut attempt = 0;
        let result = loop {
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("InterLink-Http-Session", session(op));
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            match req.send().await {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => break Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    // Only the start of an error body is kept: read no more.
                    let bytes = read_capped(resp, 2000, true).await.unwrap_or_default();
                    break Err(PluginError::Status {
                        status,
                        body: String::from_utf8_lossy(&bytes).into_owned(),
                    });
                }
                Err(e) => {
                    let err = classify(e);
                    if matches!(err, PluginError::Connect(_)) && attempt < self.inner.retries {
                        tokio::time::sleep(self.inner.backoff.jittered(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    break Err(err);
                }
            }
        };
        if let Some(m) = &self.inner.metrics {
            m.observe_plugin_call(op, started.elapsed(), result.as_ref().err());
        }
        result
    }

    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, PluginError> {
        let bytes = read_capped(resp, self.inner.max_response, false).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let snippet: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            PluginError::Decode(format!("{e} in {snippet:?}"))
        })
    }

    /// Create (idempotent on the plugin side: keyed by pod UID).
    pub async fn create(&self, data: &RetrievedPodData) -> Result<CreateStruct, PluginError> {
        let resp = match self.inner.mode {
            PluginMode::Plugin => {
                self.call(
                    "create",
                    Method::POST,
                    "/create",
                    Some(data),
                    Some(self.timeout()),
                )
                .await?
            }
            PluginMode::Interlink => {
                let req = to_create_requests(data);
                self.call(
                    "create",
                    Method::POST,
                    "/create",
                    Some(&req),
                    Some(self.timeout()),
                )
                .await?
            }
        };
        self.json(resp).await
    }

    /// Delete (idempotent: an unknown pod is fine).
    pub async fn delete(&self, pod: &Pod) -> Result<(), PluginError> {
        let method = match self.inner.mode {
            PluginMode::Plugin => Method::POST,
            PluginMode::Interlink => Method::DELETE,
        };
        self.call("delete", method, "/delete", Some(pod), Some(self.timeout()))
            .await?;
        Ok(())
    }

    /// Status of many pods in one request.
    pub async fn status(&self, pods: &[Pod]) -> Result<Vec<PodStatus>, PluginError> {
        let resp = self
            .call(
                "status",
                Method::GET,
                "/status",
                Some(pods),
                Some(self.timeout()),
            )
            .await?;
        self.json(resp).await
    }

    /// Log stream of a container.
    pub async fn logs(&self, req: &LogStruct) -> Result<reqwest::Response, PluginError> {
        let timeout = (!req.opts.follow).then(|| self.timeout());
        self.call("logs", Method::GET, "/getLogs", Some(req), timeout)
            .await
    }

    /// Health ping; returns the plugin's `PingResponse` when it sends one.
    pub async fn ping(&self) -> Result<Option<PingResponse>, PluginError> {
        let resp = match self.inner.mode {
            PluginMode::Plugin => {
                let empty: [Pod; 0] = [];
                self.call(
                    "ping",
                    Method::GET,
                    "/status",
                    Some(&empty[..]),
                    Some(self.ping_timeout()),
                )
                .await?
            }
            PluginMode::Interlink => {
                self.call::<()>(
                    "ping",
                    Method::POST,
                    "/pinglink",
                    None,
                    Some(self.ping_timeout()),
                )
                .await?
            }
        };
        let bytes = read_capped(resp, self.inner.max_response, false).await?;
        // A JSON array (older plugins) or anything else is a plain "ok".
        // (serde would read `[]` as an all-default struct: require an object.)
        let value: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        Ok(value
            .filter(serde_json::Value::is_object)
            .and_then(|v| serde_json::from_value::<PingResponse>(v).ok()))
    }

    /// The bastion's SSH public key from our plugin (`GET /bastion/publicKey`
    /// -> `{"publicKey": "ssh-ed25519 ..."}`): 503 while the plugin is still
    /// installing the bastion, 404 when it keeps none. Not part of the
    /// interLink protocol.
    pub async fn bastion_public_key(&self) -> Result<String, PluginError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "publicKey")]
            public_key: String,
        }
        let resp = self
            .call::<()>(
                "bastion_key",
                Method::GET,
                "/bastion/publicKey",
                None,
                Some(self.ping_timeout()),
            )
            .await?;
        let a: Answer = self.json(resp).await?;
        let key = a.public_key.trim().to_owned();
        if key.is_empty() {
            return Err(PluginError::Decode("empty publicKey".into()));
        }
        Ok(key)
    }

    fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn ping_timeout(&self) -> Duration {
        self.inner.timeout.min(Duration::from_secs(10))
    }
}
