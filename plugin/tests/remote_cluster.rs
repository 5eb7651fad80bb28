//! The plugin on the real remote test cluster (Kubernetes 1.20, real kubelet):
//! every endpoint with the JSON interLink 0.6 sends (fixtures in
//! tests/fixtures), idempotency, restart safety, logs, the orphan sweep.
//!
//! Needs the test clusters: `bash testbed/scripts/testbed.sh up` (the tests
//! bring them up themselves if needed, and fail, never skip, without them).

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use offload_plugin::PluginConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;

const RUN: Duration = Duration::from_secs(120);

/// Everything the process logs (plugin at trace, the rest at debug), to check
/// that no secret value is ever printed.
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer_buf = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,offload_plugin=trace",
            ))
            .with_ansi(false)
            .with_writer(move || LogWriter(writer_buf.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pod_through_every_endpoint() -> anyhow::Result<()> {
    let logs_seen = captured_logs();
    let (env, scope, p, uid, body, pod) = case("plugin-full", "create_full.json").await?;

    // create: 200 with the local UID and the remote pod's UID as job id.
    let created = create(&env, &p, &body).await?;
    assert_eq!(created["PodUID"], uid.as_str());
    let remote_name = format!("full-{uid}");
    let pods: Api<Pod> = Api::namespaced(env.remote.clone(), &scope.remote_ns);
    let remote = pods.get(&remote_name).await?;
    assert_eq!(created["PodJID"].as_str(), remote.metadata.uid.as_deref());

    // What crossed and what did not.
    let labels = remote.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("interlink.io/source.pod_uid"), Some(&uid));
    assert_eq!(labels.get("app").map(String::as_str), Some("full"));
    let ann = remote.metadata.annotations.clone().unwrap_or_default();
    assert!(!ann.contains_key("interlink.eu/wg-private-key"));
    let spec = remote.spec.clone().unwrap_or_default();
    assert_ne!(spec.node_name.as_deref(), Some("virtual-node"));
    let volumes: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert!(
        !volumes.contains(&"kube-api-access-x7k2p".to_string()),
        "{volumes:?}"
    );
    let writer = spec
        .containers
        .iter()
        .find(|c| c.name == "writer")
        .expect("writer");
    assert!(writer.readiness_probe.is_some() && writer.lifecycle.is_some());
    assert_eq!(writer.working_dir.as_deref(), Some("/shared"));
    assert!(
        writer
            .env
            .iter()
            .flatten()
            .all(|e| e.name != "KUBERNETES_SERVICE_HOST"),
        "the local cluster's API address must not cross"
    );

    // ConfigMaps/Secrets: created, owned by the remote pod; the local SA token not.
    let cms: Api<ConfigMap> = Api::namespaced(env.remote.clone(), &scope.remote_ns);
    let cm = cms.get(&format!("settings-{uid}")).await?;
    assert_eq!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("mode"))
            .map(String::as_str),
        Some("fast")
    );
    let owner = cm.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| o.uid.as_str()),
        remote.metadata.uid.as_deref()
    );
    let (_, _, secrets) = remote_objects(&env, &uid).await?;
    assert_eq!(
        secrets.len(),
        2,
        "db + the projected volume data, not the SA token"
    );
    assert!(secrets.iter().all(|s| {
        s.data
            .as_ref()
            .is_none_or(|d| d.values().all(|v| v.0 != b"local-sa-token"))
    }));

    // status: every container, init included, with real states.
    let st = wait_status(&env, &p, &pod, "writer and reader running", RUN, |s| {
        s.containers.len() == 2 && s.containers.iter().all(|c| state_of(c).0 == "running")
    })
    .await?;
    assert_eq!(st.name, "full");
    assert_eq!(st.namespace, scope.local_ns);
    assert_eq!(st.uid, uid);
    assert_eq!(
        st.jid.as_str(),
        remote.metadata.uid.as_deref().unwrap_or_default()
    );
    let names: Vec<&str> = st.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["writer", "reader"]);
    assert_eq!(st.init_containers.len(), 1);
    assert_eq!(
        state_of(&st.init_containers[0]),
        ("terminated", Some("Completed".into()), Some(0))
    );

    // logs: container selection, init container, volumes, env from secretKeyRef.
    let ns = &scope.local_ns;
    let full = PodLogs {
        env: &env,
        plugin: &p,
        ns,
        uid: &uid,
        pod: "full",
    };
    let (code, writer_log) = full.of("writer", json!({})).await?;
    assert_eq!(code, StatusCode::OK, "{writer_log}");
    for line in [
        "mode=fast",
        "secret=hunter2",
        "env=hunter2",
        "plain=plain-value",
        &format!("ns={ns}"),
        "cfgproj=fast",
        "init=from-init",
        "writer-done",
    ] {
        assert!(
            writer_log.lines().any(|l| l == line),
            "writer log lacks {line:?}:\n{writer_log}"
        );
    }
    let (code, init_log) = full.of("init", json!({})).await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(init_log.trim(), "init says hello");
    let reader_log = testbed::wait_for("reader to tick 3 times", RUN, || async {
        let (_, l) = full.of("reader", json!({})).await?;
        Ok(l.contains("tick 3").then_some(l))
    })
    .await?;
    assert!(
        reader_log.starts_with("reader got shared-data\n"),
        "{reader_log}"
    );

    // Tail, Bytes (limitBytes), Timestamps.
    let (_, tail) = full.of("reader", json!({"Tail": 2})).await?;
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("tick ")), "{tail}");
    let (_, bytes) = full.of("writer", json!({"Bytes": 5})).await?;
    assert_eq!(bytes, "mode=");
    let (_, ts) = full.of("init", json!({"Timestamps": true})).await?;
    assert!(
        ts.starts_with("20") && ts.trim_end().ends_with(" init says hello"),
        "{ts}"
    );
    let (_, since) = full
        .of("init", json!({"SinceTime": "2999-01-01T00:00:00Z"}))
        .await?;
    assert_eq!(since, "", "nothing was logged after 2999");

    // Follow streams new lines as the container prints them.
    let resp = env
        .http
        .get(p.url("/getLogs"))
        .body(log_body(
            ns,
            &uid,
            "full",
            "reader",
            json!({"Follow": true, "Tail": 1}),
        ))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut ticks: Vec<(std::time::Instant, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ticks.len() < 4 {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("follow stream went quiet; got {ticks:?}"))?
            .ok_or_else(|| anyhow::anyhow!("follow stream ended early; got {ticks:?}"))??;
        for line in String::from_utf8_lossy(&chunk).lines() {
            ticks.push((std::time::Instant::now(), line.to_string()));
        }
    }
    // The first (tail) line may be delayed by a loaded machine and arrive just
    // before the next one; lines printed later must still arrive spread out
    // (about 2 s between the second and the fourth), not in one burst at the end.
    assert!(
        ticks[3].0.duration_since(ticks[1].0) >= Duration::from_millis(1000),
        "lines must arrive as printed (1/s), not all at once: {ticks:?}"
    );
    drop(stream);

    // Unknown container: a 404 that names the containers.
    let (code, msg) = full.of("nope", json!({})).await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(msg.contains("writer"), "{msg}");

    // delete: 200, everything goes; twice is fine.
    let (code, text) = send(&env, Method::POST, p.url("/delete"), pod.to_string()).await?;
    assert_eq!(code, StatusCode::OK, "{text}");
    wait_gone(&env, &uid).await?;
    let (code, _) = send(&env, Method::POST, p.url("/delete"), pod.to_string()).await?;
    assert_eq!(code, StatusCode::OK);
    // The namespace we created stays (it may hold other pods) and carries our label.
    let ns_obj = Api::<k8s_openapi::api::core::v1::Namespace>::all(env.remote.clone())
        .get(&scope.remote_ns)
        .await?;
    assert_eq!(
        ns_obj
            .metadata
            .labels
            .unwrap_or_default()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("offload-plugin")
    );
    p.stop().await;

    // The secret values went through create, status and logs; none was logged.
    let text = String::from_utf8_lossy(&logs_seen.lock().map(|v| v.clone()).unwrap_or_default())
        .to_string();
    assert!(text.contains("pod offloaded"), "log capture works");
    // (also as the byte list a Debug print of a k8s ByteString would show)
    for secret in [
        "hunter2",
        "aHVudGVyMg==",
        "104, 117, 110, 116, 101, 114, 50",
        "local-sa-token",
        "must-not-cross",
    ] {
        assert!(!text.contains(secret), "{secret:?} appears in the logs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_twice_makes_one_pod_and_restart_keeps_serving() -> anyhow::Result<()> {
    let (env, scope, p, uid, body, pod) = case("plugin-idem", "create_hello.json").await?;

    // Concurrent retries: both 200, same job id, one remote pod.
    let (a, b) = tokio::join!(create(&env, &p, &body), create(&env, &p, &body));
    let (a, b) = (a?, b?);
    assert_eq!(a["PodJID"], b["PodJID"]);
    let c = create(&env, &p, &body).await?;
    assert_eq!(a["PodJID"], c["PodJID"]);
    let (pods, _, _) = remote_objects(&env, &uid).await?;
    assert_eq!(pods.len(), 1);

    let st = wait_status(&env, &p, &pod, "hello to complete", RUN, |s| {
        state_of(&s.containers[0]).0 == "terminated"
    })
    .await?;
    assert_eq!(
        state_of(&st.containers[0]),
        ("terminated", Some("Completed".into()), Some(0))
    );

    // A new plugin process answers for pods created by the old one.
    p.stop().await;
    let p2 = Plugin::start(&env, PluginConfig::for_tests()).await?;
    let st2 = status(&env, &p2, &pod).await?;
    assert_eq!(
        state_of(&st2.containers[0]),
        ("terminated", Some("Completed".into()), Some(0))
    );
    assert_eq!(st2.jid, st.jid);
    let hello = PodLogs {
        env: &env,
        plugin: &p2,
        ns: &scope.local_ns,
        uid: &uid,
        pod: "hello",
    };
    let (code, log) = hello.of("c", json!({})).await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(log, "hello world\nline2\nline3\n");
    // Follow on a finished container ends with the container's output.
    let (code, log) = hello.of("c", json!({"Follow": true})).await?;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(log, "hello world\nline2\nline3\n");
    // Empty container name: the only container.
    let (_, log) = hello.of("", json!({"Tail": 1})).await?;
    assert_eq!(log, "line3\n");

    // interLink <= 0.4 sent a one-element array.
    let legacy_uid = common::uid();
    let legacy = fixture("create_legacy_array.json", &scope.local_ns, &legacy_uid)?;
    let created = create(&env, &p2, &legacy).await?;
    assert_eq!(created["PodUID"], legacy_uid.as_str());

    for (u, b) in [(&uid, &body), (&legacy_uid, &legacy)] {
        let (code, _) = send(
            &env,
            Method::POST,
            p2.url("/delete"),
            pod_of(b)?.to_string(),
        )
        .await?;
        assert_eq!(code, StatusCode::OK);
        wait_gone(&env, u).await?;
    }
    p2.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_container_reports_restarts_and_previous_logs() -> anyhow::Result<()> {
    let (env, scope, p, uid, body, pod) = case("plugin-prev", "create_restarting.json").await?;
    create(&env, &p, &body).await?;
    let st = wait_status(&env, &p, &pod, "second run", RUN, |s| {
        s.containers[0].restart_count >= 1 && state_of(&s.containers[0]).0 == "running"
    })
    .await?;
    let last = st.containers[0]
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(last, Some(3));
    let restarting = PodLogs {
        env: &env,
        plugin: &p,
        ns: &scope.local_ns,
        uid: &uid,
        pod: "restarting",
    };
    let (code, prev) = restarting.of("c", json!({"Previous": true})).await?;
    assert_eq!(code, StatusCode::OK, "{prev}");
    assert_eq!(prev, "run 1\n");
    let (_, cur) = restarting.of("c", json!({})).await?;
    assert_eq!(cur, "run 2\n");
    delete_and_wait(&env, &p, &pod, &uid).await?;
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_is_waiting_never_finished() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope(&env, "plugin-unsched")?;
    // Remote placement is the plugin's configuration (the pod's own
    // nodeSelector is for the local scheduler): no remote node is in this pool.
    let mut cfg = PluginConfig::for_tests();
    cfg.node_selector =
        offload_plugin::config::KeyValues([("pool".to_string(), "nowhere".to_string())].into());
    let p = Plugin::start(&env, cfg).await?;
    let uid = uid();
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("create_hello.json", &scope.local_ns, &uid)?)?;
    body["pod"]["spec"]["nodeSelector"] = json!({"offload.dev/local": "virtual-node"});
    body["pod"]["spec"]["initContainers"] =
        json!([{"name": "init", "image": testbed::images::BUSYBOX, "command": ["true"]}]);
    create(&env, &p, &body.to_string()).await?;
    let pod = body["pod"].clone();
    let st = wait_status(&env, &p, &pod, "Unschedulable", RUN, |s| {
        state_of(&s.containers[0]).1.as_deref() == Some("Unschedulable")
    })
    .await?;
    assert_eq!(state_of(&st.containers[0]).0, "waiting");
    assert_eq!(st.init_containers.len(), 1);
    assert_eq!(state_of(&st.init_containers[0]).0, "waiting");
    delete_and_wait(&env, &p, &pod, &uid).await?;
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_sweep_deletes_pods_nobody_asks_about() -> anyhow::Result<()> {
    let env = env().await?;
    // Its own namespace prefix: the sweep only considers namespaces of its
    // prefix, so the other tests' pods (other plugins, same remote cluster)
    // are out of its reach, as they would be for a second plugin in production.
    let scope = scope_mapped(&env, "plugin-sweep", "sweeptest")?;
    let mut cfg = PluginConfig::for_tests();
    cfg.namespace_prefix = "sweeptest".into();
    cfg.no_sweep = false;
    cfg.sweep_interval = Duration::from_secs(1);
    cfg.orphan_after = Duration::from_secs(6);
    cfg.orphan_finished_after = Duration::from_secs(6);
    cfg.caller_alive_within = Duration::from_secs(60);
    let p = Plugin::start(&env, cfg).await?;
    let (kept, orphan) = (uid(), uid());
    let mut kept_body: serde_json::Value =
        serde_json::from_str(&fixture("create_hello.json", &scope.local_ns, &kept)?)?;
    kept_body["pod"]["metadata"]["name"] = json!("kept");
    kept_body["pod"]["spec"]["containers"][0]["command"] = json!(["sleep", "3600"]);
    let kept_body = kept_body.to_string();
    let orphan_body = fixture("create_hello.json", &scope.local_ns, &orphan)?;
    create(&env, &p, &kept_body).await?;
    create(&env, &p, &orphan_body).await?;
    let kept_pod = pod_of(&kept_body)?;
    // The caller keeps polling the kept pod only.
    let started = std::time::Instant::now();
    testbed::wait_for(
        "the orphan to be swept",
        Duration::from_secs(90),
        || async {
            status(&env, &p, &kept_pod).await?;
            let (pods, _, _) = remote_objects(&env, &orphan).await?;
            Ok(pods.is_empty().then_some(()))
        },
    )
    .await?;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "swept before its grace ended"
    );
    let (pods, _, _) = remote_objects(&env, &kept).await?;
    assert_eq!(pods.len(), 1, "a polled pod is never swept");
    delete_and_wait(&env, &p, &kept_pod, &kept).await?;
    p.stop().await;
    Ok(())
}

/// At least 20 bad inputs on the real cluster: each gets its 4xx, and no
/// remote object is left behind for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_4xx_and_leave_nothing_behind() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope(&env, "plugin-bad")?;
    let p = Plugin::start(&env, {
        let mut c = PluginConfig::for_tests();
        c.body_limit = 64 * 1024;
        c
    })
    .await?;
    let ns = scope.local_ns.clone();
    let img = testbed::images::BUSYBOX;
    let mut uids = Vec::new();
    let mut next_uid = || {
        let u = uid();
        uids.push(u.clone());
        u
    };
    let pod = |uid: &str, spec: serde_json::Value| json!({"pod": {"metadata": {"name": "bad", "namespace": ns, "uid": uid}, "spec": spec}, "container": []});
    let c = |extra: serde_json::Value| {
        let mut base = json!({"name": "c", "image": img, "command": ["true"]});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        base
    };
    let cases: Vec<(&str, String, u16)> = vec![
        ("malformed JSON", "{\"pod\": ".into(), 400),
        ("empty body", "".into(), 400),
        ("bare Pod", json!({"metadata": {"name": "x", "namespace": ns, "uid": next_uid()}}).to_string(), 400),
        ("no pod key", json!({"container": []}).to_string(), 400),
        ("two pods in array", json!([pod(&next_uid(), json!({"containers": [c(json!({}))]})), pod(&next_uid(), json!({"containers": [c(json!({}))]}))]).to_string(), 400),
        ("missing uid", json!({"pod": {"metadata": {"name": "bad", "namespace": ns}, "spec": {"containers": [c(json!({}))]}}}).to_string(), 400),
        ("upper-case uid", pod("NOT-A-UID", json!({"containers": [c(json!({}))]})).to_string(), 400),
        ("missing namespace", json!({"pod": {"metadata": {"name": "bad", "uid": next_uid()}, "spec": {"containers": [c(json!({}))]}}}).to_string(), 400),
        ("invalid pod name", json!({"pod": {"metadata": {"name": "Bad Name", "namespace": ns, "uid": next_uid()}, "spec": {"containers": [c(json!({}))]}}}).to_string(), 400),
        ("no spec", json!({"pod": {"metadata": {"name": "bad", "namespace": ns, "uid": next_uid()}}}).to_string(), 400),
        ("no containers", pod(&next_uid(), json!({"containers": []})).to_string(), 400),
        ("containers not a list", pod(&next_uid(), json!({"containers": {"name": "c"}})).to_string(), 400),
        ("duplicate container names", pod(&next_uid(), json!({"containers": [c(json!({})), c(json!({}))]})).to_string(), 400),
        ("container without image", pod(&next_uid(), json!({"containers": [{"name": "c"}]})).to_string(), 400),
        ("mount of an undeclared volume", pod(&next_uid(), json!({"containers": [c(json!({"volumeMounts": [{"name": "v", "mountPath": "/v"}]}))]})).to_string(), 400),
        ("wrong type deep inside", pod(&next_uid(), json!({"containers": [c(json!({"ports": [{"containerPort": "eighty"}]}))]})).to_string(), 400),
        ("hostPath (policy)", pod(&next_uid(), json!({"containers": [c(json!({}))], "volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]})).to_string(), 403),
        ("privileged (policy)", pod(&next_uid(), json!({"containers": [c(json!({"securityContext": {"privileged": true}}))]})).to_string(), 403),
        ("hostPID (policy)", pod(&next_uid(), json!({"hostPID": true, "containers": [c(json!({}))]})).to_string(), 403),
        ("secretKeyRef to a Secret not sent", pod(&next_uid(), json!({"containers": [c(json!({"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}))]})).to_string(), 422),
        ("configMap volume not sent", pod(&next_uid(), json!({"containers": [c(json!({}))], "volumes": [{"name": "v", "configMap": {"name": "absent"}}]})).to_string(), 422),
        ("native sidecar on a 1.20 remote", pod(&next_uid(), json!({"initContainers": [c(json!({"name": "side", "restartPolicy": "Always"}))], "containers": [c(json!({}))]})).to_string(), 422),
        ("gRPC probe on a 1.20 remote", pod(&next_uid(), json!({"containers": [c(json!({"livenessProbe": {"grpc": {"port": 9000}}}))]})).to_string(), 422),
        ("invalid quantity (refused by the remote apiserver)", pod(&next_uid(), json!({"containers": [c(json!({"resources": {"limits": {"cpu": "lots"}}}))]})).to_string(), 422),
        ("body over the limit", format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024)), 413),
    ];
    assert!(cases.len() >= 20);
    for (what, body, want) in cases {
        let (code, text) = send(&env, Method::POST, p.url("/create"), body).await?;
        assert_eq!(code.as_u16(), want, "{what}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{what}: error body is not JSON ({e}): {text}"))?;
        assert!(
            v["error"].is_string() && v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {text}"
        );
    }
    for u in &uids {
        let (pods, cms, secrets) = remote_objects(&env, u).await?;
        assert!(
            pods.is_empty() && cms.is_empty() && secrets.is_empty(),
            "left behind for {u}"
        );
    }
    // Nothing at all in the remote namespace (it exists only if the remote
    // apiserver case created it before refusing the pod).
    let left: Vec<String> = Api::<Pod>::namespaced(env.remote.clone(), &scope.remote_ns)
        .list(&Default::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let secrets: Vec<Secret> = Api::<Secret>::namespaced(env.remote.clone(), &scope.remote_ns)
        .list(
            &kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=offload-plugin"),
        )
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    assert!(secrets.is_empty());
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_pod_deleted_out_of_band_is_reported_failed() -> anyhow::Result<()> {
    let (env, scope, p, uid, body, _) = case("plugin-gone", "create_hello.json").await?;
    let mut body: serde_json::Value = serde_json::from_str(&body)?;
    body["pod"]["spec"]["containers"][0]["command"] = json!(["sleep", "3600"]);
    create(&env, &p, &body.to_string()).await?;
    let pod = body["pod"].clone();
    wait_status(&env, &p, &pod, "running", RUN, |s| {
        state_of(&s.containers[0]).0 == "running"
    })
    .await?;
    // Someone deletes it on the remote cluster, without the plugin.
    let pods: Api<Pod> = Api::namespaced(env.remote.clone(), &scope.remote_ns);
    pods.delete(
        &format!("hello-{uid}"),
        &kube::api::DeleteParams::default().grace_period(0),
    )
    .await?;
    let st = wait_status(&env, &p, &pod, "the loss to be reported", RUN, |s| {
        state_of(&s.containers[0]).0 == "terminated"
    })
    .await?;
    assert_eq!(
        state_of(&st.containers[0]),
        ("terminated", Some("RemotePodDeleted".into()), Some(137))
    );
    delete_and_wait(&env, &p, &pod, &uid).await?;
    p.stop().await;
    Ok(())
}
