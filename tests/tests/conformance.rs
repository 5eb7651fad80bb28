//! Offloading conformance on real pods: what a user sees with `kubectl` in the
//! local cluster when their pods run on the virtual node.
//!
//! One provider (`offload_provider::provider::start`, in-process, against the
//! local cluster) and one plugin (`offload_plugin::start`, in-process, against the
//! remote cluster) serve a virtual node with a fresh name per run; every case
//! creates its objects with `kubectl apply` in one fresh local namespace, waits
//! (API polling, once a second) and then checks phase, container states and logs
//! with the real `kubectl` (`get -o json`, `logs`, `logs -c`, `logs -f`,
//! `logs --previous`, `delete`). The remote cluster is only looked at to check
//! that deleting cleans up there too.
//!
//! The cases run concurrently; the summary table (case, result, seconds) is
//! printed at the end, and the test fails naming every failed case.
//! `OFFLOAD_CONFORMANCE_CASES=hello,oom` runs only the named cases.
//!
//! Run: `cargo test -p offload-e2e --test conformance -- --nocapture`.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStateTerminated, ContainerStatus, Node, Pod, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use offload_wire::keys;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const BUSYBOX: &str = testbed::images::BUSYBOX;
const PAUSE: &str = testbed::images::PAUSE;
/// From `kubectl apply` to the state a case waits for: generous, the remote
/// kubelet starts ~20 pods at once on a busy 2-core machine.
const START: Duration = Duration::from_secs(300);
/// Per case, everything included.
const CASE_LIMIT: Duration = Duration::from_secs(900);
/// How often waits look at the local pod (20 cases poll at once).
const POLL: Duration = Duration::from_secs(1);

/// Everything the cases share.
struct Suite {
    tb: &'static testbed::Testbed,
    local: Client,
    remote: Client,
    ns: String,
    node: String,
}

type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offloaded_pods_behave_like_local_pods() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "offload_provider=warn,offload_plugin=warn".into()),
        )
        .try_init();
    let began = Instant::now();
    let tb = testbed::testbed().await.expect("testbed");
    let local = tb.local.client().await.expect("local client");
    let remote = tb.remote.client().await.expect("remote client");

    let plugin = offload_plugin::start(offload_plugin::PluginConfig::for_tests(), remote.clone())
        .await
        .expect("plugin starts against the remote cluster");
    assert!(
        plugin.wait_ready(Duration::from_secs(60)).await,
        "plugin: remote pod cache not synced within 60 s"
    );
    let node = testbed::namespace_name("vn-conf").expect("node name");
    let mut cfg =
        offload_provider::config::Config::for_node(&node, &format!("http://{}", plugin.addr()));
    cfg.kubelet_addr = "0.0.0.0:0".parse().expect("addr");
    cfg.admin_addr = None;
    // `kubectl logs` goes apiserver -> provider: the apiserver presents a client
    // certificate of the local cluster CA.
    cfg.client_ca_file = Some(
        tb.local
            .kubeconfig
            .parent()
            .map(|d| d.join("pki/ca.crt"))
            .unwrap_or_default(),
    );
    cfg.status_interval = Duration::from_millis(500);
    let provider = offload_provider::provider::start(cfg, local.clone(), tb.local.node_ip)
        .await
        .expect("provider starts against the local cluster");

    let ns = tb
        .local
        .test_namespace("conformance")
        .await
        .expect("local namespace");
    let suite = Suite {
        tb,
        local: local.clone(),
        remote: remote.clone(),
        ns: ns.name.clone(),
        node: node.clone(),
    };
    suite
        .wait_node_ready()
        .await
        .expect("virtual node becomes Ready");
    let setup = began.elapsed();

    let only: Option<BTreeSet<String>> = std::env::var("OFFLOAD_CONFORMANCE_CASES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let s = &suite;
    let all: Vec<(&str, CaseFuture<'_>)> = vec![
        ("hello", Box::pin(hello(s))),
        ("command-args", Box::pin(command_and_args(s))),
        ("env-values", Box::pin(env_values(s))),
        ("env-from", Box::pin(env_from(s))),
        ("volumes-items", Box::pin(volumes_with_items(s))),
        ("shared-emptydir", Box::pin(shared_empty_dir(s))),
        ("init-containers", Box::pin(init_containers(s))),
        ("init-fails", Box::pin(init_fails(s))),
        ("identity", Box::pin(pod_identity(s))),
        ("missing-configmap", Box::pin(missing_config_map(s))),
        ("binary-data", Box::pin(binary_data(s))),
        ("active-deadline", Box::pin(active_deadline(s))),
        ("projected", Box::pin(projected_volume(s))),
        ("liveness", Box::pin(liveness_probe(s))),
        ("readiness", Box::pin(readiness_probe(s))),
        ("startup", Box::pin(startup_probe(s))),
        ("hooks", Box::pin(lifecycle_hooks(s))),
        ("default-entrypoint", Box::pin(default_entrypoint(s))),
        ("args-only", Box::pin(args_only(s))),
        ("exit-42", Box::pin(exit_42(s))),
        ("command-not-found", Box::pin(command_not_found(s))),
        ("oom", Box::pin(oom_killed(s))),
        ("job-backoff", Box::pin(job_backoff_limit(s))),
        ("job-complete", Box::pin(job_completions(s))),
        ("crashloop", Box::pin(crash_loop(s))),
        ("logs-follow", Box::pin(logs_follow(s))),
        ("delete", Box::pin(delete_cleans_both_sides(s))),
    ];
    let cases: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| only.as_ref().is_none_or(|o| o.contains(*name)))
        .map(|(name, fut)| async move {
            let t = Instant::now();
            let r = match tokio::time::timeout(CASE_LIMIT, fut).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
                    "case did not finish within {}s",
                    CASE_LIMIT.as_secs()
                )),
            };
            (name, t.elapsed(), r)
        })
        .collect();
    assert!(!cases.is_empty(), "OFFLOAD_CONFORMANCE_CASES names no case");
    let cases_began = Instant::now();
    let results = futures::future::join_all(cases).await;
    let cases_took = cases_began.elapsed();

    // Deleting the namespace deletes every pod left, through the provider: the
    // remote side must end up empty as well.
    let cleanup_began = Instant::now();
    let cleanup = suite.cleanup(ns).await;
    provider.shutdown().await;
    plugin.shutdown().await;
    let _ = Api::<Node>::all(local)
        .delete(&node, &DeleteParams::default())
        .await;

    let mut table = String::from("\n| case | result | seconds |\n|---|---|---:|\n");
    for (name, took, r) in &results {
        let verdict = if r.is_ok() { "pass" } else { "FAIL" };
        table.push_str(&format!(
            "| {name} | {verdict} | {:.1} |\n",
            took.as_secs_f64()
        ));
    }
    table.push_str(&format!(
        "| cleanup (namespace delete, both sides) | {} | {:.1} |\n",
        if cleanup.is_ok() { "pass" } else { "FAIL" },
        cleanup_began.elapsed().as_secs_f64()
    ));
    println!("{table}");
    println!(
        "conformance: setup {:.1}s, {} cases concurrently {:.1}s, total {:.1}s",
        setup.as_secs_f64(),
        results.len(),
        cases_took.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    let mut failures: Vec<String> = results
        .into_iter()
        .filter_map(|(name, _, r)| r.err().map(|e| format!("{name}: {e:#}")))
        .collect();
    if let Err(e) = cleanup {
        failures.push(format!("cleanup: {e:#}"));
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// The cases.

/// The smallest pod: runs, succeeds, its output is its log.
async fn hello(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "hello",
        json!({ "restartPolicy": "Never", "containers": [sh("main", "echo hello world")] }),
    ))
    .await?;
    s.wait_finished("hello").await?;
    let pod = s.get_pod("hello").await?;
    expect_phase(&pod, "Succeeded")?;
    let t = terminated(&pod, "main")?;
    expect_eq("exit code", t.exit_code, 0)?;
    expect_eq("reason", t.reason.as_deref(), Some("Completed"))?;
    expect_eq(
        "node",
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(s.node.as_str()),
    )?;
    expect_eq(
        "kubectl get: READY STATUS RESTARTS",
        s.get_columns("hello").await?,
        ["0/1", "Completed", "0"].map(String::from).to_vec(),
    )?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "hello"]).await?,
        "hello world\n".into(),
    )
}

