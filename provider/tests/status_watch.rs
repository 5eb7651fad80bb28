//! Status following on the two real clusters with the real plugin, through
//! its status-change stream (`offload_wire::watch`) and, with the plugin's
//! stream switched off (`--status-watch=false`), through `/status` polling
//! as interLink does: the same assertions pass in both modes.
//!
//! - a remote exit shows locally within about a second, with its exit code
//!   (with the stream the poll interval is a minute, so only the stream can
//!   make it);
//! - a pod that finished while the plugin, then the provider, was down ends
//!   Succeeded/Failed locally with the right exit code (resume or replay);
//! - a remote pod deleted behind our back fails the local pod;
//! - the plugin's orphan sweep removes a remote pod whose local pod went
//!   while the provider was down, and never one the provider follows (with
//!   the stream, through `/status/follow`: the provider calls `/status` only
//!   for its half-hourly resync).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use offload_wire::keys::LABEL_SOURCE_POD_UID;

const RUN: Duration = Duration::from_secs(300);

/// When a watch on `api` (filtered by `cfg`) first sees a pod with `pred`.
fn first_seen(
    api: Api<Pod>,
    cfg: watcher::Config,
    pred: impl Fn(&Pod) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
        while let Some(ev) = s.next().await {
            if let Ok(p) = ev
                && pred(&p)
            {
                return Instant::now();
            }
        }
        panic!("watch ended")
    })
}

fn container_terminated(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.terminated.is_some())
}

fn is_final(p: &Pod) -> bool {
    matches!(phase(p).as_str(), "Succeeded" | "Failed")
}

/// `kubectl exec` in the remote pod of the local pod `uid`.
async fn remote_exec(env: &Env, uid: &str, cmd: &[&str]) {
    let rp = remote_pods(&env.remote, uid).await;
    let rp = rp.first().expect("the remote pod");
    let mut k = tokio::process::Command::from(env.tb.remote.kubectl());
    k.args(["-n", rp.metadata.namespace.as_deref().unwrap_or_default()])
        .args([
            "exec",
            rp.metadata.name.as_deref().unwrap_or_default(),
            "--",
        ])
        .args(cmd)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), k.output())
        .await
        .expect("kubectl exec in time")
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "remote exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the remote pod of `uid` has a terminated container.
async fn remote_finished(env: &Env, uid: &str) {
    wait_for("remote container terminated", RUN, async || {
        let p = remote_pods(&env.remote, uid).await;
        p.first().is_some_and(container_terminated).then_some(())
    })
    .await;
}

/// A container that waits for the file `flag` (touched by [`remote_exec`]),
/// then exits `code`: it finishes exactly when the test says.
fn on_signal(flag: &str, code: i32) -> k8s_openapi::api::core::v1::Container {
    container(
        "main",
        &format!("until [ -f {flag} ]; do sleep 0.2; done; exit {code}"),
    )
}

fn source_metric(watch: bool) -> &'static str {
    if watch {
        "offload_provider_status_source{source=\"watch\"} 1"
    } else {
        "offload_provider_status_source{source=\"poll\"} 1"
    }
}

