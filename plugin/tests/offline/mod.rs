//! What the tests without a cluster share: a plugin whose kube client points
//! at a closed port (every request they test is answered before any remote
//! call), and a reqwest client with its JSON call helper.

use std::time::Duration;

use offload_plugin::{PluginConfig, RunningPlugin, start};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn dead_client() -> kube::Client {
    let cfg = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
    kube::Client::try_from(cfg).expect("client")
}

pub fn offline_config() -> PluginConfig {
    let mut c = PluginConfig::for_tests();
    c.remote_minor_version = Some(20);
    c
}

pub async fn plugin(config: PluginConfig) -> RunningPlugin {
    install_provider();
    start(config, dead_client()).await.expect("plugin starts")
}

pub fn http() -> reqwest::Client {
    install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

pub async fn call(
    client: &reqwest::Client,
    method: Method,
    url: String,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let resp = client
        .request(method, url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// The status of a plain `GET url` (the probes).
pub async fn get_status(client: &reqwest::Client, url: String) -> StatusCode {
    client.get(url).send().await.expect("GET").status()
}