/// `command` and `args` reach the process verbatim (no shell), with the
/// Kubernetes `$(VAR)` expansion and `$$` escape and nothing else.
async fn command_and_args(s: &Suite) -> Result<()> {
    let args = [
        "héllo wörld ✓ 日本語 🚀",
        "two  spaces\tand a tab",
        "'single' \"double\"",
        "`uname` $(GREETING) $$(GREETING) $HOME $(NOT_DEFINED)",
        "; rm -rf / && echo pwned | cat > x &",
        "* ? [a-z] ~ \\backslash\\ #hash !bang",
        "",
        "line\nbreak",
    ];
    s.apply(&s.pod(
        "cmdargs",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": BUSYBOX,
                "command": ["printf", "[%s]\\n"],
                "args": args,
                "env": [{ "name": "GREETING", "value": "hi there" }],
            }],
        }),
    ))
    .await?;
    s.wait_finished("cmdargs").await?;
    let pod = s.get_pod("cmdargs").await?;
    expect_phase(&pod, "Succeeded")?;
    let want: String = args
        .iter()
        .map(|a| {
            let expanded = a
                .replace("$$(GREETING)", "\u{0}")
                .replace("$(GREETING)", "hi there")
                .replace('\u{0}', "$(GREETING)");
            format!("[{expanded}]\n")
        })
        .collect();
    expect_eq("log", s.kubectl(&["logs", "cmdargs"]).await?, want)
}

/// Env values with quotes, newlines, backticks and `$` survive the trip.
async fn env_values(s: &Suite) -> Result<()> {
    let values = [
        ("QUOTES", "he said \"hi\" and 'bye'"),
        ("NEWLINES", "line1\nline2\n\nline4"),
        ("BACKTICKS", "`echo nope` $(NOT_DEFINED) $HOME \\ back"),
        ("UNICODE", "ünïcødé ✓ 😀"),
        ("EMPTY", ""),
    ];
    let env: Vec<Value> = values
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    let mut c = sh(
        "main",
        "printf '<%s>\\n' \"$QUOTES\" \"$NEWLINES\" \"$BACKTICKS\" \"$UNICODE\" \"$EMPTY\"",
    );
    c["env"] = json!(env);
    s.apply(&s.pod(
        "envvalues",
        json!({ "restartPolicy": "Never", "containers": [c] }),
    ))
    .await?;
    s.wait_finished("envvalues").await?;
    expect_phase(&s.get_pod("envvalues").await?, "Succeeded")?;
    let want: String = values.iter().map(|(_, v)| format!("<{v}>\n")).collect();
    expect_eq("log", s.kubectl(&["logs", "envvalues"]).await?, want)
}

/// `valueFrom` ConfigMap and Secret keys, `envFrom` of both (with a prefix).
async fn env_from(s: &Suite) -> Result<()> {
    s.apply(&json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "env-cm" },
              "data": { "color": "blue", "size": "XL" } },
            { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "env-cm-all" },
              "data": { "ALPHA": "a1", "BETA": "b 2" } },
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "env-secret" },
              "stringData": { "password": "p@ss w0rd!\"'" } },
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "env-secret-all" },
              "stringData": { "TOKEN": "t0k3n" } },
        ]
    }))
    .await?;
    let mut c = sh(
        "main",
        "printf '%s\\n' \"COLOR=$COLOR\" \"PASSWORD=$PASSWORD\" \"ALPHA=$ALPHA\" \"BETA=$BETA\" \
         \"S_TOKEN=$S_TOKEN\" \"TOKEN=${TOKEN-unset}\"",
    );
    c["env"] = json!([
        { "name": "COLOR", "valueFrom": { "configMapKeyRef": { "name": "env-cm", "key": "color" } } },
        { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "env-secret", "key": "password" } } },
    ]);
    c["envFrom"] = json!([
        { "configMapRef": { "name": "env-cm-all" } },
        { "prefix": "S_", "secretRef": { "name": "env-secret-all" } },
    ]);
    s.apply(&s.pod(
        "envfrom",
        json!({ "restartPolicy": "Never", "containers": [c] }),
    ))
    .await?;
    s.wait_finished("envfrom").await?;
    expect_phase(&s.get_pod("envfrom").await?, "Succeeded")?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "envfrom"]).await?,
        "COLOR=blue\nPASSWORD=p@ss w0rd!\"'\nALPHA=a1\nBETA=b 2\nS_TOKEN=t0k3n\nTOKEN=unset\n"
            .into(),
    )
}

/// ConfigMap and Secret volumes with `items`: only the listed keys, at their
/// paths, with the item's mode.
async fn volumes_with_items(s: &Suite) -> Result<()> {
    s.apply(&json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "vol-cm" },
              "data": { "a": "first file\nsecond line", "b": "not mounted" } },
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "vol-secret" },
              "stringData": { "token": "s3cr3t", "other": "not mounted" } },
        ]
    }))
    .await?;
    let mut c = sh(
        "main",
        "cat /cfg/sub/a.txt; echo; ls /cfg /cfg/sub; cat /sec/tok; echo; ls /sec; \
         stat -L -c %a /sec/tok /cfg/sub/a.txt",
    );
    c["volumeMounts"] = json!([
        { "name": "cfg", "mountPath": "/cfg" },
        { "name": "sec", "mountPath": "/sec" },
    ]);
    s.apply(&s.pod(
        "volumes",
        json!({
            "restartPolicy": "Never",
            "containers": [c],
            "volumes": [
                { "name": "cfg", "configMap": { "name": "vol-cm", "defaultMode": 0o640,
                  "items": [{ "key": "a", "path": "sub/a.txt" }] } },
                { "name": "sec", "secret": { "secretName": "vol-secret",
                  "items": [{ "key": "token", "path": "tok", "mode": 0o400 }] } },
            ],
        }),
    ))
    .await?;
    s.wait_finished("volumes").await?;
    expect_phase(&s.get_pod("volumes").await?, "Succeeded")?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "volumes"]).await?,
        "first file\nsecond line\n/cfg:\nsub\n\n/cfg/sub:\na.txt\ns3cr3t\ntok\n400\n640\n".into(),
    )
}

/// Two containers share an emptyDir; the reader's mount is read-only.
async fn shared_empty_dir(s: &Suite) -> Result<()> {
    let mut writer = sh(
        "writer",
        "echo shared-hello > /data/msg; echo wrote; sleep 5",
    );
    writer["volumeMounts"] = json!([{ "name": "data", "mountPath": "/data" }]);
    let mut reader = sh(
        "reader",
        "until [ -f /data/msg ]; do sleep 0.2; done; cat /data/msg; \
         if touch /data/x 2>/dev/null; then echo WRITABLE; else echo read-only-ok; fi",
    );
    reader["volumeMounts"] = json!([{ "name": "data", "mountPath": "/data", "readOnly": true }]);
    s.apply(&s.pod(
        "shared",
        json!({
            "restartPolicy": "Never",
            "containers": [writer, reader],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        }),
    ))
    .await?;
    s.wait_finished("shared").await?;
    let pod = s.get_pod("shared").await?;
    expect_phase(&pod, "Succeeded")?;
    expect_eq("writer exit", terminated(&pod, "writer")?.exit_code, 0)?;
    expect_eq("reader exit", terminated(&pod, "reader")?.exit_code, 0)?;
    expect_eq(
        "writer log",
        s.kubectl(&["logs", "shared", "-c", "writer"]).await?,
        "wrote\n".into(),
    )?;
    expect_eq(
        "reader log",
        s.kubectl(&["logs", "shared", "-c", "reader"]).await?,
        "shared-hello\nread-only-ok\n".into(),
    )
}

