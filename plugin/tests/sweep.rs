//! The orphan sweep and the namespace GC on the real remote test cluster,
//! playing what issue 11 found: a second plugin instance, a second replica or
//! a second caller on one remote cluster lost its pods to another's sweep
//! (100 pods created through one instance were deleted by another's sweep
//! 5-10 s later, and deleted again while terminating); remote namespaces
//! piled up forever.
//!
//! Each test runs real plugins in this process with short sweep ages (8 s
//! grace, 5 s liveness window, a sweep every second), its own namespace
//! prefix (no other test's plugin may own its namespaces) and its own
//! instance names, and cleans up after itself.
//!
//! The follow call of a streaming caller (`/status/follow`) is judged here
//! too: it names only its own caller's pods, and a digest alone that does
//! not match proves nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use offload_plugin::PluginConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testbed::TestNamespace;

const GRACE: Duration = Duration::from_secs(8);

/// A plugin of instance `instance` on prefix `prefix` with a fast sweep.
fn sweeping(instance: &str, prefix: &str) -> PluginConfig {
    let mut c = PluginConfig::for_tests();
    c.instance = instance.into();
    c.namespace_prefix = prefix.into();
    c.no_sweep = false;
    c.sweep_interval = Duration::from_secs(1);
    c.orphan_after = GRACE;
    c.orphan_finished_after = GRACE;
    c.caller_alive_within = Duration::from_secs(5);
    c
}

/// A pod that sleeps for an hour, bound to local node `node`: (uid, create
/// body, the pod as /status and /delete take it).
fn sleeper(ns: &str, name: &str, node: &str) -> anyhow::Result<(String, String, Value)> {
    let uid = uid();
    let mut body: Value = serde_json::from_str(&fixture("create_hello.json", ns, &uid)?)?;
    body["pod"]["metadata"]["name"] = json!(name);
    body["pod"]["spec"]["nodeName"] = json!(node);
    body["pod"]["spec"]["containers"][0]["command"] = json!(["sleep", "3600"]);
    let pod = body["pod"].clone();
    Ok((uid, body.to_string(), pod))
}

/// One `/status` call naming `pods` (a caller's round).
async fn status_all(env: &Env, p: &Plugin, pods: &[Value]) -> anyhow::Result<()> {
    let (code, text) = send(
        env,
        Method::GET,
        p.url("/status"),
        serde_json::to_string(pods)?,
    )
    .await?;
    anyhow::ensure!(code == StatusCode::OK, "status answered {code}: {text}");
    Ok(())
}

/// A caller polling `pods` through `p` every second for `how_long`.
async fn poll(env: &Env, p: &Plugin, pods: &[Value], how_long: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        status_all(env, p, pods).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// The remote pod of local UID `uid`, if any.
async fn remote_pod(env: &Env, uid: &str) -> anyhow::Result<Option<Pod>> {
    let (mut pods, _, _) = remote_objects(env, uid).await?;
    Ok(pods.pop())
}

/// The remote pod of `uid` exists and nobody deleted it.
async fn assert_untouched(env: &Env, uid: &str, what: &str) -> anyhow::Result<()> {
    let pod = remote_pod(env, uid)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{what}: remote pod was deleted"))?;
    anyhow::ensure!(
        pod.metadata.deletion_timestamp.is_none(),
        "{what}: remote pod is being deleted"
    );
    Ok(())
}

/// The value of one sample of the plugin's /metrics (0 if absent).
async fn metric(env: &Env, p: &Plugin, sample: &str) -> anyhow::Result<f64> {
    let (_, text) = send(env, Method::GET, p.url("/metrics"), String::new()).await?;
    Ok(text
        .lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0))
}

