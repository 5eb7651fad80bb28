//! Proves the test ground: each cluster behaves like a real cluster, the two are
//! isolated, and pods of "remote" reach NodePort Services of "local" via its node IP.
//! Checks go through the real `kubectl` where a user would use it.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use testbed::{Cluster, busybox_pod, testbed, wait_for, wait_for_pod_phase, wait_for_pod_running};

const POD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `check` against both clusters at once; reports every cluster's failure.
async fn in_each_cluster<F, Fut>(check: F)
where
    F: Fn(&'static Cluster) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let tb = testbed().await.expect("the testbed must come up");
    let (local, remote) = tokio::join!(check(&tb.local), check(&tb.remote));
    let failures: Vec<String> = [("local", local), ("remote", remote)]
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("cluster {name}: {e:#}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Polls `kubectl get KIND NAME` until it reports NotFound.
async fn wait_until_gone(c: &Cluster, args: &[&str], what: &str) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(120), || async {
        match c.run_kubectl(args).await {
            Ok(_) => Ok(None),
            Err(e) if format!("{e:#}").contains("NotFound") => Ok(Some(())),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Creates `busybox_pod(name, script)` in `namespace`.
async fn create_busybox(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    script: &str,
) -> anyhow::Result<()> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &busybox_pod(name, script))
        .await?;
    Ok(())
}

#[tokio::test]
async fn node_is_ready() {
    in_each_cluster(|c| async move {
        // Other tests may add (virtual) nodes to the shared clusters: look for ours.
        let nodes = c.run_kubectl(&["get", "nodes", "-o", "name"]).await?;
        anyhow::ensure!(
            nodes.lines().any(|l| l == format!("node/{}", c.node_name)),
            "node/{} missing from {nodes:?}",
            c.node_name
        );
        let jsonpath = r#"jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.addresses[?(@.type=="InternalIP")].address}"#;
        let ready = c
            .run_kubectl(&["get", "node", &c.node_name, "-o", jsonpath])
            .await?;
        anyhow::ensure!(
            ready.trim() == format!("True {}", c.node_ip),
            "node {} not Ready on {}: {ready:?}",
            c.node_name,
            c.node_ip
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn pod_runs_a_real_container_with_exit_code_and_logs() {
    in_each_cluster(|c| async move {
        let ns = c.test_namespace("pod").await?;
        let client = c.client().await?;
        let marker = format!("hello from a container in cluster {}", c.name);
        // `$$` is 1 only inside the container's own PID namespace.
        let script = format!("echo '{marker}'; echo \"pid=$$\"; exit 3");
        create_busybox(&client, &ns.name, "hello", &script).await?;
        wait_for_pod_phase(&client, &ns.name, "hello", "Failed", POD_TIMEOUT).await?;

        let exit_code = ns
            .kubectl(&[
                "get",
                "pod",
                "hello",
                "-o",
                "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
            ])
            .await?;
        anyhow::ensure!(exit_code.trim() == "3", "exit code {exit_code:?}, want 3");
        let row = ns.kubectl(&["get", "pod", "hello", "--no-headers"]).await?;
        anyhow::ensure!(row.contains("Error"), "kubectl get pod shows {row:?}");
        let logs = ns.kubectl(&["logs", "hello"]).await?;
        anyhow::ensure!(
            logs.contains(&marker) && logs.contains("pid=1"),
            "kubectl logs: {logs:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn server_side_apply_twice_is_a_no_op() {
    in_each_cluster(|c| async move {
        let ns = c.test_namespace("ssa").await?;
        let n = ns.name.as_str();
        // A Service too: on 1.20, SSA of a Service needs `protocol` on every port.
        let manifest = format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
              {{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "settings", "namespace": "{n}"}},
                "data": {{"mode": "test"}}}},
              {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web", "namespace": "{n}"}},
                "spec": {{"selector": {{"app": "web"}}, "ports": [{{"port": 80, "targetPort": 8080, "protocol": "TCP"}}]}}}}
            ]}}"#
        );
        let ns = &ns;
        let version = |kind: &'static str, name: &'static str| async move {
            ns.kubectl(&["get", kind, name, "-o", "jsonpath={.metadata.resourceVersion}"])
                .await
        };
        let apply = ["apply", "--server-side", "--field-manager=testbed-test", "-f", "-"];
        c.run_kubectl_with_input(&apply, Some(&manifest)).await?;
        let (cm1, svc1) = (version("configmap", "settings").await?, version("service", "web").await?);
        let second = c.run_kubectl_with_input(&apply, Some(&manifest)).await?;
        let (cm2, svc2) = (version("configmap", "settings").await?, version("service", "web").await?);
        anyhow::ensure!(
            cm1 == cm2 && svc1 == svc2,
            "second apply changed resourceVersions: configmap {cm1} -> {cm2}, service {svc1} -> {svc2} ({second})"
        );

        // The same through the Rust client (what our components do).
        let cms: Api<ConfigMap> = Api::namespaced(c.client().await?, n);
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "from-rust"}, "data": {"k": "v"}
        }))?;
        let pp = PatchParams::apply("testbed-test");
        let first = cms.patch("from-rust", &pp, &Patch::Apply(&cm)).await?;
        let again = cms.patch("from-rust", &pp, &Patch::Apply(&cm)).await?;
        anyhow::ensure!(
            first.metadata.resource_version == again.metadata.resource_version,
            "client SSA twice changed the resourceVersion: {:?} -> {:?}",
            first.metadata.resource_version,
            again.metadata.resource_version
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn deleted_namespace_goes_away() {
    in_each_cluster(|c| async move {
        let name = c.fresh_namespace("doomed").await?;
        // A running pod inside: deletion must go through the kubelet, not just etcd.
        let client = c.client().await?;
        create_busybox(&client, &name, "sleeper", "sleep 3600").await?;
        wait_for_pod_running(&client, &name, "sleeper", POD_TIMEOUT).await?;
        c.run_kubectl(&[
            "create",
            "configmap",
            "-n",
            &name,
            "data",
            "--from-literal=k=v",
        ])
        .await?;

        c.run_kubectl(&["delete", "namespace", &name, "--wait=false"])
            .await?;
        wait_until_gone(
            c,
            &["get", "namespace", &name],
            &format!("namespace {name} to be gone"),
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn dependent_of_a_deleted_owner_is_garbage_collected() {
    in_each_cluster(|c| async move {
        let ns = c.test_namespace("gc").await?;
        let n = ns.name.as_str();
        ns.kubectl(&["create", "configmap", "owner", "--from-literal=role=owner"])
            .await?;
        let uid = ns
            .kubectl(&["get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}"])
            .await?;
        let dependent = format!(
            r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "dependent", "namespace": "{n}",
                "ownerReferences": [{{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "{uid}"}}]}},
                "stringData": {{"k": "v"}}}}"#
        );
        c.run_kubectl_with_input(&["create", "-f", "-"], Some(&dependent)).await?;
        ns.kubectl(&["get", "secret", "dependent"]).await?;

        ns.kubectl(&["delete", "configmap", "owner"]).await?;
        wait_until_gone(
            c,
            &["get", "secret", "-n", n, "dependent"],
            "the garbage collector to delete the dependent secret",
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn lease_can_be_created_and_renewed() {
    in_each_cluster(|c| async move {
        let ns = c.test_namespace("lease").await?;
        let leases: Api<Lease> = Api::namespaced(c.client().await?, &ns.name);
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "leader"},
            "spec": {"holderIdentity": "test-holder", "leaseDurationSeconds": 15}
        }))?;
        let mut lease = lease;
        if let Some(spec) = lease.spec.as_mut() {
            spec.acquire_time = Some(MicroTime(Timestamp::now()));
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        let created = leases.create(&PostParams::default(), &lease).await?;
        let first_renew = created.spec.as_ref().and_then(|s| s.renew_time.clone());

        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut renewed = created.clone();
        if let Some(spec) = renewed.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        // replace carries the resourceVersion: an optimistic-concurrency renewal, as
        // leader election does it.
        let renewed = leases
            .replace("leader", &PostParams::default(), &renewed)
            .await?;
        let second_renew = renewed.spec.as_ref().and_then(|s| s.renew_time.clone());
        anyhow::ensure!(
            second_renew > first_renew,
            "renewTime did not advance: {first_renew:?} -> {second_renew:?}"
        );
        anyhow::ensure!(
            renewed.metadata.resource_version != created.metadata.resource_version,
            "renewal did not write a new resourceVersion"
        );
        let holder = ns
            .kubectl(&[
                "get",
                "lease",
                "leader",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .await?;
        anyhow::ensure!(holder == "test-holder", "kubectl shows holder {holder:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn objects_and_pods_of_one_cluster_are_absent_from_the_other() {
    let tb = testbed().await.expect("the testbed must come up");
    let (local, remote) = (&tb.local, &tb.remote);

    let local_ns = local.test_namespace("iso").await.expect("local namespace");
    local_ns
        .kubectl(&["create", "configmap", "only-local", "--from-literal=k=v"])
        .await
        .expect("create a configmap in local");
    let remote_ns = remote
        .test_namespace("iso")
        .await
        .expect("remote namespace");
    let client = remote.client().await.expect("remote client");
    create_busybox(&client, &remote_ns.name, "only-remote", "sleep 3600")
        .await
        .expect("create a pod in remote");
    wait_for_pod_running(&client, &remote_ns.name, "only-remote", POD_TIMEOUT)
        .await
        .expect("remote pod runs");

    let err = remote
        .run_kubectl(&["get", "namespace", &local_ns.name])
        .await
        .expect_err("local's namespace must not exist in remote");
    assert!(format!("{err:#}").contains("NotFound"), "{err:#}");
    let remote_cms = remote
        .run_kubectl(&["get", "configmaps", "-A", "-o", "name"])
        .await
        .expect("list remote configmaps");
    assert!(
        !remote_cms.contains("only-local"),
        "remote lists {remote_cms}"
    );

    let local_pods = local
        .run_kubectl(&["get", "pods", "-A", "-o", "name"])
        .await
        .expect("list local pods");
    assert!(
        !local_pods.contains("only-remote"),
        "local lists {local_pods}"
    );
    let local_nodes = local
        .run_kubectl(&["get", "nodes", "-o", "name"])
        .await
        .expect("list local nodes");
    assert!(
        !local_nodes
            .lines()
            .any(|l| l == format!("node/{}", remote.node_name)),
        "local lists {local_nodes}"
    );
}

#[tokio::test]
async fn remote_pod_reaches_a_local_nodeport_service_via_the_local_node_ip() {
    let tb = testbed().await.expect("the testbed must come up");
    let (local, remote) = (&tb.local, &tb.remote);

    // The page a user would serve in "local": a busybox httpd behind a NodePort Service.
    let local_ns = local.test_namespace("xweb").await.expect("local namespace");
    let page = format!("served from cluster local, namespace {}", local_ns.name);
    let lc = local.client().await.expect("local client");
    let script = format!(
        "mkdir -p /www && echo '{page}' > /www/index.html && exec httpd -f -p 8080 -h /www"
    );
    create_busybox(&lc, &local_ns.name, "web", &script)
        .await
        .expect("create the web pod");
    let service = format!(
        r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web", "namespace": "{}"}},
            "spec": {{"type": "NodePort", "selector": {{"app": "web"}},
                      "ports": [{{"port": 80, "targetPort": 8080, "protocol": "TCP"}}]}}}}"#,
        local_ns.name
    );
    local
        .run_kubectl_with_input(&["apply", "--server-side", "-f", "-"], Some(&service))
        .await
        .expect("create the NodePort service");
    wait_for_pod_running(&lc, &local_ns.name, "web", POD_TIMEOUT)
        .await
        .expect("web pod runs");
    let node_port: u16 = local_ns
        .kubectl(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .await
        .expect("read the nodePort")
        .trim()
        .parse()
        .expect("nodePort is a number");
    assert!(
        local.node_port_range().contains(&node_port),
        "nodePort {node_port} outside local's range"
    );

    // A client pod in "remote" fetches it through the local node IP, as across two real
    // clusters. Retries cover kube-proxy's sync after the Endpoints appear; busybox's
    // `wget -T` segfaults, hence `timeout`.
    let remote_ns = remote
        .test_namespace("xclient")
        .await
        .expect("remote namespace");
    let url = format!("http://{}:{node_port}/", local.node_ip);
    let fetch = format!(
        "for i in $(seq 30); do if timeout 5 wget -qO- {url}; then exit 0; fi; sleep 1; done; exit 1"
    );
    let rc = remote.client().await.expect("remote client");
    create_busybox(&rc, &remote_ns.name, "fetch", &fetch)
        .await
        .expect("create the client pod");
    wait_for_pod_phase(&rc, &remote_ns.name, "fetch", "Succeeded", POD_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("remote pod could not fetch {url}: {e:#}"));
    let logs = remote_ns
        .kubectl(&["logs", "fetch"])
        .await
        .expect("client pod logs");
    assert!(
        logs.contains(&page),
        "remote pod got {logs:?} from {url}, want {page:?}"
    );
}

#[tokio::test]
async fn kubectl_exec_runs_in_the_container() {
    in_each_cluster(|c| async move {
        let ns = c.test_namespace("exec").await?;
        let client = c.client().await?;
        create_busybox(&client, &ns.name, "target", "sleep 3600").await?;
        wait_for_pod_running(&client, &ns.name, "target", POD_TIMEOUT).await?;
        // Goes apiserver -> kubelet -> containerd; in "remote" all of that crosses into
        // the node's own network namespace.
        let out = ns
            .kubectl(&["exec", "target", "--", "sh", "-c", "echo exec-ok; hostname"])
            .await?;
        anyhow::ensure!(out == "exec-ok\ntarget\n", "kubectl exec printed {out:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn pod_reaches_its_apiserver_through_the_kubernetes_service() {
    in_each_cluster(|c| async move {
        let ns = c.test_namespace("incluster").await?;
        let client = c.client().await?;
        // What an in-cluster client does: service env vars + the mounted token and CA.
        let script = "test -s /var/run/secrets/kubernetes.io/serviceaccount/token && \
            timeout 10 wget -qO- --no-check-certificate \
            https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version";
        create_busybox(&client, &ns.name, "api", script).await?;
        wait_for_pod_phase(&client, &ns.name, "api", "Succeeded", POD_TIMEOUT).await?;
        let out = ns.kubectl(&["logs", "api"]).await?;
        anyhow::ensure!(
            out.contains("\"gitVersion\": \"v1.20.2\""),
            "pod got {out:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn pod_reaches_a_clusterip_service_of_its_own_cluster() {
    // Proves each cluster's own kube-proxy (the remote one runs in the remote node's
    // network namespace, so the two never overwrite each other's rules).
    in_each_cluster(|c| async move {
        let ns = c.test_namespace("svc").await?;
        let n = ns.name.as_str();
        let client = c.client().await?;
        let page = format!("served in cluster {} behind a ClusterIP", c.name);
        let server = format!("mkdir -p /www && echo '{page}' > /www/index.html && exec httpd -f -p 8080 -h /www");
        create_busybox(&client, n, "web", &server)
            .await?;
        let service = format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web", "namespace": "{n}"}},
                "spec": {{"selector": {{"app": "web"}}, "ports": [{{"port": 80, "targetPort": 8080, "protocol": "TCP"}}]}}}}"#
        );
        c.run_kubectl_with_input(&["apply", "--server-side", "-f", "-"], Some(&service))
            .await?;
        wait_for_pod_running(&client, n, "web", POD_TIMEOUT).await?;
        let ip = ns
            .kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
            .await?;
        let fetch = format!(
            "for i in $(seq 30); do if timeout 5 wget -qO- http://{ip}/; then exit 0; fi; sleep 1; done; exit 1"
        );
        create_busybox(&client, n, "fetch", &fetch)
            .await?;
        wait_for_pod_phase(&client, n, "fetch", "Succeeded", POD_TIMEOUT).await?;
        let logs = ns.kubectl(&["logs", "fetch"]).await?;
        anyhow::ensure!(logs.contains(&page), "got {logs:?} from http://{ip}/");
        Ok(())
    })
    .await;
}