/// Init containers run one after the other, before the main container; each
/// one's log is there with `kubectl logs -c`.
async fn init_containers(s: &Suite) -> Result<()> {
    let mount = json!([{ "name": "work", "mountPath": "/scratch" }]);
    let mut i1 = sh("init-1", "echo first > /scratch/order; echo init-1 says hi");
    i1["volumeMounts"] = mount.clone();
    let mut i2 = sh(
        "init-2",
        "sleep 1; echo second >> /scratch/order; echo init-2 says hi",
    );
    i2["volumeMounts"] = mount.clone();
    let mut main = sh("main", "cat /scratch/order");
    main["volumeMounts"] = mount;
    s.apply(&s.pod(
        "init",
        json!({
            "restartPolicy": "Never",
            "initContainers": [i1, i2],
            "containers": [main],
            "volumes": [{ "name": "work", "emptyDir": {} }],
        }),
    ))
    .await?;
    s.wait_finished("init").await?;
    let pod = s.get_pod("init").await?;
    expect_phase(&pod, "Succeeded")?;
    let first = terminated(&pod, "init-1")?;
    let second = terminated(&pod, "init-2")?;
    expect_eq("init-1 exit", first.exit_code, 0)?;
    expect_eq("init-2 exit", second.exit_code, 0)?;
    ensure!(
        time(&first.finished_at) <= time(&second.started_at),
        "init-1 finished at {:?}, after init-2 started at {:?}",
        first.finished_at,
        second.started_at
    );
    expect_eq(
        "init-1 log",
        s.kubectl(&["logs", "init", "-c", "init-1"]).await?,
        "init-1 says hi\n".into(),
    )?;
    expect_eq(
        "init-2 log",
        s.kubectl(&["logs", "init", "-c", "init-2"]).await?,
        "init-2 says hi\n".into(),
    )?;
    expect_eq(
        "main log",
        s.kubectl(&["logs", "init", "-c", "main"]).await?,
        "first\nsecond\n".into(),
    )
}

/// Downward-API env vars, hostname, workingDir and runAsUser: the values a pod
/// sees are the local pod's.
async fn pod_identity(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "printf '%s\n' \"name=$POD_NAME\" \"ns=$POD_NS\" \"uid=$POD_UID\" \"label=$LABEL\" \
         \"sa=$SA\" \"mem=$MEM\" \"host=$(hostname)\" \"cwd=$(pwd)\" \"id=$(id -u):$(id -g)\"",
    );
    c["workingDir"] = json!("/tmp");
    c["resources"] = json!({ "limits": { "memory": "64Mi" } });
    c["securityContext"] = json!({ "runAsUser": 1234, "runAsGroup": 2345 });
    c["env"] = json!([
        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        { "name": "POD_NS", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
        { "name": "POD_UID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.uid" } } },
        { "name": "LABEL", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['case']" } } },
        { "name": "SA", "valueFrom": { "fieldRef": { "fieldPath": "spec.serviceAccountName" } } },
        { "name": "MEM", "valueFrom": { "resourceFieldRef": {
            "resource": "limits.memory", "divisor": "1Mi" } } },
    ]);
    s.apply(&s.pod(
        "identity",
        json!({ "restartPolicy": "Never", "containers": [c] }),
    ))
    .await?;
    s.wait_finished("identity").await?;
    let pod = s.get_pod("identity").await?;
    expect_phase(&pod, "Succeeded")?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    expect_eq(
        "log",
        s.kubectl(&["logs", "identity"]).await?,
        format!(
            "name=identity\nns={}\nuid={uid}\nlabel=identity\nsa=default\nmem=64\n\
             host=identity\ncwd=/tmp\nid=1234:2345\n",
            s.ns
        ),
    )
}

/// A pod referencing a ConfigMap that does not exist yet waits (the kubelet
/// shows CreateContainerConfigError) and starts once it is created; an
/// optional missing one is just empty.
async fn missing_config_map(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "echo \"value=$VALUE optional=${OPT-unset}\"; ls /opt-cfg | wc -l",
    );
    c["env"] = json!([
        { "name": "VALUE", "valueFrom": { "configMapKeyRef": { "name": "late-cm", "key": "v" } } },
        { "name": "OPT", "valueFrom": { "configMapKeyRef": {
            "name": "never-cm", "key": "v", "optional": true } } },
    ]);
    c["volumeMounts"] = json!([{ "name": "opt", "mountPath": "/opt-cfg" }]);
    s.apply(&s.pod(
        "late-config",
        json!({
            "restartPolicy": "Never",
            "containers": [c],
            "volumes": [{ "name": "opt", "configMap": { "name": "never-cm", "optional": true } }],
        }),
    ))
    .await?;
    s.wait_pod(
        "late-config",
        "waiting with CreateContainerConfigError",
        START,
        |p| {
            phase(p) == "Pending"
                && status(p, "main")
                    .and_then(|c| c.state.as_ref())
                    .and_then(|st| st.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
        },
    )
    .await?;
    expect_eq(
        "kubectl get STATUS",
        s.get_columns("late-config").await?[1].clone(),
        "CreateContainerConfigError".into(),
    )?;
    s.apply(&json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "late-cm" },
        "data": { "v": "arrived" },
    }))
    .await?;
    s.wait_finished("late-config").await?;
    expect_phase(&s.get_pod("late-config").await?, "Succeeded")?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "late-config"]).await?,
        "value=arrived optional=unset\n0\n".into(),
    )
}

/// Secret `data` and ConfigMap `binaryData` that are not UTF-8 reach the files
/// byte for byte.
async fn binary_data(s: &Suite) -> Result<()> {
    // 0x00 0xff 0x0a 0x80 0xc3 0x28 "ok"
    let b64 = "AP8KgMMob2s=";
    s.apply(&json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "bin-secret" },
              "data": { "blob": b64 } },
            { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "bin-cm" },
              "binaryData": { "blob": b64 }, "data": { "text": "plain" } },
        ]
    }))
    .await?;
    let mut c = sh(
        "main",
        "od -An -tx1 /sec/blob; od -An -tx1 /cm/blob; cat /cm/text; echo",
    );
    c["volumeMounts"] = json!([
        { "name": "sec", "mountPath": "/sec" },
        { "name": "cm", "mountPath": "/cm" },
    ]);
    s.apply(&s.pod(
        "binary",
        json!({
            "restartPolicy": "Never",
            "containers": [c],
            "volumes": [
                { "name": "sec", "secret": { "secretName": "bin-secret" } },
                { "name": "cm", "configMap": { "name": "bin-cm" } },
            ],
        }),
    ))
    .await?;
    s.wait_finished("binary").await?;
    expect_phase(&s.get_pod("binary").await?, "Succeeded")?;
    let log = s.kubectl(&["logs", "binary"]).await?;
    let words: Vec<&str> = log.split_whitespace().collect();
    let bytes = ["00", "ff", "0a", "80", "c3", "28", "6f", "6b"];
    let want: Vec<&str> = bytes
        .iter()
        .chain(bytes.iter())
        .copied()
        .chain(["plain"])
        .collect();
    expect_eq("od output", words, want)
}

/// activeDeadlineSeconds: the pod is stopped and fails with DeadlineExceeded,
/// whatever its restart policy.
async fn active_deadline(s: &Suite) -> Result<()> {
    // Long enough for the pods to be Running first, unless the machine is very
    // busy (the deadline counts from the pod's start time, as on a kubelet).
    for (name, policy) in [("deadline", "Never"), ("deadline-always", "Always")] {
        s.apply(&s.pod(
            name,
            json!({
                "restartPolicy": policy,
                "activeDeadlineSeconds": 40,
                "containers": [sh("main", "echo running; sleep 3600")],
            }),
        ))
        .await?;
    }
    for name in ["deadline", "deadline-always"] {
        s.wait_finished(name).await?;
        let pod = s.get_pod(name).await?;
        expect_phase(&pod, "Failed")?;
        expect_eq(
            &format!("{name} status.reason"),
            pod.status.as_ref().and_then(|s| s.reason.as_deref()),
            Some("DeadlineExceeded"),
        )?;
        // kubectl's STATUS column shows a waiting container's reason over the
        // pod's (a container the loaded remote node had not started yet).
        let waiting = status(&pod, "main")
            .and_then(|c| c.state.as_ref())
            .and_then(|st| st.waiting.as_ref())
            .and_then(|w| w.reason.clone());
        expect_eq(
            &format!("{name} kubectl get STATUS"),
            s.get_columns(name).await?[1].clone(),
            waiting.unwrap_or_else(|| "DeadlineExceeded".into()),
        )?;
    }
    Ok(())
}