async fn kept(env: &Env, p: &Plugin, reason: &str) -> anyhow::Result<f64> {
    metric(
        env,
        p,
        &format!("offload_plugin_sweep_pods_kept{{reason=\"{reason}\"}}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_and_two_replicas_on_one_cluster_keep_each_others_pods() -> anyhow::Result<()>
{
    let env = env().await?;
    // One remote namespace for everybody: the worst case.
    let scope = scope_mapped(&env, "swp-two", "swpt")?;
    let ns = scope.local_ns.as_str();
    // Instance A (two replicas: A polled by caller vn-a, A2 by caller vn-a2)
    // and instance B (polled by caller vn-b).
    let (a, a2, b) = tokio::try_join!(
        Plugin::start(&env, sweeping("swp-a", "swpt")),
        Plugin::start(&env, sweeping("swp-a", "swpt")),
        Plugin::start(&env, sweeping("swp-b", "swpt")),
    )?;
    let mut pods_a = Vec::new();
    for i in 0..2 {
        let (uid, body, pod) = sleeper(ns, &format!("a{i}"), "vn-a")?;
        create(&env, &a, &body).await?;
        pods_a.push((uid, pod));
    }
    let (uid_a2, body, pod_a2) = sleeper(ns, "a2", "vn-a2")?;
    create(&env, &a2, &body).await?;
    let mut pods_b = Vec::new();
    for i in 0..2 {
        let (uid, body, pod) = sleeper(ns, &format!("b{i}"), "vn-b")?;
        create(&env, &b, &body).await?;
        pods_b.push((uid, pod));
    }
    let list = |v: &[(String, Value)]| v.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>();
    // Each caller polls its own plugin, well past the grace (8 s).
    let run = Duration::from_secs(30);
    let (names_a, names_b) = (list(&pods_a), list(&pods_b));
    let (ra, ra2, rb) = tokio::join!(
        poll(&env, &a, &names_a, run),
        poll(&env, &a2, std::slice::from_ref(&pod_a2), run),
        poll(&env, &b, &names_b, run),
    );
    ra?;
    ra2?;
    rb?;
    for (uid, _) in pods_a.iter().chain(&pods_b) {
        assert_untouched(&env, uid, "a pod polled through its own plugin").await?;
    }
    assert_untouched(&env, &uid_a2, "the other replica's pod").await?;
    // Why they were kept, as the operator sees it.
    assert_eq!(kept(&env, &b, "foreign_instance").await?, 3.0);
    assert_eq!(kept(&env, &a, "foreign_instance").await?, 2.0);
    assert_eq!(kept(&env, &a, "unknown_caller").await?, 1.0);
    assert_eq!(kept(&env, &a2, "unknown_caller").await?, 2.0);
    for p in [&a, &a2, &b] {
        let deleted = metric(&env, p, "offload_plugin_orphans_deleted_total").await?;
        assert_eq!(deleted, 0.0);
    }
    // The labels the sweep judges by.
    let one = remote_pod(&env, &pods_a[0].0).await?.expect("checked");
    let labels = one.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get(offload_wire::keys::LABEL_PLUGIN_INSTANCE),
        Some(&"swp-a".to_string())
    );
    assert_eq!(
        labels
            .get(offload_wire::keys::LABEL_CALLER)
            .map(String::len),
        Some(16)
    );
    let deletes = pods_a
        .iter()
        .map(|(uid, pod)| (&a, uid, pod))
        .chain([(&a2, &uid_a2, &pod_a2)])
        .chain(pods_b.iter().map(|(uid, pod)| (&b, uid, pod)))
        .map(|(p, uid, pod)| delete_and_wait(&env, p, pod, uid));
    futures::future::try_join_all(deletes).await?;
    for p in [a, a2, b] {
        p.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_callers_pods_survive_while_another_caller_polls() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope_mapped(&env, "swp-part", "swpp")?;
    let ns = scope.local_ns.as_str();
    let p = Plugin::start(&env, sweeping("swp-part", "swpp")).await?;
    let (uid1, body1, pod1) = sleeper(ns, "one", "vn-1")?;
    let (uid2, body2, pod2) = sleeper(ns, "two", "vn-2")?;
    create(&env, &p, &body1).await?;
    create(&env, &p, &body2).await?;
    // Both callers poll; then vn-2 is partitioned away, well past the grace,
    // while vn-1 keeps polling.
    let (r1, r2) = tokio::join!(
        poll(
            &env,
            &p,
            std::slice::from_ref(&pod1),
            Duration::from_secs(4)
        ),
        poll(
            &env,
            &p,
            std::slice::from_ref(&pod2),
            Duration::from_secs(4)
        ),
    );
    r1?;
    r2?;
    poll(
        &env,
        &p,
        std::slice::from_ref(&pod1),
        Duration::from_secs(25),
    )
    .await?;
    assert_untouched(&env, &uid2, "the silent caller's pod").await?;
    assert_untouched(&env, &uid1, "the polling caller's pod").await?;
    let protected =
        kept(&env, &p, "silent_caller").await? + kept(&env, &p, "unknown_caller").await?;
    assert_eq!(protected, 1.0);
    // The partition heals: vn-2 polls again and finds its pod.
    poll(
        &env,
        &p,
        std::slice::from_ref(&pod2),
        Duration::from_secs(3),
    )
    .await?;
    assert_untouched(&env, &uid2, "the silent caller's pod, back").await?;
    assert_eq!(
        metric(&env, &p, "offload_plugin_orphans_deleted_total").await?,
        0.0
    );
    delete_and_wait(&env, &p, &pod1, &uid1).await?;
    delete_and_wait(&env, &p, &pod2, &uid2).await?;
    p.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_of_a_polling_caller_is_swept_exactly_once() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope_mapped(&env, "swp-pos", "swpo")?;
    let ns = scope.local_ns.as_str();
    let p = Plugin::start(&env, sweeping("swp-pos", "swpo")).await?;
    let (kept_uid, body, kept_pod) = sleeper(ns, "kept", "vn-1")?;
    create(&env, &p, &body).await?;
    // The orphan: `sleep` as PID 1 ignores SIGTERM, so the pod stays
    // terminating for its 30 s grace, across many sweeps.
    let (orphan, body, _) = sleeper(ns, "orphan", "vn-1")?;
    let mut body: Value = serde_json::from_str(&body)?;
    body["pod"]["spec"]["terminationGracePeriodSeconds"] = json!(30);
    create(&env, &p, &body.to_string()).await?;
    let started = Instant::now();
    testbed::wait_for(
        "the orphan to be swept",
        Duration::from_secs(90),
        || async {
            status_all(&env, &p, std::slice::from_ref(&kept_pod)).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let pod = remote_pod(&env, &orphan).await?;
            Ok(pod
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(()))
        },
    )
    .await?;
    assert!(started.elapsed() >= GRACE, "swept before its grace ended");
    // It terminates for a while; the sweep keeps running meanwhile.
    poll(
        &env,
        &p,
        std::slice::from_ref(&kept_pod),
        Duration::from_secs(10),
    )
    .await?;
    let terminating = remote_pod(&env, &orphan).await?;
    assert!(
        terminating.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the orphan should still be terminating (30 s grace)"
    );
    assert_eq!(
        metric(&env, &p, "offload_plugin_orphans_deleted_total").await?,
        1.0,
        "deleted exactly once"
    );
    assert_untouched(&env, &kept_uid, "the polled pod").await?;
    delete_and_wait(&env, &p, &kept_pod, &kept_uid).await?;
    wait_gone(&env, &orphan).await?;
    p.stop().await;
    Ok(())
}

/// One `/status/follow` call of the caller on `node`: `uids` sent, or only
/// the count and digest of `digest_of`. Whether the plugin answered matched.
async fn follow(
    env: &Env,
    p: &Plugin,
    node: &str,
    digest_of: &[&str],
    uids: Option<&[&str]>,
) -> anyhow::Result<bool> {
    let body = json!({
        "node": node,
        "count": digest_of.len(),
        "digest": offload_wire::watch::follow_digest(digest_of.iter().copied()),
        "uids": uids,
    });
    let (code, text) = send(env, Method::POST, p.url("/status/follow"), body.to_string()).await?;
    anyhow::ensure!(code == StatusCode::OK, "follow answered {code}: {text}");
    let answer: Value = serde_json::from_str(&text)?;
    Ok(answer["matched"] == json!(true))
}

/// A streaming provider names its pods through `/status/follow`: the pods
/// it lists are kept, the one it no longer lists is swept, another caller
/// cannot keep that one alive by listing its UID, and a digest that does
/// not match (no UIDs) makes nobody alive, so its caller's pods stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_calls_keep_only_the_callers_listed_pods() -> anyhow::Result<()> {
    let env = env().await?;
    let scope = scope_mapped(&env, "swp-fol", "swpf")?;
    let ns = scope.local_ns.as_str();
    let p = Plugin::start(&env, sweeping("swp-fol", "swpf")).await?;
    let mut made = Vec::new();
    for (name, node) in [
        ("a1", "vn-a"),
        ("a2", "vn-a"),
        ("b1", "vn-b"),
        ("d1", "vn-d"),
    ] {
        let (uid, body, _) = sleeper(ns, name, node)?;
        // `sleep` ignores SIGTERM: a short grace keeps the cleanup short.
        let mut body: Value = serde_json::from_str(&body)?;
        body["pod"]["spec"]["terminationGracePeriodSeconds"] = json!(1);
        create(&env, &p, &body.to_string()).await?;
        made.push((uid, body["pod"].clone()));
    }
    let [a1, a2, b1, d1] = [0, 1, 2, 3].map(|i| made[i].0.clone());
    let round = async || -> anyhow::Result<()> {
        follow(&env, &p, "vn-a", &[&a1], Some(&[&a1])).await?;
        // Caller B lists A's a2 too: it names nothing of A's.
        follow(&env, &p, "vn-b", &[&a2, &b1], Some(&[&a2, &b1])).await?;
        // Caller D sends a digest of nothing: it does not match its pod.
        let matched = follow(&env, &p, "vn-d", &[], None).await?;
        anyhow::ensure!(!matched, "a wrong digest was answered matched");
        Ok(())
    };
    let started = Instant::now();
    testbed::wait_for("a2 to be swept", Duration::from_secs(90), || async {
        round().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pod = remote_pod(&env, &a2).await?;
        Ok(pod
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;
    assert!(started.elapsed() >= GRACE, "swept before its grace ended");
    let end = Instant::now() + GRACE + Duration::from_secs(4);
    while Instant::now() < end {
        round().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_untouched(&env, &a1, "a1, listed by its caller").await?;
    assert_untouched(&env, &b1, "b1, listed by its caller").await?;
    assert_untouched(&env, &d1, "d1, whose caller only sent a wrong digest").await?;
    // a2 is being deleted, so A's running pods are exactly a1 now.
    assert!(
        follow(&env, &p, "vn-a", &[&a1], None).await?,
        "the digest of a1 alone should match caller A's running pods"
    );
    assert!(
        metric(
            &env,
            &p,
            "offload_plugin_follow_calls_total{result=\"listed\"}"
        )
        .await?
            > 0.0
    );
    for (_, pod) in &made {
        let (code, text) = send(&env, Method::POST, p.url("/delete"), pod.to_string()).await?;
        anyhow::ensure!(code == StatusCode::OK, "delete answered {code}: {text}");
    }
    for (uid, _) in &made {
        wait_gone(&env, uid).await?;
    }
    eprintln!("cleanup done after {:?}", started.elapsed());
    p.stop().await;
    Ok(())
}

/// A remote namespace with `labels` (its guard deletes it at the end).
async fn namespace(
    env: &Env,
    name: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<TestNamespace> {
    let api: Api<Namespace> = Api::all(env.remote.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns).await?;
    Ok(TestNamespace {
        name: name.into(),
        cluster: env.tb.remote.clone(),
    })
}

/// Whether the namespace exists and is not being deleted.
async fn namespace_live(env: &Env, name: &str) -> anyhow::Result<bool> {
    let api: Api<Namespace> = Api::all(env.remote.clone());
    Ok(api
        .get_opt(name)
        .await?
        .is_some_and(|n| n.metadata.deletion_timestamp.is_none()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_gc_deletes_only_our_empty_namespaces() -> anyhow::Result<()> {
    use offload_wire::keys::{LABEL_MANAGED_BY, LABEL_PLUGIN_INSTANCE, MANAGED_BY_PLUGIN};
    let env = env().await?;
    let scope = scope_mapped(&env, "swp-gc", "swpg")?;
    let local = scope.local_ns.clone();
    let mut cfg = PluginConfig::for_tests();
    cfg.instance = "swp-gc".into();
    cfg.namespace_prefix = "swpg".into();
    cfg.namespace_gc_after = Duration::from_secs(10);
    cfg.namespace_gc_interval = Duration::from_secs(2);
    let p = Plugin::start(&env, cfg).await?;

    // Ours, used then emptied: a pod through the plugin, then /delete.
    let (uid, body, pod) = sleeper(&local, "gc", "vn-gc")?;
    create(&env, &p, &body).await?;
    // The instance label the plugin writes on the namespaces it creates
    // (written here too, so this test does not depend on that code path).
    let ns_api: Api<Namespace> = Api::all(env.remote.clone());
    ns_api
        .patch(
            &scope.remote_ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL_PLUGIN_INSTANCE: "swp-gc"}}})),
        )
        .await?;
    delete_and_wait(&env, &p, &pod, &uid).await?;

    // Kept: ours with a pod; another instance's; unlabelled; outside the prefix.
    let ours = [
        (LABEL_MANAGED_BY, MANAGED_BY_PLUGIN),
        (LABEL_PLUGIN_INSTANCE, "swp-gc"),
    ];
    let busy = namespace(&env, &format!("swpg-{local}-busy"), &ours).await?;
    let foreign = namespace(
        &env,
        &format!("swpg-{local}-foreign"),
        &[
            (LABEL_MANAGED_BY, MANAGED_BY_PLUGIN),
            (LABEL_PLUGIN_INSTANCE, "swp-other"),
        ],
    )
    .await?;
    let plain = namespace(&env, &format!("swpg-{local}-plain"), &[]).await?;
    let outside = namespace(&env, &format!("swpx-{local}"), &ours).await?;
    let squatter: Pod = serde_json::from_value(json!({
        "metadata": {"name": "squatter"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c",
            "image": testbed::images::BUSYBOX, "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"]}]}
    }))?;
    // A fresh namespace's service account token may lag under load (the
    // apiserver answers 500 "No API token found ..., retry after ...").
    testbed::wait_for(
        "the squatter pod created",
        Duration::from_secs(60),
        || async {
            match Api::<Pod>::namespaced(env.remote.clone(), &busy.name)
                .create(&PostParams::default(), &squatter)
                .await
            {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(e)) if e.message.contains("service account") => Ok(None),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await?;

    let started = Instant::now();
    testbed::wait_for(
        "the empty namespace to be collected",
        Duration::from_secs(90),
        || async { Ok((!namespace_live(&env, &scope.remote_ns).await?).then_some(())) },
    )
    .await?;
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "collected too early"
    );
    // Two more scans past the age of the others.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for n in [&busy, &foreign, &plain, &outside] {
        assert!(
            namespace_live(&env, &n.name).await?,
            "{} was deleted",
            n.name
        );
    }
    assert_eq!(
        metric(
            &env,
            &p,
            "offload_plugin_namespace_gc_total{result=\"deleted\"}"
        )
        .await?,
        1.0
    );

    // The plugin sets the namespace up again on the next create (retry while
    // the old one terminates).
    let (uid, body, pod) = sleeper(&local, "again", "vn-gc")?;
    testbed::wait_for(
        "a create in the collected namespace",
        Duration::from_secs(120),
        || async {
            let (code, _) = send(&env, Method::POST, p.url("/create"), body.clone()).await?;
            if code != StatusCode::OK {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Ok((code == StatusCode::OK).then_some(()))
        },
    )
    .await?;
    assert!(remote_pod(&env, &uid).await?.is_some());
    delete_and_wait(&env, &p, &pod, &uid).await?;
    p.stop().await;
    Ok(())
}