async fn remote_exit_shows_within_a_second(watch: bool) {
    let env = env().await;
    let plugin = Plugin::start_with_status_watch(&env.remote, watch).await;
    let node = node_name(if watch { "vn-sw-lag" } else { "vn-sp-lag" });
    let mut config = provider_config(&env, &node, &plugin);
    // With the stream, polling could never make it in time.
    config.status_interval = if watch {
        Duration::from_secs(60)
    } else {
        Duration::from_millis(500)
    };
    let prov = start_provider(&env, config).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-sw-lag", &[&node]).await;
    let created = pods
        .create(
            &PostParams::default(),
            &pod("exit3", &node, "Never", None, on_signal("/tmp/go", 3)),
        )
        .await
        .expect("create");
    let pod_uid = uid(&created);
    let remote_api = Api::namespaced(env.remote.clone(), &remote_namespace(&ns));
    let by_uid = watcher::Config::default().labels(&format!("{LABEL_SOURCE_POD_UID}={pod_uid}"));
    wait_phase(&pods, "exit3", "Running", RUN).await;
    let remote_done = first_seen(remote_api, by_uid, container_terminated);
    let local_done = first_seen(
        pods.clone(),
        watcher::Config::default().fields("metadata.name=exit3"),
        is_final,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    remote_exec(&env, &pod_uid, &["touch", "/tmp/go"]).await;
    let remote_at = remote_done.await.expect("remote watch");
    let local_at = tokio::time::timeout(Duration::from_secs(30), local_done)
        .await
        .expect("local pod final")
        .expect("local watch");
    let lag = local_at.saturating_duration_since(remote_at);
    let p = pods.get("exit3").await.expect("pod");
    assert_eq!(phase(&p), "Failed");
    assert_eq!(first_terminated(&p).exit_code, 3);
    eprintln!("remote exit -> local Failed: {lag:?}");
    assert!(
        lag < Duration::from_millis(1500),
        "the exit showed locally {lag:?} after it happened remotely"
    );
    assert!(prov.metrics.encode().contains(source_metric(watch)));
    prov.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_exit_shows_within_a_second_through_the_stream() {
    remote_exit_shows_within_a_second(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_exit_shows_within_a_second_polled() {
    remote_exit_shows_within_a_second(false).await;
}

async fn restarts_lose_no_transition(watch: bool) {
    let env = env().await;
    let mut plugin = Plugin::start_with_status_watch(&env.remote, watch).await;
    let node = node_name(if watch { "vn-sw-rs" } else { "vn-sp-rs" });
    let (_ns, _cleanup, pods) = test_namespace(&env, "prov-sw-rs", &[&node]).await;
    let provider = ProviderProcess::spawn(&env, &node, &plugin, 4);
    for (name, code) in [("a", 4), ("b", 0)] {
        let p = pod(name, &node, "Never", None, on_signal("/tmp/go", code));
        pods.create(&PostParams::default(), &p)
            .await
            .expect("create");
    }
    let a = uid(&wait_phase(&pods, "a", "Running", RUN).await);
    let b = uid(&wait_phase(&pods, "b", "Running", RUN).await);

    // a finishes while the plugin is down.
    plugin.stop().await;
    remote_exec(&env, &a, &["touch", "/tmp/go"]).await;
    remote_finished(&env, &a).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase(&pods.get("a").await.expect("a")), "Running");
    plugin.restart().await;
    let done = wait_phase(&pods, "a", "Failed", Duration::from_secs(60)).await;
    assert_eq!(first_terminated(&done).exit_code, 4);

    // b finishes while the provider is down.
    provider.kill();
    remote_exec(&env, &b, &["touch", "/tmp/go"]).await;
    remote_finished(&env, &b).await;
    assert_eq!(phase(&pods.get("b").await.expect("b")), "Running");
    let _provider = ProviderProcess::spawn(&env, &node, &plugin, 4);
    let done = wait_phase(&pods, "b", "Succeeded", Duration::from_secs(60)).await;
    assert_eq!(first_terminated(&done).exit_code, 0);
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_of_plugin_then_provider_lose_no_transition_through_the_stream() {
    restarts_lose_no_transition(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_of_plugin_then_provider_lose_no_transition_polled() {
    restarts_lose_no_transition(false).await;
}

async fn remote_delete_fails_the_pod(watch: bool) {
    let env = env().await;
    let plugin = Plugin::start_with_status_watch(&env.remote, watch).await;
    let node = node_name(if watch { "vn-sw-gone" } else { "vn-sp-gone" });
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (_ns, _cleanup, pods) = test_namespace(&env, "prov-sw-gone", &[&node]).await;
    let p = pod("victim", &node, "Never", None, on_signal("/tmp/never", 0));
    pods.create(&PostParams::default(), &p)
        .await
        .expect("create");
    let victim = uid(&wait_phase(&pods, "victim", "Running", RUN).await);
    let rp = remote_pods(&env.remote, &victim).await;
    let rp = rp.first().expect("remote pod");
    let remote: Api<Pod> = Api::namespaced(
        env.remote.clone(),
        rp.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let force = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    remote
        .delete(rp.metadata.name.as_deref().unwrap_or_default(), &force)
        .await
        .expect("remote delete");
    let done = wait_phase(&pods, "victim", "Failed", Duration::from_secs(60)).await;
    let t = first_terminated(&done);
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (137, Some("RemotePodDeleted"))
    );
    prov.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_pod_deleted_behind_our_back_fails_the_pod_through_the_stream() {
    remote_delete_fails_the_pod(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_pod_deleted_behind_our_back_fails_the_pod_polled() {
    remote_delete_fails_the_pod(false).await;
}

/// The sweep's grace in [`orphans_are_swept`]: a pod older than this that
/// its live caller did not name for this long is an orphan.
const ORPHAN_AFTER: Duration = Duration::from_secs(8);

fn sweeping(c: &mut offload_plugin::PluginConfig) {
    c.no_sweep = false;
    c.sweep_interval = Duration::from_secs(1);
    c.orphan_after = ORPHAN_AFTER;
}

async fn orphans_are_swept(watch: bool) {
    let env = env().await;
    let plugin = Plugin::start_with(&env.remote, watch, sweeping).await;
    let node = node_name(if watch { "vn-sw-orph" } else { "vn-sp-orph" });
    let mut config = provider_config(&env, &node, &plugin);
    // With the stream only the follow call can name the pods in time.
    config.status_resync = Duration::from_secs(600);
    config.status_follow_interval = Duration::from_secs(1);
    let prov = start_provider(&env, config.clone()).await;
    let (_ns, _cleanup, pods) = test_namespace(&env, "prov-sw-orph", &[&node]).await;
    for name in ["kept", "orphan"] {
        let p = pod(name, &node, "Never", None, container("main", "sleep 3600"));
        pods.create(&PostParams::default(), &p)
            .await
            .expect("create");
    }
    let kept = uid(&wait_phase(&pods, "kept", "Running", RUN).await);
    let orphan = uid(&wait_phase(&pods, "orphan", "Running", RUN).await);

    // The local pod goes while no provider sees it: nobody tells the plugin.
    prov.shutdown().await;
    let force = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("orphan", &force).await.expect("force delete");
    wait_gone(&pods, "orphan", Duration::from_secs(30)).await;
    let prov = start_provider(&env, config).await;

    wait_for(
        "the orphan swept remotely",
        Duration::from_secs(120),
        async || {
            let left = remote_pods(&env.remote, &orphan).await;
            left.iter()
                .all(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await;
    // Well past the grace: the pod the provider follows is still there.
    tokio::time::sleep(ORPHAN_AFTER + Duration::from_secs(5)).await;
    let still = remote_pods(&env.remote, &kept).await;
    assert!(
        still.len() == 1 && still[0].metadata.deletion_timestamp.is_none(),
        "the followed pod's remote pod was swept: {} left",
        still.len()
    );
    assert_eq!(phase(&pods.get("kept").await.expect("kept")), "Running");
    prov.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_swept_and_followed_pods_kept_through_the_stream() {
    orphans_are_swept(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_swept_and_followed_pods_kept_polled() {
    orphans_are_swept(false).await;
}