/// A failing init container fails a restartPolicy Never pod; the main
/// container never runs.
async fn init_fails(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "init-fails",
        json!({
            "restartPolicy": "Never",
            "initContainers": [sh("setup", "echo setting up; exit 7")],
            "containers": [sh("main", "echo main ran")],
        }),
    ))
    .await?;
    s.wait_finished("init-fails").await?;
    let pod = s.get_pod("init-fails").await?;
    expect_phase(&pod, "Failed")?;
    expect_eq("init exit code", terminated(&pod, "setup")?.exit_code, 7)?;
    let main = status(&pod, "main").context("no status for main")?;
    ensure!(
        main.state.as_ref().is_some_and(|st| st.waiting.is_some()),
        "main container ran after a failed init container: {}",
        describe(&pod)
    );
    expect_eq(
        "kubectl get STATUS",
        s.get_columns("init-fails").await?[1].clone(),
        "Init:Error".into(),
    )?;
    expect_eq(
        "init log",
        s.kubectl(&["logs", "init-fails", "-c", "setup"]).await?,
        "setting up\n".into(),
    )
}

/// A projected volume of a ConfigMap item, a Secret item and downward-API files.
async fn projected_volume(s: &Suite) -> Result<()> {
    s.apply(&json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "proj-cm" },
              "data": { "a": "from-configmap", "b": "not projected" } },
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "proj-secret" },
              "stringData": { "s": "from-secret" } },
        ]
    }))
    .await?;
    let mut c = sh(
        "main",
        "cat /p/cm-a; echo; cat /p/sec/s; echo; cat /p/name; echo; cat /p/labels; echo; ls /p",
    );
    c["volumeMounts"] = json!([{ "name": "proj", "mountPath": "/p" }]);
    let mut pod = s.pod(
        "projected",
        json!({
            "restartPolicy": "Never",
            "containers": [c],
            "volumes": [{ "name": "proj", "projected": { "sources": [
                { "configMap": { "name": "proj-cm", "items": [{ "key": "a", "path": "cm-a" }] } },
                { "secret": { "name": "proj-secret", "items": [{ "key": "s", "path": "sec/s" }] } },
                { "downwardAPI": { "items": [
                    { "path": "name", "fieldRef": { "fieldPath": "metadata.name" } },
                    { "path": "labels", "fieldRef": { "fieldPath": "metadata.labels" } },
                ] } },
            ] } }],
        }),
    );
    pod["metadata"]["labels"]["tier"] = json!("test");
    s.apply(&pod).await?;
    s.wait_finished("projected").await?;
    expect_phase(&s.get_pod("projected").await?, "Succeeded")?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "projected"]).await?,
        "from-configmap\nfrom-secret\nprojected\ncase=\"projected\"\ntier=\"test\"\n\
         cm-a\nlabels\nname\nsec\n"
            .into(),
    )
}

/// A liveness probe that starts failing gets the container restarted; the
/// restart count and the previous container's log show locally.
async fn liveness_probe(s: &Suite) -> Result<()> {
    // The second container (marker in the emptyDir) stays healthy.
    let mut c = sh(
        "main",
        "touch /tmp/alive; if [ -f /d/ran ]; then echo started again; sleep 3600; fi; \
         touch /d/ran; echo started; sleep 8; rm /tmp/alive; echo probe-will-fail; sleep 3600",
    );
    c["volumeMounts"] = json!([{ "name": "d", "mountPath": "/d" }]);
    c["livenessProbe"] = json!({
        "exec": { "command": ["cat", "/tmp/alive"] },
        "periodSeconds": 2, "failureThreshold": 1,
    });
    s.apply(&s.pod(
        "liveness",
        json!({
            "restartPolicy": "Always",
            "containers": [c],
            "volumes": [{ "name": "d", "emptyDir": {} }],
        }),
    ))
    .await?;
    s.wait_pod(
        "liveness",
        "restarted by its liveness probe, running again",
        START,
        |p| {
            status(p, "main").is_some_and(|c| {
                c.restart_count >= 1 && c.state.as_ref().is_some_and(|st| st.running.is_some())
            })
        },
    )
    .await?;
    let pod = s.get_pod("liveness").await?;
    expect_phase(&pod, "Running")?;
    let c = status(&pod, "main").context("no status for main")?;
    expect_eq("restart count", c.restart_count, 1)?;
    expect_eq(
        "kubectl get READY STATUS RESTARTS",
        s.get_columns("liveness").await?,
        ["1/1", "Running", "1"].map(String::from).to_vec(),
    )?;
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .context("no lastState.terminated after the restart")?;
    ensure!(
        last.exit_code == 137 || last.exit_code == 143,
        "the killed container's exit code is {} ({:?}), expected 137/143",
        last.exit_code,
        last.reason
    );
    expect_eq(
        "previous log",
        s.kubectl(&["logs", "liveness", "--previous"]).await?,
        "started\nprobe-will-fail\n".into(),
    )?;
    s.wait_log("liveness", &[], "started again\n").await
}

/// A readiness probe toggles the pod's Ready condition without restarts.
async fn readiness_probe(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "sleep 2; while true; do touch /tmp/ready; sleep 12; rm -f /tmp/ready; sleep 12; done",
    );
    c["readinessProbe"] = json!({
        "exec": { "command": ["cat", "/tmp/ready"] },
        "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1,
    });
    s.apply(&s.pod(
        "readiness",
        json!({ "restartPolicy": "Always", "containers": [c] }),
    ))
    .await?;
    s.wait_pod("readiness", "Ready", START, is_ready).await?;
    s.wait_pod(
        "readiness",
        "not Ready again (probe failing) while Running",
        Duration::from_secs(120),
        |p| phase(p) == "Running" && !is_ready(p),
    )
    .await?;
    let pod = s.get_pod("readiness").await?;
    let c = status(&pod, "main").context("no status for main")?;
    ensure!(
        !c.ready && c.state.as_ref().is_some_and(|st| st.running.is_some()),
        "expected a running, unready container: {}",
        describe(&pod)
    );
    expect_eq("restart count", c.restart_count, 0)?;
    s.wait_pod(
        "readiness",
        "Ready again (probe passing)",
        Duration::from_secs(120),
        is_ready,
    )
    .await?;
    Ok(())
}

