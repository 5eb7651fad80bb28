//! The provider's robustness on the two real clusters with the real plugin
//! (`offload_plugin::start` in-process against the remote cluster): a killed
//! provider, a plugin outage, `kubectl logs` (and one exec) through the local apiserver,
//! missing ConfigMaps, and deletes with the plugin up or down.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, EmptyDirVolumeSource, Pod, Secret, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use testbed::fixtures;
use tokio::io::AsyncBufReadExt;

const RUN: Duration = Duration::from_secs(300);

fn mount(c: &mut k8s_openapi::api::core::v1::Container, volume: &str, path: &str) {
    c.volume_mounts
        .get_or_insert_with(Vec::new)
        .push(fixtures::mount(volume, path));
}

fn with_volumes(mut p: Pod, volumes: Vec<Volume>) -> Pod {
    if let Some(s) = p.spec.as_mut() {
        s.volumes = Some(volumes);
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_50_creates_offloads_each_pod_exactly_once() {
    let env = env().await;
    let plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-kill");
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-kill", &[&node]).await;

    let first = ProviderProcess::spawn(&env, &node, &plugin, 2);
    let creator = {
        let pods = pods.clone();
        let node = node.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                let p = pod(
                    &format!("p{i}"),
                    &node,
                    "Never",
                    None,
                    container("main", "echo offloaded"),
                );
                pods.create(&PostParams::default(), &p)
                    .await
                    .expect("create pod");
            }
        })
    };
    wait_for("the first remote pods", RUN, async || {
        let n: usize = remote_pods_by_uid(&env, &ns).await.values().sum();
        (n >= 3).then_some(())
    })
    .await;
    first.kill();
    creator.await.expect("all 50 local pods created");
    // Creates in flight at the kill may still land; then the remote count is stable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let remote_at_kill: usize = remote_pods_by_uid(&env, &ns).await.values().sum();
    let recorded_at_kill = pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|p| job_id(p).is_some())
        .count();
    eprintln!("at the kill: {remote_at_kill} remote pods, {recorded_at_kill} job ids recorded");
    assert!(
        remote_at_kill < 50,
        "the kill must happen mid-way, {remote_at_kill} of 50 were already remote"
    );

    let second = ProviderProcess::spawn(&env, &node, &plugin, 4);
    let local = wait_for(
        "all 50 pods offloaded and Succeeded",
        Duration::from_secs(600),
        async || {
            let l = pods.list(&ListParams::default()).await.ok()?.items;
            (l.len() == 50
                && l.iter()
                    .all(|p| job_id(p).is_some() && phase(p) == "Succeeded"))
            .then_some(l)
        },
    )
    .await;
    let local_uids: BTreeSet<String> = local.iter().map(uid).collect();
    let remote = remote_pods_by_uid(&env, &ns).await;
    assert_eq!(
        remote.keys().cloned().collect::<BTreeSet<_>>(),
        local_uids,
        "one remote pod per local pod, no strangers"
    );
    assert!(
        remote.values().all(|n| *n == 1),
        "nothing created twice: {remote:?}"
    );

    // Deleting them all leaves nothing behind remotely.
    delete_all_pods(&pods, RUN).await;
    let owned = ListParams::default().labels(offload_wire::keys::LABEL_SOURCE_POD_UID);
    let rns = remote_namespace(&ns);
    wait_for(
        "no remote leftovers",
        Duration::from_secs(120),
        async || {
            let p = Api::<Pod>::namespaced(env.remote.clone(), &rns)
                .list(&owned)
                .await
                .ok()?;
            let c = Api::<ConfigMap>::namespaced(env.remote.clone(), &rns)
                .list(&owned)
                .await
                .ok()?;
            let s = Api::<Secret>::namespaced(env.remote.clone(), &rns)
                .list(&owned)
                .await
                .ok()?;
            (p.items.is_empty() && c.items.is_empty() && s.items.is_empty()).then_some(())
        },
    )
    .await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_outage_keeps_node_ready_keeps_pods_and_resumes() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-outage");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (_, _cleanup, pods) = test_namespace(&env, "prov-outage", &[&node]).await;
    wait_for("node Ready", Duration::from_secs(60), async || {
        let (s, r, _) = node_ready(&env.local, &node).await?;
        (s == "True" && r == "PluginReachable").then_some(())
    })
    .await;

    pods.create(
        &PostParams::default(),
        &pod(
            "before",
            &node,
            "Never",
            None,
            container("main", "echo started; sleep 15; echo finished"),
        ),
    )
    .await
    .expect("create before");
    let before = wait_phase(&pods, "before", "Running", RUN).await;
    let before_uid = uid(&before);

    plugin.stop().await;
    // The node stays Ready (an outage must not evict); the reason says why.
    let (status, _, message) = wait_for(
        "node PluginUnreachable",
        Duration::from_secs(60),
        async || {
            let r = node_ready(&env.local, &node).await?;
            (r.1 == "PluginUnreachable").then_some(r)
        },
    )
    .await;
    assert_eq!(status, "True");
    assert!(!message.is_empty(), "the condition says why");

    pods.create(
        &PostParams::default(),
        &pod(
            "during",
            &node,
            "Never",
            None,
            container("main", "echo created-during-outage"),
        ),
    )
    .await
    .expect("create during");
    // The remote pod finishes while nobody can tell the local cluster.
    wait_for("remote pod finished", RUN, async || {
        let p = remote_pods(&env.remote, &before_uid).await;
        (p.len() == 1 && phase(&p[0]) == "Succeeded").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pods.get("before").await.expect("before kept");
    assert_eq!(phase(&p), "Running", "last known state kept, not failed");
    let p = pods.get("during").await.expect("during kept");
    assert!(
        job_id(&p).is_none(),
        "not offloaded while the plugin is down"
    );
    assert_eq!(phase(&p), "Pending");
    let (s, r, _) = node_ready(&env.local, &node).await.expect("node");
    assert_eq!((s.as_str(), r.as_str()), ("True", "PluginUnreachable"));

    plugin.restart().await;
    wait_for(
        "plugin reachable again",
        Duration::from_secs(60),
        async || (node_ready(&env.local, &node).await?.1 == "PluginReachable").then_some(()),
    )
    .await;
    let before = wait_phase(&pods, "before", "Succeeded", RUN).await;
    assert_eq!(first_terminated(&before).exit_code, 0);
    let during = wait_phase(&pods, "during", "Succeeded", RUN).await;
    assert!(job_id(&during).is_some());
    assert_eq!(remote_pods(&env.remote, &before_uid).await.len(), 1);
    assert_eq!(remote_pods(&env.remote, &uid(&during)).await.len(), 1);

    for n in ["before", "during"] {
        pods.delete(n, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for n in ["before", "during"] {
        wait_gone(&pods, n, Duration::from_secs(120)).await;
    }
    prov.shutdown().await;
    plugin.stop().await;
}

/// Lines of `kubectl logs -f` with the time each arrived, until kubectl exits.
async fn follow(env: &Env, ns: &str, pod: &str) -> (Vec<(Instant, String)>, bool) {
    let mut cmd = tokio::process::Command::from(env.tb.local.kubectl());
    cmd.args(["-n", ns, "logs", "-f", pod])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut got = vec![];
    let read = async {
        while let Ok(Some(l)) = lines.next_line().await {
            got.push((Instant::now(), l));
        }
    };
    tokio::time::timeout(Duration::from_secs(180), read)
        .await
        .expect("kubectl logs -f ends when the container ends");
    let ok = child.wait().await.expect("kubectl exit").success();
    (got, ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_through_the_apiserver() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-logs");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-logs", &[&node]).await;

    // -f: follows a container that prints a line per second.
    pods.create(
        &PostParams::default(),
        &pod(
            "ticker",
            &node,
            "Never",
            None,
            container(
                "main",
                "i=1; while [ $i -le 20 ]; do echo tick $i; i=$((i+1)); sleep 1; done",
            ),
        ),
    )
    .await
    .expect("create ticker");
    let talk_init = container("init", "echo init-1; echo init-2");
    pods.create(
        &PostParams::default(),
        &pod(
            "talk",
            &node,
            "Never",
            Some(talk_init),
            container(
                "main",
                "i=1; while [ $i -le 10 ]; do echo line $i; i=$((i+1)); done; sleep 3600",
            ),
        ),
    )
    .await
    .expect("create talk");
    let mut restarter = container(
        "main",
        "if [ -e /data/ran ]; then echo second run; exec sleep 3600; fi; \
         touch /data/ran; echo first run; exit 1",
    );
    mount(&mut restarter, "data", "/data");
    pods.create(
        &PostParams::default(),
        &with_volumes(
            pod("restarter", &node, "Always", None, restarter),
            vec![Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }],
        ),
    )
    .await
    .expect("create restarter");

    wait_phase(&pods, "ticker", "Running", RUN).await;
    let (lines, ok) = follow(&env, &ns, "ticker").await;
    assert!(ok, "kubectl logs -f exits 0 when the container ends");
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let expected: Vec<String> = (1..=20).map(|i| format!("tick {i}")).collect();
    assert_eq!(text, expected, "every line once, in order");
    let spread = lines[lines.len() - 1].0 - lines[0].0;
    assert!(
        spread >= Duration::from_secs(3),
        "lines arrive over time while the container runs, not at once (spread {spread:?})"
    );

    wait_phase(&pods, "talk", "Running", RUN).await;
    let all: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    let out = wait_for("kubectl logs talk", Duration::from_secs(60), async || {
        let (ok, out, err) = kubectl(&env, &ns, &["logs", "talk"]).await;
        assert!(ok || !err.contains("Unauthorized"), "{err}");
        (ok && out == all).then_some(out)
    })
    .await;
    assert_eq!(out, all);
    let (ok, out, err) = kubectl(&env, &ns, &["logs", "talk", "-c", "main", "--tail=3"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "line 8\nline 9\nline 10\n");
    let (ok, out, err) = kubectl(&env, &ns, &["logs", "talk", "-c", "init"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "init-1\ninit-2\n");

    let restarted = wait_for("restarter restarted once and running", RUN, async || {
        let p = pods.get("restarter").await.ok()?;
        let cs = p.status.clone()?.container_statuses?.into_iter().next()?;
        (cs.restart_count >= 1 && cs.state?.running.is_some()).then_some(p)
    })
    .await;
    assert_eq!(phase(&restarted), "Running");
    let (ok, out, err) = kubectl(&env, &ns, &["logs", "restarter", "--previous"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "first run\n");
    let out = wait_for("current run's log", Duration::from_secs(60), async || {
        let (ok, out, _) = kubectl(&env, &ns, &["logs", "restarter"]).await;
        (ok && !out.is_empty()).then_some(out)
    })
    .await;
    assert_eq!(out, "second run\n");

    // exec reaches the remote container (tests/streaming.rs has the rest).
    let (ok, out, err) = kubectl(
        &env,
        &ns,
        &["exec", "talk", "-c", "main", "--", "echo", "hi"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "hi\n");

    delete_all_pods(&pods, Duration::from_secs(180)).await;
    prov.shutdown().await;
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_configmap_waits_then_offloads_or_fails_after_the_timeout() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-missing");
    let timeout = Duration::from_secs(40);
    let mut cfg = provider_config(&env, &node, &plugin);
    cfg.missing_ref_timeout = timeout;
    let prov = start_provider(&env, cfg).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-missing", &[&node]).await;
    let reads = |name: &str, cm: &str| {
        let mut c = container("main", "test \"$(cat /cfg/greeting)\" = hello-from-cm");
        mount(&mut c, "cfg", "/cfg");
        with_volumes(
            pod(name, &node, "Never", None, c),
            vec![fixtures::config_map_volume("cfg", cm)],
        )
    };
    let created = Instant::now();
    pods.create(&PostParams::default(), &reads("waits", "late-cm"))
        .await
        .expect("create waits");
    pods.create(&PostParams::default(), &reads("gives-up", "never-cm"))
        .await
        .expect("create gives-up");

    // Visible with kubectl: the container's waiting reason and an event.
    wait_for("waiting reason", Duration::from_secs(60), async || {
        let (ok, out, _) = kubectl(
            &env,
            &ns,
            &[
                "get",
                "pod",
                "waits",
                "-o",
                "jsonpath={.status.containerStatuses[0].state.waiting.reason}: \
                 {.status.containerStatuses[0].state.waiting.message}",
            ],
        )
        .await;
        (ok && out.starts_with("CreateContainerConfigError:") && out.contains("late-cm"))
            .then_some(())
    })
    .await;
    wait_for(
        "MissingReference event",
        Duration::from_secs(60),
        async || {
            let (ok, out, _) = kubectl(
                &env,
                &ns,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "reason=MissingReference,involvedObject.name=waits",
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
            )
            .await;
            (ok && out.contains("late-cm")).then_some(())
        },
    )
    .await;
    let waits = pods.get("waits").await.expect("waits");
    assert!(
        job_id(&waits).is_none(),
        "not offloaded without its ConfigMap"
    );
    assert!(remote_pods(&env.remote, &uid(&waits)).await.is_empty());

    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("late-cm".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "greeting".to_string(),
            "hello-from-cm".to_string(),
        )])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(env.local.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create the ConfigMap");
    // Succeeded means the remote container read the ConfigMap's value.
    let waits = wait_phase(&pods, "waits", "Succeeded", RUN).await;
    assert!(job_id(&waits).is_some());
    assert!(
        !events(&env.local, &ns, "waits", "Offloaded")
            .await
            .is_empty()
    );

    let gave_up = wait_phase(&pods, "gives-up", "Failed", RUN).await;
    assert!(
        created.elapsed() >= timeout - Duration::from_secs(2),
        "failed only after missing_ref_timeout ({:?} elapsed)",
        created.elapsed()
    );
    let st = gave_up.status.clone().expect("status");
    assert_eq!(st.reason.as_deref(), Some("ConfigNotFound"));
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("never-cm")),
        "clear reason: {:?}",
        st.message
    );
    let (ok, out, err) = kubectl(
        &env,
        &ns,
        &["get", "pod", "gives-up", "-o", "jsonpath={.status.reason}"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "ConfigNotFound");
    assert!(remote_pods(&env.remote, &uid(&gave_up)).await.is_empty());

    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete all");
    for n in ["waits", "gives-up"] {
        wait_gone(&pods, n, Duration::from_secs(120)).await;
    }
    prov.shutdown().await;
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_remote_objects_and_waits_for_the_plugin() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    // Two virtual nodes on the same plugin: the default delete timeout, and a short one.
    let patient_node = node_name("vn-del");
    let impatient_node = node_name("vn-delto");
    let delete_timeout = Duration::from_secs(20);
    let patient_prov = start_provider(&env, provider_config(&env, &patient_node, &plugin)).await;
    let mut cfg = provider_config(&env, &impatient_node, &plugin);
    cfg.delete_timeout = delete_timeout;
    let impatient_prov = start_provider(&env, cfg).await;
    let (ns, _cleanup, pods) =
        test_namespace(&env, "prov-del", &[&patient_node, &impatient_node]).await;

    // A pod that owns a ConfigMap and a Secret remotely.
    Api::<ConfigMap>::namespaced(env.local.clone(), &ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("app-cfg".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([("a".to_string(), "from-cm".to_string())])),
                ..Default::default()
            },
        )
        .await
        .expect("configmap");
    Api::<Secret>::namespaced(env.local.clone(), &ns)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("app-secret".into()),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([(
                    "b".to_string(),
                    "from-secret".to_string(),
                )])),
                ..Default::default()
            },
        )
        .await
        .expect("secret");
    let mut main = container("main", "cat /cfg/a /sec/b; echo $TOKEN; sleep 3600");
    mount(&mut main, "cfg", "/cfg");
    mount(&mut main, "sec", "/sec");
    main.env = Some(vec![fixtures::env_from_secret("TOKEN", "app-secret", "b")]);
    let owner = with_volumes(
        pod("owner", &patient_node, "Never", None, main),
        vec![
            fixtures::config_map_volume("cfg", "app-cfg"),
            fixtures::secret_volume("sec", "app-secret"),
        ],
    );
    pods.create(&PostParams::default(), &owner)
        .await
        .expect("create owner");
    let owner = wait_phase(&pods, "owner", "Running", RUN).await;
    let owner_uid = uid(&owner);
    assert_eq!(remote_pods(&env.remote, &owner_uid).await.len(), 1);
    let (cms, secrets) = remote_owned(&env.remote, &owner_uid).await;
    assert!(
        cms >= 1 && secrets >= 1,
        "remote pod owns ConfigMaps ({cms}) and Secrets ({secrets})"
    );
    pods.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    wait_gone(&pods, "owner", Duration::from_secs(120)).await;
    wait_for(
        "remote pod and its objects gone",
        Duration::from_secs(120),
        async || {
            (remote_pods(&env.remote, &owner_uid).await.is_empty()
                && remote_owned(&env.remote, &owner_uid).await == (0, 0))
                .then_some(())
        },
    )
    .await;

    // Plugin unreachable while deleting.
    for (name, node) in [("patient", &patient_node), ("impatient", &impatient_node)] {
        pods.create(
            &PostParams::default(),
            &pod(name, node, "Never", None, container("main", "sleep 3600")),
        )
        .await
        .expect("create");
    }
    let patient_uid = uid(&wait_phase(&pods, "patient", "Running", RUN).await);
    wait_phase(&pods, "impatient", "Running", RUN).await;
    plugin.stop().await;
    let deleted = Instant::now();
    for n in ["patient", "impatient"] {
        pods.delete(n, &DeleteParams::default())
            .await
            .expect("delete");
    }
    wait_gone(&pods, "impatient", Duration::from_secs(180)).await;
    assert!(
        deleted.elapsed() >= delete_timeout - Duration::from_secs(2),
        "removed only after delete_timeout ({:?})",
        deleted.elapsed()
    );
    let msgs = events(&env.local, &ns, "impatient", "DeleteTimeout").await;
    assert!(
        msgs.iter().any(|m| m.contains("not confirmed")),
        "a DeleteTimeout event says why: {msgs:?}"
    );
    let patient = pods
        .get("patient")
        .await
        .expect("patient waits for the plugin");
    assert!(patient.metadata.deletion_timestamp.is_some());
    assert!(
        !events(&env.local, &ns, "patient", "DeleteFailed")
            .await
            .is_empty(),
        "the failed remote delete is reported"
    );
    assert_eq!(remote_pods(&env.remote, &patient_uid).await.len(), 1);

    plugin.restart().await;
    wait_gone(&pods, "patient", Duration::from_secs(120)).await;
    wait_for(
        "patient's remote pod gone",
        Duration::from_secs(120),
        async || {
            remote_pods(&env.remote, &patient_uid)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;

    patient_prov.shutdown().await;
    impatient_prov.shutdown().await;
    plugin.stop().await;
}
