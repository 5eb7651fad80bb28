//! Two faults users saw from the outside, on the two real clusters with the
//! real plugin: `kubectl logs` of a container that never started must tell
//! the remote reason (not `The pods/log "..." is invalid`), and a pod whose
//! `main-app` failed while its `success-sidecar` completed must read `Error`
//! in `kubectl get pod`, as on the remote cluster.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

const RUN: Duration = Duration::from_secs(300);

/// The STATUS column of `kubectl get pod <name>` (kubectl of the testbed).
async fn status_column(cluster: &testbed::Cluster, ns: &str, name: &str) -> String {
    let out = tokio::process::Command::from(cluster.kubectl())
        .args(["-n", ns, "get", "pod", name, "--no-headers"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("kubectl get pod");
    assert!(out.status.success(), "kubectl get pod {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_container_that_never_started_tell_the_remote_reason() {
    let env = env().await;
    let plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-flogs");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-flogs", &[&node]).await;

    let mut c = container("app", "echo never");
    // No registry serves this name: the pull fails for good.
    c.image = Some("registry.invalid/offload/nope:1".into());
    pods.create(
        &PostParams::default(),
        &pod("unpullable", &node, "Never", None, c),
    )
    .await
    .expect("create pod");

    // Until the remote kubelet has tried the pull the reason may still be
    // ContainerCreating; the message is the kubelet's in every case.
    let (stderr, remote_stderr) = wait_for(
        "kubectl logs to fail with the remote reason",
        RUN,
        async || {
            let (ok, _, stderr) = kubectl(&env, &ns, &["logs", "unpullable"]).await;
            assert!(!ok, "kubectl logs of an unstarted container must fail");
            stderr.contains("can't be pulled").then_some(())?;
            let p: Pod = pods.get("unpullable").await.ok()?;
            let rp = remote_pods(&env.remote, &uid(&p))
                .await
                .into_iter()
                .next()?;
            let out = tokio::process::Command::from(env.tb.remote.kubectl())
                .args(["-n", &remote_namespace(&ns), "logs"])
                .arg(rp.metadata.name.as_deref()?)
                .output()
                .await
                .ok()?;
            Some((stderr, String::from_utf8_lossy(&out.stderr).into_owned()))
        },
    )
    .await;
    eprintln!("local:  {stderr}remote: {remote_stderr}");
    assert_eq!(
        stderr.trim(),
        "Error from server (BadRequest): container \"app\" in pod \"unpullable\" is waiting to \
         start: image can't be pulled",
        "the user reads the kubelet's reason, naming the local pod"
    );
    assert!(
        remote_stderr.contains("BadRequest") && remote_stderr.contains("image can't be pulled"),
        "the remote cluster says the same: {remote_stderr}"
    );
    assert!(!stderr.contains("is invalid"), "{stderr}");

    // A container that does not exist is still the kubelet's 404-style answer.
    let (ok, _, stderr) = kubectl(&env, &ns, &["logs", "unpullable", "-c", "nope"]).await;
    assert!(!ok && stderr.contains("nope"), "{stderr}");
    prov.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_main_app_beside_a_completed_sidecar_reads_error_as_remotely() {
    let env = env().await;
    let plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-fsort");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-fsort", &[&node]).await;

    let mut p = pod(
        "sidecar-sort",
        &node,
        "Never",
        None,
        container("success-sidecar", "exit 0"),
    );
    if let Some(s) = p.spec.as_mut() {
        s.containers.push(container("main-app", "sleep 2; exit 1"));
    }
    pods.create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    let local = wait_phase(&pods, "sidecar-sort", "Failed", RUN).await;
    let names: Vec<String> = local
        .status
        .and_then(|s| s.container_statuses)
        .into_iter()
        .flatten()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        ["main-app", "success-sidecar"],
        "the kubelet's order"
    );

    let rp = remote_pods(
        &env.remote,
        &uid(&pods.get("sidecar-sort").await.expect("pod")),
    )
    .await
    .into_iter()
    .next()
    .expect("remote pod");
    let rname = rp.metadata.name.clone().expect("remote name");
    let rns = remote_namespace(&ns);
    let remote_status = wait_for("remote pod Failed", RUN, async || {
        let p = Api::<Pod>::namespaced(env.remote.clone(), &rns)
            .get(&rname)
            .await
            .ok()?;
        (phase(&p) == "Failed").then_some(())?;
        Some(status_column(&env.tb.remote, &rns, &rname).await)
    })
    .await;
    let local_status = status_column(&env.tb.local, &ns, "sidecar-sort").await;
    assert_eq!(remote_status, "Error", "the remote cluster's kubectl");
    assert_eq!(local_status, remote_status, "local kubectl reads as remote");
    prov.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_pod_not_created_remotely_yet_tell_the_local_reason() {
    let env = env().await;
    let plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-fwait");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-fwait", &[&node]).await;

    let mut c = container("main", "echo \"$V\"");
    c.env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
        name: "V".into(),
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            config_map_key_ref: Some(k8s_openapi::api::core::v1::ConfigMapKeySelector {
                name: "not-yet".into(),
                key: "v".into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    pods.create(
        &PostParams::default(),
        &pod("waits", &node, "Never", None, c),
    )
    .await
    .expect("create pod");
    // The create waits for the ConfigMap: nothing remote, the local pod says why.
    let stderr = wait_for("kubectl logs to tell the local reason", RUN, async || {
        let (ok, _, stderr) = kubectl(&env, &ns, &["logs", "waits"]).await;
        assert!(!ok, "no logs yet");
        stderr
            .contains("CreateContainerConfigError")
            .then_some(stderr)
    })
    .await;
    assert_eq!(
        stderr.trim(),
        "Error from server (BadRequest): container \"main\" in pod \"waits\" is waiting to start: \
         CreateContainerConfigError"
    );
    prov.shutdown().await;
}