/// A startup probe holds readiness back until it passes (the container is
/// running, not started, not ready meanwhile).
async fn startup_probe(s: &Suite) -> Result<()> {
    let mut c = sh("main", "sleep 20; touch /tmp/started; sleep 3600");
    c["startupProbe"] = json!({
        "exec": { "command": ["cat", "/tmp/started"] },
        "periodSeconds": 1, "failureThreshold": 120,
    });
    // Always passing; it runs only once the startup probe passed. Without it,
    // kubelet 1.20 marks the container ready up to a minute after it started
    // (seen on the remote cluster directly: started at +10 s, ready at +76 s).
    c["readinessProbe"] = json!({
        "exec": { "command": ["true"] }, "periodSeconds": 1,
    });
    s.apply(&s.pod(
        "startup",
        json!({ "restartPolicy": "Always", "containers": [c] }),
    ))
    .await?;
    let saw_unstarted = AtomicBool::new(false);
    s.wait_pod("startup", "Ready after its startup probe", START, |p| {
        let unstarted = status(p, "main").is_some_and(|c| {
            c.state.as_ref().is_some_and(|st| st.running.is_some())
                && !c.ready
                && c.started != Some(true)
        });
        if unstarted {
            saw_unstarted.store(true, Ordering::Relaxed);
        }
        is_ready(p)
    })
    .await?;
    let pod = s.get_pod("startup").await?;
    let c = status(&pod, "main").context("no status for main")?;
    expect_eq("started", c.started, Some(true))?;
    expect_eq("restart count", c.restart_count, 0)?;
    let running_since = c
        .state
        .as_ref()
        .and_then(|st| st.running.as_ref())
        .and_then(|r| time(&r.started_at))
        .context("running container without startedAt")?;
    let ready_since = condition_time(&pod, "Ready").context("no Ready transition time")?;
    let held = ready_since
        .duration_since(running_since)
        .unwrap_or_default();
    ensure!(
        held.as_secs() >= 18,
        "Ready {held:?} after the container started: the startup probe (passing after 20 s) \
         did not hold readiness back"
    );
    ensure!(
        saw_unstarted.load(Ordering::Relaxed),
        "never saw the container running but not started/ready during the 20 s"
    );
    Ok(())
}

/// postStart runs alongside the container's start; preStop runs before the
/// container is killed (here: by a failing liveness probe; the hook leaves a
/// note in an emptyDir that the next container prints).
async fn lifecycle_hooks(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "touch /tmp/alive; again=; \
         if [ -f /shared/prestop ]; then again=1; printf 'found: '; cat /shared/prestop; fi; \
         until [ -f /tmp/post ]; do sleep 0.2; done; printf 'main saw: '; cat /tmp/post; \
         if [ -z \"$again\" ]; then sleep 3; rm /tmp/alive; fi; sleep 3600",
    );
    c["volumeMounts"] = json!([{ "name": "shared", "mountPath": "/shared" }]);
    c["lifecycle"] = json!({
        "postStart": { "exec": { "command": ["sh", "-c", "echo poststart-ran > /tmp/post"] } },
        "preStop": { "exec": { "command": ["sh", "-c", "echo prestop-ran > /shared/prestop"] } },
    });
    c["livenessProbe"] = json!({
        "exec": { "command": ["cat", "/tmp/alive"] },
        "periodSeconds": 2, "failureThreshold": 1,
    });
    s.apply(&s.pod(
        "hooks",
        json!({
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 3,
            "containers": [c],
            "volumes": [{ "name": "shared", "emptyDir": {} }],
        }),
    ))
    .await?;
    s.wait_pod("hooks", "restarted once, running again", START, |p| {
        status(p, "main").is_some_and(|c| {
            c.restart_count >= 1 && c.state.as_ref().is_some_and(|st| st.running.is_some())
        })
    })
    .await?;
    expect_eq(
        "previous log (postStart ran)",
        s.kubectl(&["logs", "hooks", "--previous"]).await?,
        "main saw: poststart-ran\n".into(),
    )?;
    s.wait_log(
        "hooks",
        &[],
        "found: prestop-ran\nmain saw: poststart-ran\n",
    )
    .await?;
    // The second container stays healthy: one restart, by the probe only.
    let pod = s.get_pod("hooks").await?;
    expect_eq(
        "restart count",
        status(&pod, "main").map(|c| c.restart_count),
        Some(1),
    )
}

/// No command and no args: the image's default (busybox: `sh`, which ends at
/// the end of its empty stdin; pause: its entrypoint `/pause`, which runs).
async fn default_entrypoint(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "default-sh",
        json!({ "restartPolicy": "Never",
                "containers": [{ "name": "main", "image": BUSYBOX }] }),
    ))
    .await?;
    s.apply(&s.pod(
        "default-pause",
        json!({ "restartPolicy": "Always",
                "containers": [{ "name": "main", "image": PAUSE }] }),
    ))
    .await?;
    s.wait_finished("default-sh").await?;
    let pod = s.get_pod("default-sh").await?;
    expect_phase(&pod, "Succeeded")?;
    expect_eq("exit code", terminated(&pod, "main")?.exit_code, 0)?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "default-sh"]).await?,
        String::new(),
    )?;
    s.wait_pod("default-pause", "Running and Ready", START, is_ready)
        .await?;
    let pod = s.get_pod("default-pause").await?;
    expect_phase(&pod, "Running")?;
    expect_eq(
        "restart count",
        status(&pod, "main").map(|c| c.restart_count),
        Some(0),
    )?;
    s.kubectl(&["delete", "pod", "default-pause", "--timeout=120s"])
        .await?;
    Ok(())
}

/// `args` without `command`: the args replace the image's Cmd (busybox has no
/// entrypoint), with the image's PATH and working directory.
async fn args_only(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "args-only",
        json!({ "restartPolicy": "Never", "containers": [{
            "name": "main", "image": BUSYBOX,
            "args": ["sh", "-c", "echo PATH=$PATH; pwd; echo args-only"],
        }] }),
    ))
    .await?;
    s.wait_finished("args-only").await?;
    expect_phase(&s.get_pod("args-only").await?, "Succeeded")?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "args-only"]).await?,
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n/\nargs-only\n".into(),
    )
}

/// A container exiting 42: the pod fails with that exit code.
async fn exit_42(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "exit42",
        json!({ "restartPolicy": "Never",
                "containers": [sh(
                    "main",
                    "echo failing on purpose; echo 'the reason' > /dev/termination-log; exit 42",
                )] }),
    ))
    .await?;
    s.wait_finished("exit42").await?;
    let pod = s.get_pod("exit42").await?;
    expect_phase(&pod, "Failed")?;
    let t = terminated(&pod, "main")?;
    expect_eq("exit code", t.exit_code, 42)?;
    expect_eq("reason", t.reason.as_deref(), Some("Error"))?;
    expect_eq(
        "termination message",
        t.message.as_deref(),
        Some("the reason\n"),
    )?;
    expect_eq(
        "kubectl get STATUS",
        s.get_columns("exit42").await?[1].clone(),
        "Error".into(),
    )?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "exit42"]).await?,
        "failing on purpose\n".into(),
    )
}

/// A command that does not exist: as the image's runtime reports it (exec
/// fails: the remote kubelet's exit code and reason, message naming the
/// command), and through a shell (127, "not found" in the log).
async fn command_not_found(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "noexec",
        json!({ "restartPolicy": "Never", "containers": [{
            "name": "main", "image": BUSYBOX, "command": ["no-such-command-xyz", "arg"],
        }] }),
    ))
    .await?;
    s.apply(&s.pod(
        "noexec-sh",
        json!({ "restartPolicy": "Never", "containers": [sh("main", "no-such-command-xyz")] }),
    ))
    .await?;
    s.wait_finished("noexec").await?;
    let pod = s.get_pod("noexec").await?;
    expect_phase(&pod, "Failed")?;
    let t = terminated(&pod, "main")?;
    ensure!(
        t.exit_code != 0,
        "exit code 0 for a missing binary: {}",
        describe(&pod)
    );
    ensure!(
        t.message
            .as_deref()
            .is_some_and(|m| m.contains("no-such-command-xyz")),
        "the termination message does not name the missing command: {:?}",
        t.message
    );
    // Same as what the remote kubelet reported.
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let remote = s.remote_pods(&uid).await?;
    let remote_pod = remote.first().context("no remote pod for noexec")?;
    let rt = terminated(remote_pod, "main")?;
    expect_eq("exit code (local vs remote)", t.exit_code, rt.exit_code)?;
    expect_eq(
        "reason (local vs remote)",
        t.reason.clone(),
        rt.reason.clone(),
    )?;
    let remote_columns =
        s.tb.remote
            .run_kubectl(&[
                "-n",
                remote_pod.metadata.namespace.as_deref().unwrap_or_default(),
                "get",
                "pod",
                remote_pod.metadata.name.as_deref().unwrap_or_default(),
                "--no-headers",
            ])
            .await?;
    let remote_columns: Vec<String> = remote_columns
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(String::from)
        .collect();
    expect_eq(
        "kubectl get READY STATUS RESTARTS (local vs remote)",
        s.get_columns("noexec").await?,
        remote_columns,
    )?;
    println!(
        "conformance: a missing binary shows as exit code {} reason {:?}",
        t.exit_code, t.reason
    );

    s.wait_finished("noexec-sh").await?;
    let pod = s.get_pod("noexec-sh").await?;
    expect_phase(&pod, "Failed")?;
    expect_eq("exit code", terminated(&pod, "main")?.exit_code, 127)?;
    let log = s.kubectl(&["logs", "noexec-sh"]).await?;
    ensure!(
        log.contains("no-such-command-xyz") && log.contains("not found"),
        "log: {log:?}"
    );
    Ok(())
}

