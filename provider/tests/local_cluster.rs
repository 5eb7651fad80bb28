//! The provider against a real local apiserver (Kubernetes 1.20), with the
//! in-memory fake plugin as remote side: node + lease + readiness, pod
//! lifecycle and status writes (SSA on 1.20), delete, restart safety with a
//! killed provider process, plugin outage.
//!
//! Runs on the testbed's local cluster, or on the cluster of
//! `OFFLOAD_LOCAL_KUBECONFIG` when set.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use offload_provider::config::Config;
use offload_provider::provider::{RunningProvider, start};
use support::FakePlugin;

/// The local cluster: `OFFLOAD_LOCAL_KUBECONFIG` if set, else the testbed's.
fn kubeconfig() -> String {
    static KC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KC.get_or_init(|| match std::env::var("OFFLOAD_LOCAL_KUBECONFIG") {
        Ok(k) => k,
        Err(_) => std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let tb = testbed::testbed().await.expect("testbed");
                tb.local.kubeconfig.display().to_string()
            })
        })
        .join()
        .expect("testbed thread"),
    })
    .clone()
}

async fn client() -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

async fn namespace(c: &kube::Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", suffix());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    name
}

fn config(node: &str, plugin: SocketAddr) -> Config {
    let mut c = Config::for_node(node, &format!("http://{plugin}"));
    c.kubelet_addr = "127.0.0.1:0".parse().expect("addr");
    c.admin_addr = None;
    c.status_interval = Duration::from_millis(300);
    c.ping_interval = Duration::from_millis(500);
    c.retry_base = Duration::from_millis(200);
    c.retry_max = Duration::from_secs(2);
    c.plugin_retries = 0;
    c
}

async fn start_provider(c: &kube::Client, node: &str, plugin: SocketAddr) -> RunningProvider {
    start(
        config(node, plugin),
        c.clone(),
        "127.0.0.1".parse().expect("ip"),
    )
    .await
    .expect("provider starts")
}

