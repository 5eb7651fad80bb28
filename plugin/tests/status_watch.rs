//! `GET /status/watch` and `GET /capabilities` on the real remote test
//! cluster (issue 13): status changes reach the stream within a second of
//! the remote change, Gone on a remote delete, resume tokens replay only
//! what came later, a restarted plugin answers an old token with a full
//! replay (with the final state of a pod that finished while it was down),
//! a caller never sees another caller's pods, and the switch turns it off.
//!
//! Each test uses its own namespace, virtual node names and plugin instance,
//! and cleans up after itself.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::DeleteParams,
    runtime::{WatchStreamExt, watcher},
};
use offload_plugin::PluginConfig;
use offload_wire::{
    PodStatus,
    watch::{Capabilities, STATUS_WATCH, WatchEvent},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TOKEN: &str = "watch-test-token";
const WAIT: Duration = Duration::from_secs(120);

/// A plugin configuration that requires [`TOKEN`] (its file kept in `dir`).
fn config(dir: &tempfile::TempDir, instance: &str) -> anyhow::Result<PluginConfig> {
    let path = dir.path().join("token");
    std::fs::write(&path, TOKEN)?;
    let mut c = PluginConfig::for_tests();
    c.insecure_no_auth = false;
    c.token_file = Some(path);
    c.instance = instance.into();
    Ok(c)
}

/// A request with the bearer token.
async fn call(
    env: &Env,
    method: Method,
    url: String,
    body: String,
) -> anyhow::Result<(StatusCode, String)> {
    let resp = env
        .http
        .request(method, url)
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    let code = resp.status();
    Ok((code, resp.text().await?))
}

/// A pod of local node `node` running `script`: (uid, create body, pod).
fn pod(ns: &str, name: &str, node: &str, script: &str) -> anyhow::Result<(String, String, Value)> {
    let uid = uid();
    let mut body: Value = serde_json::from_str(&fixture("create_hello.json", ns, &uid)?)?;
    body["pod"]["metadata"]["name"] = json!(name);
    body["pod"]["spec"]["nodeName"] = json!(node);
    body["pod"]["spec"]["containers"][0]["command"] = json!(["sh", "-c", script]);
    let pod = body["pod"].clone();
    Ok((uid, body.to_string(), pod))
}

async fn create_pod(env: &Env, p: &Plugin, body: &str) -> anyhow::Result<()> {
    let (code, text) = call(env, Method::POST, p.url("/create"), body.to_string()).await?;
    anyhow::ensure!(code == StatusCode::OK, "create answered {code}: {text}");
    Ok(())
}

async fn delete_pod(env: &Env, p: &Plugin, pod: &Value) -> anyhow::Result<()> {
    let (code, text) = call(env, Method::POST, p.url("/delete"), pod.to_string()).await?;
    anyhow::ensure!(code == StatusCode::OK, "delete answered {code}: {text}");
    Ok(())
}

/// An open watch stream: its events as they arrive, with their arrival time.
struct Watch {
    rx: mpsc::UnboundedReceiver<anyhow::Result<(Instant, WatchEvent)>>,
    task: tokio::task::JoinHandle<()>,
    last_token: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer of `GET /status/watch` (status code and body when not 200).
async fn open_raw(
    p: &Plugin,
    token: Option<&str>,
    node: &str,
    resume: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    // No client timeout: a stream lives as long as it is read.
    let client = reqwest::Client::new();
    let mut query = vec![("node", node)];
    if let Some(r) = resume {
        query.push(("resume", r));
    }
    let url = reqwest::Url::parse_with_params(&p.url("/status/watch"), &query)?;
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    Ok(req.send().await?)
}

async fn open(p: &Plugin, node: &str, resume: Option<&str>) -> anyhow::Result<Watch> {
    let resp = open_raw(p, Some(TOKEN), node, resume).await?;
    let code = resp.status();
    if code != StatusCode::OK {
        bail!("watch answered {code}: {}", resp.text().await?);
    }
    let ctype = resp.headers().get("content-type").cloned();
    anyhow::ensure!(
        ctype.as_ref().and_then(|v| v.to_str().ok()) == Some("application/x-ndjson"),
        "content type {ctype:?}"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let parsed = serde_json::from_slice::<WatchEvent>(&line)
                    .with_context(|| format!("line {:?}", String::from_utf8_lossy(&line)));
                let _ = tx.send(parsed.map(|e| (Instant::now(), e)));
            }
        }
    });
    Ok(Watch {
        rx,
        task,
        last_token: String::new(),
    })
}

impl Watch {
    async fn next(&mut self, timeout: Duration) -> anyhow::Result<(Instant, WatchEvent)> {
        let got = tokio::time::timeout(timeout, self.rx.recv())
            .await
            .context("no watch event in time")?
            .context("watch stream ended")??;
        self.last_token = got.1.resume().to_owned();
        Ok(got)
    }