/// Over its memory limit, the container is OOM-killed: Failed, 137, OOMKilled.
/// (`exec` so that the process the kernel kills is the container's PID 1: a
/// child killed under `sh` would leave `sh` exiting 0.)
async fn oom_killed(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "echo allocating; sleep 3; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    c["resources"] = json!({ "limits": { "memory": "20Mi" }, "requests": { "memory": "20Mi" } });
    // cgroup v1 (this testbed), two ways to lose the OOMKilled reason, both
    // seen with a plain kubelet too (exit 137, reason "Error" on the remote pod
    // itself): containerd watches a container's memory.oom_control only once
    // the task has started, so a process killed within its first moments
    // leaves no TaskOOM event at all (hence the `sleep` before allocating);
    // and the kubelet also limits the pod's cgroup, to
    // the same 20 MiB here, and the pause container's memory counts there too.
    // When the pod cgroup hits its limit first, containerd sees the OOM on the
    // sandbox, not on the container, and the container ends "Error" 137 (seen
    // in the remote containerd's log: TaskOOM for the sandbox id only). An
    // init container with a higher limit raises the pod's limit, so the
    // container's own limit is the one that triggers, as on a typical node.
    let mut headroom = sh("headroom", "true");
    headroom["resources"] = json!({ "limits": { "memory": "64Mi" } });
    s.apply(&s.pod(
        "oom",
        json!({ "restartPolicy": "Never", "initContainers": [headroom], "containers": [c] }),
    ))
    .await?;
    s.wait_finished("oom").await?;
    let pod = s.get_pod("oom").await?;
    expect_phase(&pod, "Failed")?;
    let t = terminated(&pod, "main")?;
    expect_eq("exit code", t.exit_code, 137)?;
    if t.reason.as_deref() != Some("OOMKilled") {
        // Say what the remote kubelet shows now, to tell a lost update from a
        // runtime that never reported the OOM kill.
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let remote = s.remote_pods(&uid).await?;
        let remote_reason = remote
            .first()
            .and_then(|p| terminated(p, "main").ok())
            .map(|t| (t.exit_code, t.reason.clone()));
        bail!(
            "reason {:?}, expected OOMKilled; the remote pod's container now: {remote_reason:?}",
            t.reason
        );
    }
    expect_eq(
        "kubectl get STATUS",
        s.get_columns("oom").await?[1].clone(),
        "OOMKilled".into(),
    )?;
    expect_eq(
        "log",
        s.kubectl(&["logs", "oom"]).await?,
        "allocating\n".into(),
    )
}

/// A Job (controller in the local cluster) whose pods land on the virtual node
/// and fail: backoffLimit 1 means two pods, then the Job fails.
async fn job_backoff_limit(s: &Suite) -> Result<()> {
    s.apply(&json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "job-fail" },
        "spec": { "backoffLimit": 1, "template": { "spec": s.placed(json!({
            "restartPolicy": "Never",
            "containers": [sh("main", "echo attempt; exit 3")],
        })) } },
    }))
    .await?;
    let job = s
        .wait_job("job-fail", "Failed", Duration::from_secs(600))
        .await?;
    let status = job.status.unwrap_or_default();
    let failed = job_condition(&status, "Failed").context("no Failed condition")?;
    expect_eq(
        "Failed reason",
        failed.reason.as_deref(),
        Some("BackoffLimitExceeded"),
    )?;
    expect_eq("status.failed", status.failed, Some(2))?;
    let pods = s.job_pods("job-fail").await?;
    expect_eq("number of pods", pods.len(), 2)?;
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        expect_eq(
            "node",
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            Some(s.node.clone()),
        )?;
        expect_phase(pod, "Failed")?;
        expect_eq(
            &format!("{name} exit code"),
            terminated(pod, "main")?.exit_code,
            3,
        )?;
        expect_eq(
            &format!("{name} log"),
            s.kubectl(&["logs", &name]).await?,
            "attempt\n".into(),
        )?;
    }
    Ok(())
}

/// A Job with two completions run in parallel on the virtual node completes.
async fn job_completions(s: &Suite) -> Result<()> {
    s.apply(&json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "job-ok" },
        "spec": { "completions": 2, "parallelism": 2, "backoffLimit": 0,
          "template": { "spec": s.placed(json!({
            "restartPolicy": "Never",
            "containers": [sh("main", "echo done")],
        })) } },
    }))
    .await?;
    let job = s
        .wait_job("job-ok", "Complete", Duration::from_secs(600))
        .await?;
    expect_eq(
        "status.succeeded",
        job.status.as_ref().and_then(|s| s.succeeded),
        Some(2),
    )?;
    let pods = s.job_pods("job-ok").await?;
    expect_eq("number of pods", pods.len(), 2)?;
    for pod in &pods {
        expect_phase(pod, "Succeeded")?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        expect_eq(
            &format!("{name} log"),
            s.kubectl(&["logs", &name]).await?,
            "done\n".into(),
        )?;
    }
    Ok(())
}

