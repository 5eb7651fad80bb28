//! End to end on the two real clusters with the real plugin: the provider
//! (in-process) on the local cluster, `offload_plugin::start` against the
//! remote cluster. The node object and its lease, a pod with an init
//! container through Running to Succeeded with the remote container states, a
//! failing container's exit code, logs through the kubelet API, delete; a
//! long partition between provider and plugin (`partition/`).

mod common;
/// The long partition (`partition/mod.rs`).
mod partition;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Node, Pod, Volume, VolumeMount};
use kube::api::{Api, DeleteParams, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_remotely_with_status_logs_and_delete() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-e2e");
    let ns = env.tb.local.fresh_namespace("prov-e2e").await.expect("ns");
    let _cleanup = Cleanup::new(&env, &ns, &[&node]);
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;

    // The node: interLink's label and taint, Ready with the plugin, the
    // kubelet endpoint of the provider, a lease.
    wait_for("node Ready", Duration::from_secs(60), async || {
        let (s, r, _) = node_ready(&env.local, &node).await?;
        (s == "True" && r == "PluginReachable").then_some(())
    })
    .await;
    let n = Api::<Node>::all(env.local.clone())
        .get(&node)
        .await
        .expect("node");
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("virtual-node.interlink/type")
            .map(String::as_str),
        Some("virtual-kubelet")
    );
    let taints = n.spec.clone().and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "virtual-node.interlink/no-schedule" && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    let port = n
        .status
        .as_ref()
        .and_then(|s| s.daemon_endpoints.clone())
        .and_then(|d| d.kubelet_endpoint)
        .map(|k| k.port);
    assert_eq!(port, Some(i32::from(prov.kubelet_addr().port())));
    wait_for("lease", Duration::from_secs(60), async || {
        Api::<Lease>::namespaced(env.local.clone(), "kube-node-lease")
            .get_opt(&node)
            .await
            .ok()?
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(env.local.clone(), &ns);
    // The init container leaves a file the main container prints: proof it ran first.
    let mount = VolumeMount {
        name: "shared".into(),
        mount_path: "/shared".into(),
        ..Default::default()
    };
    let mut init = container("init", "echo init-done; echo from-init > /shared/mark");
    init.volume_mounts = Some(vec![mount.clone()]);
    let mut main = container(
        "main",
        "echo hello-remote; cat /shared/mark; sleep 10; echo bye",
    );
    main.volume_mounts = Some(vec![mount]);
    let mut ok = pod("ok", &node, "Never", Some(init), main);
    if let Some(s) = ok.spec.as_mut() {
        s.volumes = Some(vec![Volume {
            name: "shared".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]);
    }
    pods.create(&PostParams::default(), &ok)
        .await
        .expect("create ok");
    pods.create(
        &PostParams::default(),
        &pod(
            "fail",
            &node,
            "Never",
            None,
            container("main", "echo oops; exit 3"),
        ),
    )
    .await
    .expect("create fail");

    let running = wait_phase(&pods, "ok", "Running", Duration::from_secs(300)).await;
    let st = running.status.clone().expect("status");
    let init = &st.init_container_statuses.expect("init statuses")[0];
    let init_done = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("init terminated while main runs");
    assert_eq!(init_done.exit_code, 0);
    let main = &st.container_statuses.expect("statuses")[0];
    let started = main
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.clone())
        .expect("remote running state with start time");
    let finished = init_done.finished_at.expect("init finish time");
    assert!(
        finished.0 <= started.0,
        "init finished ({finished:?}) before main started ({started:?})"
    );

    // Logs through the provider's kubelet API with a client certificate of the
    // local cluster CA (what the apiserver presents): provider -> plugin -> remote.
    let pki = local_pki(env.tb);
    let mut ident = std::fs::read(pki.join("admin.crt")).expect("cert");
    ident.extend(std::fs::read(pki.join("admin.key")).expect("key"));
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(&ident).expect("identity"))
        .build()
        .expect("http");
    let port = prov.kubelet_addr().port();
    let ip = env.tb.local.node_ip;
    let url = format!("https://{ip}:{port}/containerLogs/{ns}/ok/main");
    let logs = wait_for("logs", Duration::from_secs(60), async || {
        let t = http.get(&url).send().await.ok()?.text().await.ok()?;
        t.contains("from-init").then_some(t)
    })
    .await;
    assert!(logs.starts_with("hello-remote\nfrom-init\n"), "{logs}");
    let init_logs = http
        .get(format!("https://{ip}:{port}/containerLogs/{ns}/ok/init"))
        .send()
        .await
        .expect("init logs")
        .text()
        .await
        .expect("text");
    assert_eq!(init_logs, "init-done\n");
    let anon = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("http");
    assert_eq!(anon.get(&url).send().await.expect("anon").status(), 401);

    let done = wait_phase(&pods, "ok", "Succeeded", Duration::from_secs(300)).await;
    let t = first_terminated(&done);
    assert_eq!(t.exit_code, 0);
    assert_eq!(t.reason.as_deref(), Some("Completed"));
    let failed = wait_phase(&pods, "fail", "Failed", Duration::from_secs(300)).await;
    let t = first_terminated(&failed);
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    let (ok_, out, err) = kubectl(
        &env,
        &ns,
        &[
            "get",
            "pod",
            "fail",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
        ],
    )
    .await;
    assert!(ok_, "{err}");
    assert_eq!(out, "3", "kubectl shows the exit code");
    assert!(
        !events(&env.local, &ns, "ok", "Offloaded").await.is_empty(),
        "Offloaded event"
    );

    // Delete: the remote pod goes, then the local one.
    let uid_ok = uid(&done);
    assert_eq!(
        remote_pods(&env.remote, &uid_ok).await.len(),
        1,
        "exactly one remote pod"
    );
    pods.delete("ok", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&pods, "ok", Duration::from_secs(120)).await;
    wait_for("remote pod gone", Duration::from_secs(120), async || {
        remote_pods(&env.remote, &uid_ok)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    pods.delete("fail", &DeleteParams::default())
        .await
        .expect("delete fail");
    wait_gone(&pods, "fail", Duration::from_secs(120)).await;

    // Shutdown leaves the node NotReady, not deleted.
    prov.shutdown().await;
    let (status, reason, _) = node_ready(&env.local, &node)
        .await
        .expect("node still there");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ProviderStopped")
    );
    plugin.stop().await;
}