    /// Events until one `pred` accepts: (those before it, its arrival, it).
    async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&WatchEvent) -> bool,
    ) -> anyhow::Result<(Vec<WatchEvent>, Instant, WatchEvent)> {
        let deadline = Instant::now() + WAIT;
        let mut before = vec![];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, e) = self
                .next(left)
                .await
                .with_context(|| format!("waiting for {what}; seen {before:?}"))?;
            if pred(&e) {
                return Ok((before, at, e));
            }
            before.push(e);
        }
    }
}

fn status_of(e: &WatchEvent) -> Option<&PodStatus> {
    match e {
        WatchEvent::Status { status, .. } => Some(status),
        _ => None,
    }
}

/// The local UIDs of the Status and Gone events.
fn uids(events: &[WatchEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Status { status, .. } => Some(status.uid.clone()),
            WatchEvent::Gone { uid, .. } => Some(uid.clone()),
            _ => None,
        })
        .collect()
}

/// Whether `e` is a status of `uid` whose first container terminated with `code`.
fn terminated(e: &WatchEvent, uid: &str, code: i32) -> bool {
    status_of(e).is_some_and(|s| {
        s.uid == uid
            && s.containers
                .first()
                .is_some_and(|c| state_of(c) == ("terminated", Some("Error".into()), Some(code)))
    })
}

