//! Harness of the integration tests on the real remote test cluster.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{Api, api::ListParams};
use offload_plugin::{PluginConfig, RunningPlugin, start};
use offload_wire::PodStatus;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use testbed::{TestNamespace, Testbed};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

pub struct Env {
    pub tb: &'static Testbed,
    pub remote: kube::Client,
    pub http: reqwest::Client,
}

pub async fn env() -> anyhow::Result<Env> {
    let tb = testbed::testbed().await?;
    testbed::install_crypto_provider();
    let remote = tb.remote.client().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    Ok(Env { tb, remote, http })
}

pub struct Plugin {
    pub running: RunningPlugin,
    pub base: String,
}

impl Plugin {
    pub async fn start(env: &Env, config: PluginConfig) -> anyhow::Result<Self> {
        let running = start(config, env.remote.clone()).await?;
        if !running.wait_ready(Duration::from_secs(60)).await {
            bail!("plugin pod cache did not sync within 60 s");
        }
        let base = format!("http://{}", running.addr());
        Ok(Self { running, base })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// A unique local namespace name and the guard that deletes the remote
/// namespace the plugin creates for it.
pub struct Scope {
    pub local_ns: String,
    pub remote_ns: String,
    _guard: TestNamespace,
}

pub fn scope(env: &Env, prefix: &str) -> anyhow::Result<Scope> {
    scope_mapped(env, prefix, "offloading")
}

/// A scope whose remote namespace is `<namespace_prefix>-<local>` (the
/// plugin's `namespace_prefix` must be the same).
pub fn scope_mapped(env: &Env, prefix: &str, namespace_prefix: &str) -> anyhow::Result<Scope> {
    let local_ns = testbed::namespace_name(prefix)?;
    let remote_ns = format!("{namespace_prefix}-{local_ns}");
    Ok(Scope {
        _guard: TestNamespace {
            name: remote_ns.clone(),
            cluster: env.tb.remote.clone(),
        },
        local_ns,
        remote_ns,
    })
}

/// What most tests start from: the environment, a scope, a plugin with the
/// test configuration, a fresh pod UID, the create fixture `fixture_name`
/// filled in for it, and that body's `pod` (what `/status` and `/delete` take).
pub async fn case(
    scope_prefix: &str,
    fixture_name: &str,
) -> anyhow::Result<(Env, Scope, Plugin, String, String, Value)> {
    let env = env().await?;
    let scope = scope(&env, scope_prefix)?;
    let plugin = Plugin::start(&env, PluginConfig::for_tests()).await?;
    let uid = uid();
    let body = fixture(fixture_name, &scope.local_ns, &uid)?;
    let pod = pod_of(&body)?;
    Ok((env, scope, plugin, uid, body, pod))
}

pub fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fixture with its placeholders filled in.
pub fn fixture(name: &str, ns: &str, uid: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .with_context(|| format!("reading fixture {name}"))?;
    Ok(text
        .replace("__NS__", ns)
        .replace("__UID__", uid)
        .replace("__IMAGE__", testbed::images::BUSYBOX))
}

/// The `pod` of a create fixture (what interLink sends to /status and /delete).
pub fn pod_of(create_body: &str) -> anyhow::Result<Value> {
    let v: Value = serde_json::from_str(create_body)?;
    let one = if v.is_array() { v[0].clone() } else { v };
    Ok(one["pod"].clone())
}

pub async fn send(
    env: &Env,
    method: Method,
    url: String,
    body: String,
) -> anyhow::Result<(StatusCode, String)> {
    let resp = env
        .http
        .request(method, url)
        .header("Content-Type", "application/json")
        .header("InterLink-Http-Session", "Request-test")
        .body(body)
        .send()
        .await?;
    let st = resp.status();
    Ok((st, resp.text().await?))
}

pub async fn create(env: &Env, p: &Plugin, body: &str) -> anyhow::Result<Value> {
    let (st, text) = send(env, Method::POST, p.url("/create"), body.to_string()).await?;
    if st != StatusCode::OK {
        bail!("create answered {st}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

pub async fn status(env: &Env, p: &Plugin, pod: &Value) -> anyhow::Result<PodStatus> {
    let body = serde_json::to_string(&vec![pod])?;
    let (st, text) = send(env, Method::GET, p.url("/status"), body).await?;
    if st != StatusCode::OK {
        bail!("status answered {st}: {text}");
    }
    let mut v: Vec<PodStatus> = serde_json::from_str(&text)?;
    if v.len() != 1 {
        bail!("status answered {} entries: {text}", v.len());
    }
    Ok(v.remove(0))
}

pub fn log_body(ns: &str, uid: &str, pod: &str, container: &str, opts: Value) -> String {
    let mut o = serde_json::json!({"Tail":0,"Bytes":0,"Timestamps":false,"Follow":false,"Previous":false,"SinceSeconds":0,"SinceTime":"0001-01-01T00:00:00Z"});
    if let (Some(o), Some(extra)) = (o.as_object_mut(), opts.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({"Namespace": ns, "PodUID": uid, "PodName": pod, "ContainerName": container, "Opts": o}).to_string()
}

pub async fn logs(env: &Env, p: &Plugin, body: String) -> anyhow::Result<(StatusCode, String)> {
    send(env, Method::GET, p.url("/getLogs"), body).await
}

/// `/getLogs` of one pod, through one plugin.
pub struct PodLogs<'a> {
    pub env: &'a Env,
    pub plugin: &'a Plugin,
    pub ns: &'a str,
    pub uid: &'a str,
    pub pod: &'a str,
}

impl PodLogs<'_> {
    /// The logs of `container` with interLink's default options plus `opts`.
    pub async fn of(&self, container: &str, opts: Value) -> anyhow::Result<(StatusCode, String)> {
        let body = log_body(self.ns, self.uid, self.pod, container, opts);
        logs(self.env, self.plugin, body).await
    }
}

/// State of a container status: ("running"|"waiting"|"terminated", reason, exit code).
pub fn state_of(
    s: &k8s_openapi::api::core::v1::ContainerStatus,
) -> (&'static str, Option<String>, Option<i32>) {
    match s.state.as_ref() {
        Some(st) if st.running.is_some() => ("running", None, None),
        Some(st) if st.terminated.is_some() => {
            let t = st.terminated.as_ref().expect("checked");
            ("terminated", t.reason.clone(), Some(t.exit_code))
        }
        Some(st) if st.waiting.is_some() => (
            "waiting",
            st.waiting.as_ref().and_then(|w| w.reason.clone()),
            None,
        ),
        _ => ("none", None, None),
    }
}

/// Waits until `check` accepts the status, returning it.
pub async fn wait_status(
    env: &Env,
    p: &Plugin,
    pod: &Value,
    what: &str,
    timeout: Duration,
    check: impl Fn(&PodStatus) -> bool,
) -> anyhow::Result<PodStatus> {
    testbed::wait_for(what, timeout, || async {
        let s = status(env, p, pod).await?;
        Ok(check(&s).then_some(s))
    })
    .await
}

/// Remote objects carrying the source UID label.
pub async fn remote_objects(
    env: &Env,
    uid: &str,
) -> anyhow::Result<(Vec<Pod>, Vec<ConfigMap>, Vec<Secret>)> {
    let lp = ListParams::default().labels(&format!("interlink.io/source.pod_uid={uid}"));
    let pods: Vec<Pod> = Api::<Pod>::all(env.remote.clone()).list(&lp).await?.items;
    let cms = Api::<ConfigMap>::all(env.remote.clone())
        .list(&lp)
        .await?
        .items;
    let secrets = Api::<Secret>::all(env.remote.clone())
        .list(&lp)
        .await?
        .items;
    Ok((pods, cms, secrets))
}

/// `/delete` of `pod` answers 200, then every remote object of `uid` goes.
pub async fn delete_and_wait(env: &Env, p: &Plugin, pod: &Value, uid: &str) -> anyhow::Result<()> {
    let (code, text) = send(env, Method::POST, p.url("/delete"), pod.to_string()).await?;
    if code != StatusCode::OK {
        bail!("delete answered {code}: {text}");
    }
    wait_gone(env, uid).await
}

/// Waits until no remote object of `uid` is left (the GC removes owned ones).
pub async fn wait_gone(env: &Env, uid: &str) -> anyhow::Result<()> {
    testbed::wait_for(
        &format!("remote objects of {uid} to be gone"),
        // A 1.20 kubelet can take a minute to remove a pod in crash back-off.
        Duration::from_secs(180),
        || async {
            let (p, c, s) = remote_objects(env, uid).await?;
            Ok((p.is_empty() && c.is_empty() && s.is_empty()).then_some(()))
        },
    )
    .await
}