pub fn pod(name: &str, node: &str, ann: &[(&str, &str)], init: bool) -> Pod {
    let c = |n: &str| Container {
        name: n.into(),
        image: Some("busybox:1".into()),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            restart_policy: Some("Never".into()),
            init_containers: init.then(|| vec![c("init")]),
            containers: vec![c("main")],
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create_pod(api: &Api<Pod>, p: &Pod) -> Pod {
    // A namespace's default ServiceAccount may lag behind the namespace.
    for _ in 0..50 {
        match api.create(&PostParams::default(), p).await {
            Ok(p) => return p,
            Err(kube::Error::Api(e))
                if e.message.contains("serviceaccount")
                    || e.message.contains("service account") =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("create pod: {e}"),
        }
    }
    panic!("pod never admitted")
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn node_ready(c: &kube::Client, node: &str) -> Option<(String, String)> {
    let n = Api::<Node>::all(c.clone()).get_opt(node).await.ok()??;
    let cond = n
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((cond.status, cond.reason.unwrap_or_default()))
}

#[tokio::test]
async fn node_lease_and_pod_lifecycle() {
    let c = client().await;
    let node = format!("vn-{}", suffix());
    let fake = FakePlugin::default();
    let (addr, _h) = fake.serve("127.0.0.1:0".parse().expect("addr")).await;
    let prov = start_provider(&c, &node, addr).await;

    wait_for("node Ready", Duration::from_secs(20), async || {
        (node_ready(&c, &node).await? == ("True".into(), "PluginReachable".into())).then_some(())
    })
    .await;
    let n = Api::<Node>::all(c.clone()).get(&node).await.expect("node");
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
            .any(|t| t.key == "virtual-node.interlink/no-schedule")
    );
    let port = n
        .status
        .as_ref()
        .and_then(|s| s.daemon_endpoints.clone())
        .and_then(|d| d.kubelet_endpoint)
        .map(|k| k.port);
    assert_eq!(port, Some(i32::from(prov.kubelet_addr().port())));
    wait_for("lease", Duration::from_secs(20), async || {
        Api::<Lease>::namespaced(c.clone(), "kube-node-lease")
            .get_opt(&node)
            .await
            .ok()?
    })
    .await;

    let ns = namespace(&c, "prov").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    create_pod(
        &pods,
        &pod(
            "ok",
            &node,
            &[
                ("fake.offload/exit-code", "0"),
                ("fake.offload/run-ms", "1500"),
            ],
            true,
        ),
    )
    .await;
    create_pod(
        &pods,
        &pod(
            "bad",
            &node,
            &[
                ("fake.offload/exit-code", "3"),
                ("fake.offload/run-ms", "500"),
            ],
            false,
        ),
    )
    .await;

    let running = wait_for("ok Running", Duration::from_secs(20), async || {
        let p = pods.get("ok").await.ok()?;
        (phase(&p) == "Running").then_some(p)
    })
    .await;
    assert!(
        running
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("JobID"))
            .is_some_and(|j| j.starts_with("job-"))
    );
    let init = &running
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.clone())
        .expect("init statuses")[0];
    assert_eq!(
        init.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(0)
    );
    let done = wait_for("ok Succeeded", Duration::from_secs(20), async || {
        let p = pods.get("ok").await.ok()?;
        (phase(&p) == "Succeeded").then_some(p)
    })
    .await;
    let cs = &done
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .expect("statuses")[0];
    assert_eq!(
        cs.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.reason.clone())
            .as_deref(),
        Some("Completed")
    );
    let bad = wait_for("bad Failed", Duration::from_secs(20), async || {
        let p = pods.get("bad").await.ok()?;
        (phase(&p) == "Failed").then_some(p)
    })
    .await;
    let cs = &bad
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .expect("statuses")[0];
    assert_eq!(
        cs.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(3)
    );

    // Events.
    let evs: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), &ns);
    wait_for("Offloaded event", Duration::from_secs(10), async || {
        let l = evs.list(&Default::default()).await.ok()?;
        l.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Offloaded"))
            .then_some(())
    })
    .await;

    // Delete: remote delete first, then the pod disappears for good.
    let uid = done.metadata.uid.clone().expect("uid");
    pods.delete("ok", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("pod gone", Duration::from_secs(20), async || {
        pods.get_opt("ok").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(fake.state.lock().expect("lock").deletes.get(&uid), Some(&1));
    assert_eq!(fake.creates().get(&uid), Some(&1));

    prov.shutdown().await;
    let (status, reason) = node_ready(&c, &node).await.expect("node still there");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ProviderStopped")
    );
    let _ = Api::<Node>::all(c.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(c.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn plugin_outage_turns_node_not_ready_and_resumes() {
    let c = client().await;
    let node = format!("vn-{}", suffix());
    let fake = FakePlugin::default();
    let (addr, h) = fake.serve("127.0.0.1:0".parse().expect("addr")).await;
    let prov = start_provider(&c, &node, addr).await;
    wait_for("node Ready", Duration::from_secs(20), async || {
        (node_ready(&c, &node).await?.0 == "True").then_some(())
    })
    .await;
    h.abort();
    let _ = h.await;
    let (_, reason) = wait_for("node NotReady", Duration::from_secs(20), async || {
        let r = node_ready(&c, &node).await?;
        (r.0 == "False").then_some(r)
    })
    .await;
    assert_eq!(reason, "PluginUnreachable");
    let ns = namespace(&c, "prov").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    create_pod(&pods, &pod("waits", &node, &[], false)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = pods.get("waits").await.expect("pod kept");
    assert!(
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("JobID"))
            .is_none()
    );
    // Plugin back on the same port.
    let (_addr2, _h2) = fake.serve(addr).await;
    wait_for("node Ready again", Duration::from_secs(20), async || {
        (node_ready(&c, &node).await?.0 == "True").then_some(())
    })
    .await;
    wait_for(
        "pod offloaded after outage",
        Duration::from_secs(30),
        async || {
            let p = pods.get("waits").await.ok()?;
            (phase(&p) == "Running").then_some(())
        },
    )
    .await;
    prov.shutdown().await;
    let _ = Api::<Node>::all(c.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(c.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn killed_in_the_middle_of_50_creates_offloads_each_pod_exactly_once() {
    let c = client().await;
    let node = format!("vn-{}", suffix());
    let fake = FakePlugin::default();
    fake.state.lock().expect("lock").create_delay = Duration::from_millis(100);
    let (addr, _h) = fake.serve("127.0.0.1:0".parse().expect("addr")).await;
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_offload-provider"))
            .args([
                "--node-name",
                &node,
                "--plugin-url",
                &format!("http://{addr}"),
                "--node-ip",
                "127.0.0.1",
            ])
            .args([
                "--kubelet-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--workers",
                "4",
                "--status-interval",
                "300ms",
            ])
            .env("KUBECONFIG", kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("PROVIDER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(std::env::temp_dir().join("offload-provider-kill-test.log"))
                    .expect("log file"),
            ))
            .spawn()
            .expect("spawn provider")
    };
    let mut child = KillOnDrop(spawn());
    let ns = namespace(&c, "prov").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    for i in 0..50 {
        create_pod(&pods, &pod(&format!("p{i}"), &node, &[], false)).await;
    }
    // Kill once some but not all creates went through.
    wait_for("some creates", Duration::from_secs(30), async || {
        (fake.creates().len() >= 5).then_some(())
    })
    .await;
    child.0.kill().expect("kill");
    let _ = child.0.wait();
    let at_kill = fake.creates().len();
    let mut child = KillOnDrop(spawn());
    wait_for("all 50 offloaded", Duration::from_secs(90), async || {
        let l = pods.list(&Default::default()).await.ok()?;
        l.items
            .iter()
            .all(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("JobID"))
            })
            .then_some(())
    })
    .await;
    child.0.kill().expect("kill");
    let _ = child.0.wait();
    let creates = fake.creates();
    assert_eq!(creates.len(), 50, "every pod created remotely");
    assert!(
        creates.values().all(|n| *n == 1),
        "nothing created twice: {creates:?}"
    );
    assert!(
        at_kill < 50,
        "the kill happened mid-way ({at_kill} creates before)"
    );
    let _ = Api::<Namespace>::all(c.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
    let _ = Api::<Node>::all(c.clone())
        .delete(&node, &DeleteParams::default())
        .await;
}

/// `kubectl logs` through the real apiserver: apiserver -> provider kubelet
/// API (client certificate checked against the cluster CA) -> plugin.
/// `OFFLOAD_LOCAL_CLIENT_CA` overrides the CA that signs the apiserver's
/// `--kubelet-client-certificate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_through_the_apiserver() {
    let c = client().await;
    let node = format!("vn-{}", suffix());
    let fake = FakePlugin::default();
    let (addr, _h) = fake.serve("127.0.0.1:0".parse().expect("addr")).await;
    let mut cfg = config(&node, addr);
    // The testbed's local CA signs the apiserver's kubelet client certificate.
    cfg.client_ca_file = Some(match std::env::var("OFFLOAD_LOCAL_CLIENT_CA") {
        Ok(ca) => ca.into(),
        Err(_) => testbed::state_dir().join("local/pki/ca.crt"),
    });
    let prov = start(cfg, c.clone(), "127.0.0.1".parse().expect("ip"))
        .await
        .expect("provider");
    let ns = namespace(&c, "prov").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    create_pod(&pods, &pod("talker", &node, &[], true)).await;
    wait_for("talker Running", Duration::from_secs(20), async || {
        (phase(&pods.get("talker").await.ok()?) == "Running").then_some(())
    })
    .await;
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(testbed::kubectl_binary())
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["-n", &ns])
            .args(args)
            .output()
            .expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = kubectl(&["logs", "talker", "-c", "main", "--tail=3"]);
    assert!(ok, "kubectl logs failed: {err}");
    assert_eq!(out, "hello from main (tail 3)\n");
    let (ok, out, err) = kubectl(&["logs", "talker", "-c", "init"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from init (tail 0)\n");
    let (ok, out, err) = kubectl(&["logs", "-f", "talker", "-c", "main"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 5, "{out}");
    // The apiserver relays the refused upgrade without our message (1.20);
    // the message itself is checked in tests/kubelet_api.rs.
    let (ok, _, _) = kubectl(&["exec", "talker", "-c", "main", "--", "true"]);
    assert!(!ok, "exec must fail on a virtual node");
    prov.shutdown().await;
    let _ = Api::<Node>::all(c.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(c.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// Kills the provider subprocess even when the test panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
