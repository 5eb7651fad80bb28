//! End to end on the two real clusters with the real plugin: the provider
//! (in-process) on the local cluster, `offload_plugin::start` against the
//! remote cluster.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use offload_provider::config::Config;
use offload_provider::provider::start;

fn container(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(testbed::images::BUSYBOX.into()),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

fn pod(name: &str, node: &str, init: Option<Container>, main: Container) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            restart_policy: Some("Never".into()),
            init_containers: init.map(|c| vec![c]),
            containers: vec![main],
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn local_pki(tb: &testbed::Testbed) -> PathBuf {
    tb.local
        .kubeconfig
        .parent()
        .map(|d| d.join("pki"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_remotely_with_status_logs_and_delete() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "offload_provider=info,offload_plugin=info".into()),
        )
        .try_init();
    let tb = testbed::testbed().await.expect("testbed");
    let local = tb.local.client().await.expect("local client");
    let remote = tb.remote.client().await.expect("remote client");
    let plugin = offload_plugin::start(offload_plugin::PluginConfig::for_tests(), remote.clone())
        .await
        .expect("plugin");
    assert!(
        plugin.wait_ready(Duration::from_secs(60)).await,
        "plugin cache synced"
    );

    let node = format!("vn-e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let mut cfg = Config::for_node(&node, &format!("http://{}", plugin.addr()));
    cfg.kubelet_addr = "0.0.0.0:0".parse().expect("addr");
    cfg.admin_addr = None;
    cfg.client_ca_file = Some(local_pki(tb).join("ca.crt"));
    cfg.status_interval = Duration::from_millis(500);
    let prov = start(cfg, local.clone(), tb.local.node_ip)
        .await
        .expect("provider");

    let ns = tb
        .local
        .fresh_namespace("prov-e2e")
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(local.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod(
            "ok",
            &node,
            Some(container("init", "echo init-done")),
            container("main", "echo hello-remote; sleep 10; echo bye"),
        ),
    )
    .await
    .expect("create ok");
    pods.create(
        &PostParams::default(),
        &pod("fail", &node, None, container("main", "echo oops; exit 3")),
    )
    .await
    .expect("create fail");

    let running = wait_for("ok Running", Duration::from_secs(300), async || {
        let p = pods.get("ok").await.ok()?;
        (phase(&p) == "Running").then_some(p)
    })
    .await;
    let st = running.status.clone().expect("status");
    let init = &st.init_container_statuses.expect("init statuses")[0];
    assert_eq!(
        init.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(0),
        "init ran first"
    );
    let main = &st.container_statuses.expect("statuses")[0];
    assert!(
        main.state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .is_some(),
        "remote running state with start time"
    );

    // Logs through the provider's kubelet API with a client certificate of the
    // local cluster CA (what the apiserver would present): provider -> plugin -> remote.
    let pki = local_pki(tb);
    let mut ident = std::fs::read(pki.join("admin.crt")).expect("cert");
    ident.extend(std::fs::read(pki.join("admin.key")).expect("key"));
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(&ident).expect("identity"))
        .build()
        .expect("http");
    let port = prov.kubelet_addr().port();
    let url = format!(
        "https://{}:{port}/containerLogs/{ns}/ok/main",
        tb.local.node_ip
    );
    let logs = wait_for("logs", Duration::from_secs(30), async || {
        let t = http.get(&url).send().await.ok()?.text().await.ok()?;
        t.contains("hello-remote").then_some(t)
    })
    .await;
    assert!(logs.contains("hello-remote"), "{logs}");
    let init_logs = http
        .get(format!(
            "https://{}:{port}/containerLogs/{ns}/ok/init",
            tb.local.node_ip
        ))
        .send()
        .await
        .expect("init logs")
        .text()
        .await
        .expect("text");
    assert!(init_logs.contains("init-done"), "{init_logs}");
    let anon = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("http");
    assert_eq!(anon.get(&url).send().await.expect("anon").status(), 401);

    let done = wait_for("ok Succeeded", Duration::from_secs(300), async || {
        let p = pods.get("ok").await.ok()?;
        (phase(&p) == "Succeeded").then_some(p)
    })
    .await;
    let t = done
        .status
        .and_then(|s| s.container_statuses)
        .expect("statuses")[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(t.exit_code, 0);
    let failed = wait_for("fail Failed", Duration::from_secs(300), async || {
        let p = pods.get("fail").await.ok()?;
        (phase(&p) == "Failed").then_some(p)
    })
    .await;
    let t = failed
        .status
        .and_then(|s| s.container_statuses)
        .expect("statuses")[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(t.exit_code, 3);

    // Delete: the remote pod (and what it owns) goes, then the local one.
    let uid = done.metadata.uid.clone().expect("uid");
    let remote_pods: Api<Pod> = Api::all(remote.clone());
    let sel = ListParams::default().labels(&format!(
        "{}={uid}",
        offload_wire::keys::LABEL_SOURCE_POD_UID
    ));
    assert_eq!(
        remote_pods
            .list(&sel)
            .await
            .expect("remote list")
            .items
            .len(),
        1,
        "exactly one remote pod"
    );
    pods.delete("ok", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("local pod gone", Duration::from_secs(60), async || {
        pods.get_opt("ok").await.ok()?.is_none().then_some(())
    })
    .await;
    wait_for("remote pod gone", Duration::from_secs(90), async || {
        remote_pods
            .list(&sel)
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;

    pods.delete("fail", &DeleteParams::default())
        .await
        .expect("delete fail");
    wait_for("fail gone", Duration::from_secs(60), async || {
        pods.get_opt("fail").await.ok()?.is_none().then_some(())
    })
    .await;
    prov.shutdown().await;
    plugin.shutdown().await;
    let _ = Api::<Node>::all(local.clone())
        .delete(&node, &DeleteParams::default())
        .await;
}
