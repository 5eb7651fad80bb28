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
//! with backoff; every call is idempotent on the plugin side.

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
            PluginError::Other(_) => "other",
        }
    }

    /// Whether the plugin could not be reached at all (as opposed to
    /// answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PluginError::Connect(_) | PluginError::Timeout)
    }
}

fn classify(e: reqwest::Error) -> PluginError {
    if e.is_timeout() {
        PluginError::Timeout
    } else if e.is_connect() {
        PluginError::Connect(error_chain(&e))
    } else {
        PluginError::Other(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
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
    metrics: Option<Metrics>,
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
        let base = if let Some(path) = s.url.strip_prefix("unix://") {
            #[cfg(unix)]
            {
                b = b.unix_socket(PathBuf::from(path));
            }
            "http://unix".to_string()
        } else if s.url.starts_with("http://") || s.url.starts_with("https://") {
            s.url.trim_end_matches('/').to_string()
        } else {
            return Err(PluginError::Config(format!(
                "plugin URL {:?} must start with http://, https:// or unix://",
                s.url
            )));
        };
        if let Some(ca) = &s.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| PluginError::Config(format!("{}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PluginError::Config(format!("{}: {e}", ca.display())))?;
            b = b.tls_certs_only(certs);
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
                metrics,
            }),
        })
    }

    pub fn mode(&self) -> PluginMode {
        self.inner.mode
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
    async fn call<B: Serialize + ?Sized>(
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
                    let text = resp.text().await.unwrap_or_default();
                    break Err(PluginError::Status {
                        status,
                        body: text.chars().take(2000).collect(),
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

    async fn json<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, PluginError> {
        let bytes = resp.bytes().await.map_err(classify)?;
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
        Self::json(resp).await
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
        Self::json(resp).await
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
        let bytes = resp.bytes().await.map_err(classify)?;
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
        let a: Answer = Self::json(resp).await?;
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