/// restartPolicy Always and a container that keeps crashing: the restart count
/// grows, the pod stays Running (kubelet's phase), the previous run's log shows.
async fn crash_loop(s: &Suite) -> Result<()> {
    let mut c = sh(
        "main",
        "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo run-$n; exit 1",
    );
    c["volumeMounts"] = json!([{ "name": "d", "mountPath": "/d" }]);
    s.apply(&s.pod(
        "crashloop",
        json!({
            "restartPolicy": "Always",
            "containers": [c],
            "volumes": [{ "name": "d", "emptyDir": {} }],
        }),
    ))
    .await?;
    // Between two runs the pod waits in CrashLoopBackOff (what `kubectl get
    // pods` shows). Right after a crash the remote kubelet 1.20 itself shows
    // the container terminated for a few seconds and answers `--previous` with
    // "unable to retrieve container logs" (the older container is gone): the
    // log is read while backing off, as a user would after seeing the status.
    let crashloop = |p: &Pod| {
        status(p, "main").is_some_and(|c| {
            c.restart_count >= 2
                && c.state
                    .as_ref()
                    .and_then(|st| st.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
        })
    };
    s.wait_pod(
        "crashloop",
        "restarted at least twice, in CrashLoopBackOff",
        START,
        crashloop,
    )
    .await?;
    let pod = s.get_pod("crashloop").await?;
    expect_phase(&pod, "Running")?;
    ensure!(!is_ready(&pod), "a crash-looping pod is Ready");
    let c = status(&pod, "main").context("no status for main")?;
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .context("no lastState.terminated")?;
    expect_eq("last exit code", last.exit_code, 1)?;
    let columns = s.get_columns("crashloop").await?;
    expect_eq(
        "kubectl get STATUS",
        columns[1].as_str(),
        "CrashLoopBackOff",
    )?;
    expect_eq(
        "kubectl get RESTARTS",
        columns[2].clone(),
        c.restart_count.to_string(),
    )?;
    let before = c.restart_count;
    let previous = s.kubectl(&["logs", "crashloop", "--previous"]).await?;
    let after = s
        .get_pod("crashloop")
        .await
        .ok()
        .and_then(|p| status(&p, "main").map(|c| c.restart_count))
        .unwrap_or(before);
    // Run k prints run-k; while backing off after restart r, r+1 runs ended.
    let run: i32 = previous
        .trim()
        .strip_prefix("run-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("previous log {previous:?} is not `run-N`"))?;
    ensure!(
        run >= before && run <= after + 1,
        "previous log is run {run}, restart count was {before}..{after}"
    );
    Ok(())
}

/// `kubectl logs -f` streams lines as they are written and ends with the
/// container.
async fn logs_follow(s: &Suite) -> Result<()> {
    s.apply(&s.pod(
        "follow",
        json!({ "restartPolicy": "Never", "containers": [sh(
            "main",
            "sleep 3; i=1; while [ $i -le 30 ]; do echo line-$i; i=$((i+1)); sleep 1; done",
        )] }),
    ))
    .await?;
    s.wait_pod("follow", "Running", START, |p| phase(p) == "Running")
        .await?;
    let mut cmd = tokio::process::Command::from(s.tb.local.kubectl());
    cmd.args(["-n", &s.ns, "logs", "-f", "follow"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("running kubectl logs -f")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let began = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    let mut got: Vec<(Duration, String)> = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await? {
            got.push((began.elapsed(), line));
        }
        anyhow::Ok(())
    })
    .await;
    ensure!(
        read.is_ok(),
        "kubectl logs -f still streaming after 180 s; got {got:?}"
    );
    read.ok().transpose()?;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("kubectl logs -f did not exit after its stdout closed")??;
    ensure!(
        out.status.success(),
        "kubectl logs -f: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
    let want: Vec<String> = (1..=30).map(|i| format!("line-{i}")).collect();
    expect_eq("followed lines", text.join("\n"), want.join("\n"))?;
    // Lines written before kubectl started come in one burst (a busy machine
    // can take many seconds to show the pod Running); the later ones must come
    // as they are written, not at the end.
    let bursts = 1 + got
        .windows(2)
        .filter(|w| w[1].0.saturating_sub(w[0].0) >= Duration::from_millis(500))
        .count();
    ensure!(
        bursts >= 3,
        "the lines (written 1 s apart) arrived in {bursts} burst(s): not streamed; {got:?}"
    );
    // It ended with the container.
    let pod = s.wait_finished("follow").await?;
    expect_phase(&pod, "Succeeded")?;
    expect_eq(
        "kubectl logs --tail=3",
        s.kubectl(&["logs", "follow", "--tail=3"]).await?,
        "line-28\nline-29\nline-30\n".into(),
    )
}

/// Deleting a pod removes it locally and its remote pod, ConfigMaps and Secrets.
async fn delete_cleans_both_sides(s: &Suite) -> Result<()> {
    s.apply(&json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "del-cm" },
              "data": { "k": "v" } },
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "del-secret" },
              "stringData": { "k": "v" } },
        ]
    }))
    .await?;
    let mut c = sh("main", "echo up; sleep 3600");
    c["env"] = json!([{ "name": "S", "valueFrom": { "secretKeyRef": { "name": "del-secret", "key": "k" } } }]);
    c["volumeMounts"] = json!([{ "name": "cfg", "mountPath": "/cfg" }]);
    s.apply(&s.pod(
        "deleteme",
        json!({
            "restartPolicy": "Always",
            "containers": [c],
            "volumes": [{ "name": "cfg", "configMap": { "name": "del-cm" } }],
        }),
    ))
    .await?;
    s.wait_pod("deleteme", "Running and Ready", START, is_ready)
        .await?;
    let pod = s.get_pod("deleteme").await?;
    let uid = pod.metadata.uid.clone().context("no uid")?;
    let (pods, cms, secrets) = s.remote_objects(&uid).await?;
    expect_eq("remote pods", pods.len(), 1)?;
    ensure!(!cms.is_empty(), "no remote ConfigMap for the pod");
    ensure!(!secrets.is_empty(), "no remote Secret for the pod");

    s.kubectl(&["delete", "pod", "deleteme", "--timeout=120s"])
        .await?;
    let gone = s
        .kubectl(&["get", "pod", "deleteme", "--ignore-not-found", "-o", "name"])
        .await?;
    expect_eq("local pod after delete", gone, String::new())?;
    let left = Mutex::new(String::new());
    let left_ref = &left;
    let uid = &uid;
    poll(
        "remote pod, ConfigMaps and Secrets gone",
        Duration::from_secs(180),
        || async move {
            let (p, c, s) = s.remote_objects(uid).await?;
            let names = p
                .iter()
                .map(|p| {
                    format!(
                        "pod {} (phase {}, deletionTimestamp {:?})",
                        p.metadata.name.as_deref().unwrap_or(""),
                        phase(p),
                        p.metadata.deletion_timestamp
                    )
                })
                .chain(
                    c.iter()
                        .map(|c| format!("configmap {}", c.metadata.name.as_deref().unwrap_or(""))),
                )
                .chain(
                    s.iter()
                        .map(|s| format!("secret {}", s.metadata.name.as_deref().unwrap_or(""))),
                )
                .collect::<Vec<_>>();
            let done = names.is_empty();
            if let Ok(mut l) = left_ref.lock() {
                *l = names.join(", ");
            }
            Ok(done.then_some(()))
        },
    )
    .await
    .with_context(|| {
        format!(
            "left on the remote cluster: {}",
            left.lock().map(|l| l.clone()).unwrap_or_default()
        )
    })
}

// ---------------------------------------------------------------------------
// The harness.

