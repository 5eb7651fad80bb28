//! Remote Events on the local pods, on the two real clusters with the real
//! plugin: an image that does not exist shows the remote pull failure in
//! `kubectl describe pod`, a failing readiness probe shows `Unhealthy` (one
//! local Event counted up, not one per probe), and another caller of the
//! same plugin reads none of these events through `GET /events`.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Event, ExecAction, Probe};
use kube::api::{Api, ListParams, PostParams};
use offload_wire::events::EventsAnswer;

const RUN: Duration = Duration::from_secs(240);

/// The Events section of `kubectl describe pod` (empty until there is one).
async fn described_events(env: &Env, ns: &str, pod: &str) -> String {
    let (ok, out, _) = kubectl(env, ns, &["describe", "pod", pod]).await;
    if !ok {
        return String::new();
    }
    out.split_once("\nEvents:")
        .map(|(_, events)| events.to_string())
        .unwrap_or_default()
}

/// The plugin's `/events` answer for a caller on `node` (the test plugin
/// has no token: the callers differ by node).
async fn plugin_events(plugin: &Plugin, query: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("{}/events?{query}", plugin.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("plugin answers /events");
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_pull_failures_and_probe_failures_show_on_the_local_pod() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-events");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-events", &[&node]).await;

    let image = format!("busybox:offload-no-such-tag-{}", &node[node.len() - 6..]);
    let mut bad = container("main", "true");
    bad.image = Some(image.clone());
    pods.create(
        &PostParams::default(),
        &pod("badimage", &node, "Never", None, bad),
    )
    .await
    .expect("create badimage");
    let mut unready = container("main", "sleep 3600");
    unready.readiness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "echo not-ready-yet; exit 1".into(),
            ]),
        }),
        period_seconds: Some(2),
        ..Default::default()
    });
    pods.create(
        &PostParams::default(),
        &pod("unready", &node, "Never", None, unready),
    )
    .await
    .expect("create unready");

    // What the remote kubelet says about the pull, under the local pod.
    let pulled = wait_for("the pull failure in kubectl describe", RUN, async || {
        let ev = described_events(&env, &ns, "badimage").await;
        let failed = ev
            .lines()
            .any(|l| l.contains("Warning") && l.contains("Failed") && l.contains(&image));
        let err = ev.contains("ErrImagePull") || ev.contains("ImagePullBackOff");
        (failed && err).then_some(ev)
    })
    .await;
    eprintln!("kubectl describe pod badimage, Events:{pulled}");
    assert!(
        pulled.contains("offload-provider"),
        "written by the provider: {pulled}"
    );
    assert!(
        !pulled.contains(&remote_namespace(&ns)),
        "no remote namespace in what the user reads: {pulled}"
    );

    let probed = wait_for("Unhealthy in kubectl describe", RUN, async || {
        let ev = described_events(&env, &ns, "unready").await;
        ev.lines()
            .any(|l| {
                l.contains("Warning")
                    && l.contains("Unhealthy")
                    && l.contains("Readiness probe failed")
            })
            .then_some(ev)
    })
    .await;
    eprintln!("kubectl describe pod unready, Events:{probed}");

    // Deduplicated: the repeated probe failure is one local Event whose
    // count grows, as the kubelet's would be.
    let events: Api<Event> = Api::namespaced(env.local.clone(), &ns);
    let counted = wait_for("the Unhealthy Event counted up", RUN, async || {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let unhealthy: Vec<&Event> = list
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Unhealthy")
                    && e.involved_object.name.as_deref() == Some("unready")
            })
            .collect();
        assert!(
            unhealthy.len() <= 1,
            "one local Event per series, got {}",
            unhealthy.len()
        );
        unhealthy.first().and_then(|e| e.count).filter(|c| *c >= 3)
    })
    .await;
    eprintln!("Unhealthy counted {counted} times");

    // The attack: another caller of the same plugin asks for events and
    // gets none of this caller's, with or without a cursor.
    let (code, body) = plugin_events(&plugin, &format!("node={node}")).await;
    assert_eq!(code, 200, "{body}");
    let mine: EventsAnswer = serde_json::from_str(&body).expect("events answer");
    assert!(
        mine.events.iter().any(|e| e.pod.namespace == ns),
        "the caller itself reads its pods' events (control): {body}"
    );
    for query in [
        "node=vn-intruder",
        "node=vn-intruder&since=0.0",
        "node=vn-intruder&since=x",
    ] {
        let (code, body) = plugin_events(&plugin, query).await;
        assert_eq!(code, 200, "{body}");
        let theirs: EventsAnswer = serde_json::from_str(&body).expect("events answer");
        assert!(
            theirs.events.iter().all(|e| e.pod.namespace != ns),
            "another caller reads this caller's events: {body}"
        );
    }
    let (code, body) = plugin_events(&plugin, "since=x").await;
    assert_eq!(code, 400, "a caller must name its node: {body}");

    // Restarts of the plugin (a new cursor epoch, its ring refilled from a
    // fresh list) and of the provider (no memory) write no second Event for
    // a series: the restarted provider counts the same Event up.
    plugin.restart().await;
    prov.shutdown().await;
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    wait_for(
        "the same Unhealthy Event counted up after the restarts",
        RUN,
        async || {
            let list = events.list(&ListParams::default()).await.ok()?.items;
            let unhealthy = list.iter().find(|e| {
                e.reason.as_deref() == Some("Unhealthy")
                    && e.involved_object.name.as_deref() == Some("unready")
            })?;
            unhealthy.count.filter(|c| *c > counted + 2)
        },
    )
    .await;
    let list = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    let mut series = std::collections::BTreeMap::new();
    for e in list.iter().filter(|e| {
        e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("offload-provider")
    }) {
        let key = (
            e.involved_object.name.clone(),
            e.reason.clone(),
            e.message.clone(),
            e.involved_object.field_path.clone(),
        );
        *series.entry(key).or_insert(0) += 1;
    }
    assert!(series.len() >= 4, "remote events mirrored: {series:?}");
    let doubled: Vec<_> = series.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "one local Event per series: {doubled:?}"
    );
    prov.shutdown().await;
}
