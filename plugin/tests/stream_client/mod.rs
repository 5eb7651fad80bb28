//! The WebSocket client of the streaming tests (`streaming.rs`): the
//! plugin under test with token auth, the pod every check uses, and the
//! contract's framing read back.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use offload_plugin::PluginConfig;
use offload_wire::stream::{
    EXEC_PATH, EXEC_PROTOCOL, ExecQuery, PORT_FORWARD_PATH, StreamTarget, channel,
};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest},
};

use crate::common::*;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const TOKEN: &str = "stream-test-token";
pub const NODE: &str = "stream-node";
pub const RUN: Duration = Duration::from_secs(120);

/// The plugin under test (token auth) and the pod all checks use.
pub struct Bed {
    pub env: Env,
    pub plugin: Plugin,
    pub target: StreamTarget,
    pub remote_ns: String,
    _scope: Scope,
    _dir: tempfile::TempDir,
}

impl Bed {
    pub fn addr(&self) -> String {
        self.plugin.base.trim_start_matches("http://").to_string()
    }

    pub fn exec_query(&self, container: &str, command: &[&str], stdin: bool, tty: bool) -> String {
        ExecQuery {
            target: self.target.clone(),
            container: container.into(),
            command: command.iter().map(|c| c.to_string()).collect(),
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
        }
        .to_query()
    }

    /// Opens `path?query`; `Err` carries the HTTP status of a refused upgrade.
    pub async fn open(
        &self,
        path: &str,
        query: &str,
        token: Option<&str>,
    ) -> Result<Ws, StatusCode> {
        let url = format!("ws://{}{path}?{query}", self.addr());
        let mut req = url.into_client_request().expect("request");
        if path != PORT_FORWARD_PATH {
            let proto = EXEC_PROTOCOL.parse().expect("header");
            req.headers_mut().insert("Sec-WebSocket-Protocol", proto);
        }
        if let Some(t) = token {
            let auth = format!("Bearer {t}").parse().expect("header");
            req.headers_mut().insert("Authorization", auth);
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => {
                Err(StatusCode::from_u16(resp.status().as_u16()).expect("status"))
            }
            Err(e) => panic!("WebSocket connect to {path}: {e}"),
        }
    }

    pub async fn exec_ws(
        &self,
        container: &str,
        cmd: &[&str],
        stdin: bool,
        tty: bool,
    ) -> anyhow::Result<Ws> {
        let q = self.exec_query(container, cmd, stdin, tty);
        self.open(EXEC_PATH, &q, Some(TOKEN))
            .await
            .map_err(|s| anyhow::anyhow!("exec answered {s}"))
    }

    /// Runs `cmd` in `web` without stdin and collects everything.
    pub async fn exec(&self, cmd: &[&str]) -> anyhow::Result<Output> {
        let mut ws = self.exec_ws("web", cmd, false, false).await?;
        collect(&mut ws).await
    }

    pub async fn metric(&self, line_start: &str) -> anyhow::Result<f64> {
        let text = self
            .env
            .http
            .get(self.plugin.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
            .unwrap_or(0.0))
    }
}

/// What an exec or attach stream delivered until its close.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Option<Value>,
}

impl Output {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Reads until the plugin closes (at most a minute).
pub async fn collect(ws: &mut Ws) -> anyhow::Result<Output> {
    let mut out = Output::default();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(msg) = ws.next().await {
            let Message::Binary(b) = msg? else { continue };
            match b.first() {
                Some(&channel::STDOUT) => out.stdout.extend_from_slice(&b[1..]),
                Some(&channel::STDERR) => out.stderr.extend_from_slice(&b[1..]),
                Some(&channel::ERROR) => {
                    ensure!(out.status.is_none(), "a second status: {b:?}");
                    out.status = Some(serde_json::from_slice(&b[1..])?);
                }
                other => bail!("unexpected channel {other:?}"),
            }
        }
        anyhow::Ok(())
    })
    .await
    .context("stream did not end within 60 s")??;
    Ok(out)
}

/// Reads stdout until it contains `needle`.
pub async fn read_until(ws: &mut Ws, needle: &str) -> anyhow::Result<String> {
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.contains(needle) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&channel::STDOUT) => {
                    seen.push_str(&String::from_utf8_lossy(&b[1..]))
                }
                Some(Ok(_)) => {}
                other => bail!("stream ended before {needle:?} ({other:?}); saw {seen:?}"),
            }
        }
        Ok(())
    })
    .await
    .with_context(|| format!("no {needle:?} within 30 s; saw {seen:?}"))??;
    Ok(seen)
}

pub fn stdin(data: &str) -> Message {
    let mut v = vec![channel::STDIN];
    v.extend_from_slice(data.as_bytes());
    Message::binary(v)
}

pub fn status_is_success(o: &Output) -> bool {
    o.status.as_ref().is_some_and(|s| s["status"] == "Success")
}

pub async fn setup() -> anyhow::Result<Bed> {
    let env = env().await?;
    let scope = scope(&env, "plugin-stream")?;
    let (cfg, dir) = token_config()?;
    let plugin = Plugin::start(&env, cfg).await?;
    let uid = uid();
    let body = fixture("create_stream.json", &scope.local_ns, &uid)?;
    let resp = env
        .http
        .post(plugin.url("/create"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "create: {}",
        resp.text().await?
    );
    let target = StreamTarget {
        namespace: scope.local_ns.clone(),
        name: "stream".into(),
        uid,
        node: NODE.into(),
    };
    let bed = Bed {
        env,
        plugin,
        target,
        remote_ns: scope.remote_ns.clone(),
        _scope: scope,
        _dir: dir,
    };
    // Running, and httpd serving the big file.
    testbed::wait_for("the pod's web container to serve", RUN, || async {
        let o = bed
            .exec(&["sh", "-c", "test -f /www/big && echo ready"])
            .await;
        Ok(o.ok().filter(|o| o.out().contains("ready")).map(|_| ()))
    })
    .await?;
    Ok(bed)
}

/// A test configuration that requires [`TOKEN`] (kept in the directory).
pub fn token_config() -> anyhow::Result<(PluginConfig, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, TOKEN)?;
    let mut cfg = PluginConfig::for_tests();
    cfg.insecure_no_auth = false;
    cfg.token_file = Some(token_path);
    Ok((cfg, dir))
}