impl Suite {
    /// `kubectl -n <ns> ARGS` against the local cluster.
    async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        self.tb.local.run_kubectl(&full).await
    }

    async fn apply(&self, manifest: &Value) -> Result<()> {
        self.tb
            .local
            .run_kubectl_with_input(
                &["-n", &self.ns, "apply", "-f", "-"],
                Some(&manifest.to_string()),
            )
            .await
            .map(drop)
    }

    /// A pod spec placed on the virtual node the way a user would: a
    /// nodeSelector and a toleration of the virtual node's taint.
    fn placed(&self, mut spec: Value) -> Value {
        if let Some(o) = spec.as_object_mut() {
            o.entry("nodeSelector")
                .or_insert(json!({ "kubernetes.io/hostname": self.node }));
            o.entry("tolerations").or_insert(json!([{
                "key": keys::TAINT_NO_SCHEDULE, "operator": "Exists", "effect": "NoSchedule",
            }]));
            // `sh` as PID 1 ignores SIGTERM: do not wait 30 s on each delete.
            o.entry("terminationGracePeriodSeconds").or_insert(json!(2));
        }
        spec
    }

    fn pod(&self, name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "labels": { "case": name } },
            "spec": self.placed(spec),
        })
    }

    /// READY, STATUS and RESTARTS of `kubectl get pod NAME`.
    async fn get_columns(&self, name: &str) -> Result<Vec<String>> {
        let line = self.kubectl(&["get", "pod", name, "--no-headers"]).await?;
        let columns: Vec<String> = line
            .split_whitespace()
            .skip(1)
            .take(3)
            .map(String::from)
            .collect();
        ensure!(columns.len() == 3, "kubectl get pod {name}: {line:?}");
        Ok(columns)
    }

    /// The pod as `kubectl get pod -o json` shows it.
    async fn get_pod(&self, name: &str) -> Result<Pod> {
        let out = self.kubectl(&["get", "pod", name, "-o", "json"]).await?;
        serde_json::from_str(&out).with_context(|| format!("parsing kubectl's pod {name}"))
    }

    /// Waits (API polling) until `ok` holds for the pod; fails early when the
    /// pod ends in a terminal phase that does not satisfy it.
    async fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&Pod) -> bool,
    ) -> Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.local.clone(), &self.ns);
        let last = Mutex::new(String::from("pod not found"));
        let ok = &ok;
        let last_ref = &last;
        let pods = &pods;
        poll(&format!("pod {name}: {what}"), timeout, || async move {
            let Some(pod) = pods.get_opt(name).await? else {
                return Ok(None);
            };
            if let Ok(mut l) = last_ref.lock() {
                *l = describe(&pod);
            }
            if ok(&pod) {
                return Ok(Some(pod));
            }
            if matches!(phase(&pod), "Succeeded" | "Failed") {
                bail!(
                    "pod {name} ended {} before {what}: {}",
                    phase(&pod),
                    describe(&pod)
                );
            }
            Ok(None)
        })
        .await
        .with_context(|| {
            format!(
                "last seen status of {name}: {}",
                last.lock().map(|l| l.clone()).unwrap_or_default()
            )
        })
    }

    async fn wait_finished(&self, name: &str) -> Result<Pod> {
        self.wait_pod(name, "Succeeded or Failed", START, |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await
    }

    /// Waits until `kubectl logs NAME ARGS` prints exactly `want`.
    async fn wait_log(&self, name: &str, args: &[&str], want: &str) -> Result<()> {
        let last = Mutex::new(String::new());
        let last_ref = &last;
        let mut full = vec!["logs", name];
        full.extend_from_slice(args);
        let full = &full;
        poll(
            &format!("kubectl logs {} to be {want:?}", full[1..].join(" ")),
            Duration::from_secs(120),
            || async move {
                let log = self.kubectl(full).await?;
                let done = log == want;
                if let Ok(mut l) = last_ref.lock() {
                    *l = log;
                }
                Ok(done.then_some(()))
            },
        )
        .await
        .with_context(|| {
            format!(
                "last log: {:?}",
                last.lock().map(|l| l.clone()).unwrap_or_default()
            )
        })
    }

    async fn wait_job(&self, name: &str, condition: &str, timeout: Duration) -> Result<Job> {
        let jobs: Api<Job> = Api::namespaced(self.local.clone(), &self.ns);
        let jobs = &jobs;
        poll(
            &format!("job {name} condition {condition}"),
            timeout,
            || async move {
                let job = jobs.get(name).await?;
                let status = job.status.clone().unwrap_or_default();
                if let Some(c) = job_condition(&status, "Failed").filter(|_| condition != "Failed")
                {
                    bail!("job {name} failed: {:?} {:?}", c.reason, c.message);
                }
                Ok(job_condition(&status, condition).is_some().then_some(()))
            },
        )
        .await?;
        let out = self.kubectl(&["get", "job", name, "-o", "json"]).await?;
        serde_json::from_str(&out).context("parsing kubectl's job")
    }

    /// The Job's pods as `kubectl get pods -l job-name=NAME` lists them.
    async fn job_pods(&self, job: &str) -> Result<Vec<Pod>> {
        let out = self
            .kubectl(&[
                "get",
                "pods",
                "-l",
                &format!("job-name={job}"),
                "-o",
                "json",
            ])
            .await?;
        let list: Value = serde_json::from_str(&out)?;
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|p| serde_json::from_value(p).context("parsing a pod"))
            .collect()
    }

    async fn remote_pods(&self, uid: &str) -> Result<Vec<Pod>> {
        Ok(Api::<Pod>::all(self.remote.clone())
            .list(&by_source(uid))
            .await?
            .items)
    }

    /// The remote pod, ConfigMaps and Secrets made for a local pod.
    async fn remote_objects(&self, uid: &str) -> Result<(Vec<Pod>, Vec<ConfigMap>, Vec<Secret>)> {
        let lp = by_source(uid);
        Ok((
            self.remote_pods(uid).await?,
            Api::<ConfigMap>::all(self.remote.clone())
                .list(&lp)
                .await?
                .items,
            Api::<Secret>::all(self.remote.clone())
                .list(&lp)
                .await?
                .items,
        ))
    }

    async fn wait_node_ready(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.local.clone());
        let nodes = &nodes;
        poll(
            &format!("virtual node {} Ready", self.node),
            Duration::from_secs(120),
            || async move {
                let Some(node) = nodes.get_opt(&self.node).await? else {
                    return Ok(None);
                };
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                Ok(ready.then_some(()))
            },
        )
        .await
    }

    /// Deletes the local namespace (the provider deletes what is left on the
    /// remote side), checks the remote side is empty, then deletes the remote
    /// namespace the plugin created (the plugin never deletes namespaces).
    async fn cleanup(&self, ns: testbed::TestNamespace) -> Result<()> {
        let remote_pods: Api<Pod> = Api::all(self.remote.clone());
        let ours = ListParams::default().labels(&format!(
            "{}={}",
            keys::LABEL_OFFLOADING,
            keys::OFFLOADING_VALUE
        ));
        let from_ns = |p: &Pod| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(keys::ANNOTATION_SOURCE_NAMESPACE))
                .is_some_and(|n| *n == self.ns)
        };
        let mut remote_namespaces: BTreeSet<String> = remote_pods
            .list(&ours)
            .await?
            .items
            .iter()
            .filter(|p| from_ns(p))
            .filter_map(|p| p.metadata.namespace.clone())
            .collect();
        // The plugin's default mapping, in case no pod is left to name it.
        remote_namespaces.insert(format!("offloading-{}", self.ns));
        ns.delete().await?;
        let remote_pods = &remote_pods;
        let ours = &ours;
        let from_ns = &from_ns;
        poll(
            "the remote pods of the deleted namespace to be gone",
            Duration::from_secs(180),
            || async move {
                let left: Vec<String> = remote_pods
                    .list(ours)
                    .await?
                    .items
                    .iter()
                    .filter(|p| from_ns(p))
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                Ok(left.is_empty().then_some(()))
            },
        )
        .await?;
        for n in remote_namespaces {
            self.tb
                .remote
                .run_kubectl(&[
                    "delete",
                    "namespace",
                    &n,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .await?;
        }
        Ok(())
    }
}

fn by_source(uid: &str) -> ListParams {
    ListParams::default().labels(&format!("{}={uid}", keys::LABEL_SOURCE_POD_UID))
}

/// Polls `check` every [`POLL`] until it returns a value, for at most `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        // An error ends the wait only when it says the awaited state cannot come
        // (those bail with "ended" / "failed"); API hiccups are retried.
        let last_error = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) => {
                let msg = format!("{e:#}");
                if msg.contains(" ended ") || msg.contains(" failed: ") {
                    return Err(e);
                }
                Some(e)
            }
        };
        if Instant::now() >= deadline {
            match last_error {
                Some(e) => bail!(
                    "timed out after {}s waiting for {what}; last error: {e:#}",
                    timeout.as_secs()
                ),
                None => bail!("timed out after {}s waiting for {what}", timeout.as_secs()),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A busybox container running `sh -c script`; `$` is escaped as `$$` so the
/// script reaches `sh` verbatim (Kubernetes expands `$(VAR)` in commands).
fn sh(name: &str, script: &str) -> Value {
    json!({
        "name": name,
        "image": BUSYBOX,
        "command": ["sh", "-c", script.replace('$', "$$")],
    })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn expect_phase(pod: &Pod, want: &str) -> Result<()> {
    ensure!(
        phase(pod) == want,
        "pod {} is {:?}, expected {want}: {}",
        pod.metadata.name.as_deref().unwrap_or(""),
        phase(pod),
        describe(pod)
    );
    Ok(())
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<()> {
    ensure!(got == want, "{what}: got {got:?}, expected {want:?}");
    Ok(())
}

fn status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    let s = pod.status.as_ref()?;
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == container)
}

fn terminated<'a>(pod: &'a Pod, container: &str) -> Result<&'a ContainerStateTerminated> {
    status(pod, container)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .with_context(|| format!("container {container} not terminated: {}", describe(pod)))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn condition_time(pod: &Pod, type_: &str) -> Option<std::time::SystemTime> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| time(&c.last_transition_time))
}

fn time(t: &Option<Time>) -> Option<std::time::SystemTime> {
    t.as_ref().map(|t| std::time::SystemTime::from(t.0))
}

fn job_condition<'a>(
    status: &'a k8s_openapi::api::batch::v1::JobStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn describe(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .unwrap_or_else(|| "no status".into())
}