/// When the test's own watch of the remote cluster first sees the pod of
/// `uid` terminated (the reference the stream's lag is measured against).
fn remote_terminated_at(env: &Env, uid: &str) -> tokio::task::JoinHandle<Option<Instant>> {
    let api: Api<Pod> = Api::all(env.remote.clone());
    let cfg = watcher::Config::default().labels(&format!("interlink.io/source.pod_uid={uid}"));
    tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
        while let Some(Ok(p)) = s.next().await {
            let done = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .and_then(|c| c.state.as_ref())
                .is_some_and(|st| st.terminated.is_some());
            if done {
                return Some(Instant::now());
            }
        }
        None
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_stream_resume_and_survive_a_plugin_restart() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope(&env, "plugin-watch")?;
    let dir = tempfile::tempdir()?;
    let instance = format!("watch-{}", &uid()[..8]);
    let (node_a, node_b) = (format!("{instance}-a"), format!("{instance}-b"));
    let ns = scope.local_ns.clone();
    let p = Plugin::start(&env, config(&dir, &instance)?).await?;

    // A first connection is a full replay: nothing yet, Synced.
    let mut a = open(&p, &node_a, None).await?;
    let (_, first) = a.next(Duration::from_secs(10)).await?;
    assert!(matches!(first, WatchEvent::Synced { .. }), "{first:?}");
    let mut b = open(&p, &node_b, None).await?;
    b.until("b synced", |e| matches!(e, WatchEvent::Synced { .. }))
        .await?;

    // A pod that exits 3 after a few seconds: Status lines, the last one
    // terminated with its exit code, within a second of the remote change.
    let (uid1, body1, pod1) = pod(&ns, "exits", &node_a, "sleep 4; exit 3")?;
    let (uid_b, body_b, pod_b) = pod(&ns, "other-caller", &node_b, "sleep 3600")?;
    let reference = remote_terminated_at(&env, &uid1);
    create_pod(&env, &p, &body1).await?;
    create_pod(&env, &p, &body_b).await?;
    let (before, at, done) = a
        .until("pod 1 terminated with 3", |e| terminated(e, &uid1, 3))
        .await?;
    let s = status_of(&done).context("status")?;
    assert_eq!(
        (s.name.as_str(), s.namespace.as_str()),
        ("exits", ns.as_str())
    );
    assert!(!s.jid.is_empty(), "the remote pod's UID");
    assert!(uids(&before).iter().all(|u| *u == uid1), "{before:?}");
    let remote_at = tokio::time::timeout(Duration::from_secs(30), reference)
        .await??
        .context("remote watch ended")?;
    let lag = at.saturating_duration_since(remote_at);
    println!("status lag behind the remote change: {lag:?}");
    assert!(lag < Duration::from_secs(1), "lag {lag:?}");
    let token1 = a.last_token.clone();

    // The other caller sees its pod and never the first caller's.
    let (seen_b, _, _) = b
        .until("pod b", |e| status_of(e).is_some_and(|s| s.uid == uid_b))
        .await?;
    assert!(!uids(&seen_b).contains(&uid1), "{seen_b:?}");

    // A later change, then a resume after token1: only the later one.
    let (uid2, body2, pod2) = pod(&ns, "later", &node_a, "sleep 3600")?;
    create_pod(&env, &p, &body2).await?;
    a.until("pod 2", |e| status_of(e).is_some_and(|s| s.uid == uid2))
        .await?;
    drop(a);
    let mut resumed = open(&p, &node_a, Some(&token1)).await?;
    let (replayed, _, _) = resumed
        .until("the resume's bookmark", |e| {
            matches!(e, WatchEvent::Bookmark { .. })
        })
        .await?;
    assert!(!replayed.is_empty(), "pod 2's changes are replayed");
    assert!(uids(&replayed).iter().all(|u| *u == uid2), "{replayed:?}");

    // A remote delete (not through the plugin): Gone.
    let remote_pods: Api<Pod> = Api::namespaced(env.remote.clone(), &scope.remote_ns);
    remote_pods
        .delete(
            &format!("later-{uid2}"),
            &DeleteParams::default().grace_period(0),
        )
        .await?;
    let (_, _, gone) = resumed
        .until(
            "pod 2 gone",
            |e| matches!(e, WatchEvent::Gone { uid, .. } if *uid == uid2),
        )
        .await?;
    assert!(matches!(gone, WatchEvent::Gone { ref name, .. } if name == "later"));

    // A pod that finishes while the plugin is down: the restarted plugin
    // answers the old token with a full replay holding its final state.
    let (uid3, body3, pod3) = pod(&ns, "while-down", &node_a, "sleep 6; exit 7")?;
    create_pod(&env, &p, &body3).await?;
    resumed
        .until("pod 3", |e| status_of(e).is_some_and(|s| s.uid == uid3))
        .await?;
    let old_token = resumed.last_token.clone();
    drop(resumed);
    drop(b);
    p.stop().await;
    testbed::wait_for("pod 3 to finish remotely", WAIT, || async {
        let rp = remote_pods.get(&format!("while-down-{uid3}")).await?;
        let phase = rp.status.and_then(|s| s.phase).unwrap_or_default();
        Ok((phase == "Failed").then_some(()))
    })
    .await?;
    let p = Plugin::start(&env, config(&dir, &instance)?).await?;
    let mut again = open(&p, &node_a, Some(&old_token)).await?;
    let (replay, _, synced) = again
        .until("synced", |e| matches!(e, WatchEvent::Synced { .. }))
        .await?;
    assert!(replay.iter().any(|e| terminated(e, &uid3, 7)), "{replay:?}");
    assert!(replay.iter().any(|e| terminated(e, &uid1, 3)), "{replay:?}");
    let mut replayed = uids(&replay);
    replayed.sort();
    let mut want = vec![uid1.clone(), uid3.clone()];
    want.sort();
    assert_eq!(replayed, want, "only this caller's pods, each once");
    // The Synced token resumes (no second full replay).
    let synced_token = synced.resume().to_owned();
    drop(again);
    let mut after = open(&p, &node_a, Some(&synced_token)).await?;
    let (_, first) = after.next(Duration::from_secs(10)).await?;
    assert!(matches!(first, WatchEvent::Bookmark { .. }), "{first:?}");

    for pod in [&pod1, &pod2, &pod3, &pod_b] {
        delete_pod(&env, &p, pod).await?;
    }
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_auth_and_the_switch() -> anyhow::Result<()> {
    let env = env().await?;
    let dir = tempfile::tempdir()?;
    let instance = format!("watch-{}", &uid()[..8]);
    let node = format!("{instance}-a");
    let p = Plugin::start(&env, config(&dir, &instance)?).await?;
    let (code, text) = call(&env, Method::GET, p.url("/capabilities"), String::new()).await?;
    assert_eq!(code, StatusCode::OK, "{text}");
    let caps: Capabilities = serde_json::from_str(&text)?;
    assert!(caps.offers(STATUS_WATCH), "{text}");
    // Unauthenticated, or a wrong token: 401 and no stream.
    for token in [None, Some("wrong")] {
        let r = open_raw(&p, token, &node, None).await?;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let (code, _) = send(&env, Method::GET, p.url("/capabilities"), String::new()).await?;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // No node: 400.
    let r = open_raw(&p, Some(TOKEN), "", None).await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    p.stop().await;

    // Switched off: 404, and the capability is not offered.
    let mut off = config(&dir, &instance)?;
    off.status_watch = false;
    let p = Plugin::start(&env, off).await?;
    let r = open_raw(&p, Some(TOKEN), &node, None).await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (code, text) = call(&env, Method::GET, p.url("/capabilities"), String::new()).await?;
    assert_eq!(code, StatusCode::OK, "{text}");
    let caps: Capabilities = serde_json::from_str(&text)?;
    assert!(!caps.offers(STATUS_WATCH), "{text}");
    p.stop().await;
    Ok(())
}
