//! `/stats/summary` and `/metrics/resource` of the virtual node on the two
//! real clusters, through the real plugin: what `kubectl get --raw
//! /api/v1/nodes/<virtual node>/proxy/...` shows of a busy offloaded pod
//! (its CPU rising, its memory as the remote kubelet reports it), the
//! kubelet's authorization (`nodes/stats`, `nodes/metrics`; that right
//! opens no exec, attach, port-forward or logs, which are `nodes/proxy`), the plugin
//! extension's own checks (token, only the caller's pods), and a plugin
//! without the extension (empty figures, not an error).

mod common;

use std::time::Duration;

use axum::extract::State;
use common::*;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{reflector, watcher};
use offload_provider::client::{ClientSettings, PluginClient};
use offload_provider::config::PluginMode;
use offload_provider::kubelet_api::{
    Auth, AuthorizationMode, KubeletAuthArgs, KubeletState, stats,
};
use offload_provider::metrics::Metrics;
use offload_wire::stats::{PodReference, PodStats, StatsAnswer, StatsRequest, Summary};
use testbed::fixtures;

const RUN: Duration = Duration::from_secs(300);

/// `kubectl get --raw` on the local cluster.
async fn raw(env: &Env, path: &str) -> String {
    let (ok, out, err) = kubectl(env, "default", &["get", "--raw", path]).await;
    assert!(ok, "kubectl get --raw {path}: {err}");
    out
}

async fn summary(env: &Env, node: &str) -> Summary {
    let out = raw(env, &format!("/api/v1/nodes/{node}/proxy/stats/summary")).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary {e}: {out}"))
}

fn pod_of<'a>(s: &'a Summary, ns: &str, name: &str) -> Option<&'a PodStats> {
    s.pods
        .iter()
        .find(|p| p.pod_ref.namespace == ns && p.pod_ref.name == name)
}

fn cpu_ns(p: &PodStats, container: &str) -> Option<u64> {
    let c = p.containers.iter().find(|c| c.name == container)?;
    c.cpu.as_ref()?.usage_core_nano_seconds
}

/// The value of the one sample of `metric` whose labels are `labels` in a
/// Prometheus text, with its timestamp.
fn sample(text: &str, metric: &str, labels: &str) -> Option<(f64, i64)> {
    let head = format!("{metric}{labels} ");
    let line = text.lines().find(|l| l.starts_with(&head))?;
    let mut rest = line[head.len()..].split(' ');
    let v = rest.next()?.parse().ok()?;
    let ts = rest.next()?.parse().ok()?;
    Some((v, ts))
}

/// The pod's memory in the virtual node's Summary is the remote kubelet's:
/// same measurement (time), same bytes.
async fn memory_is_the_remote_kubelets(env: &Env, local: &Pod, ns: &str, node: &str) {
    let remote = remote_pods(&env.remote, &uid(local)).await;
    let rp = remote.first().expect("remote pod");
    let (rns, rname) = (
        rp.metadata.namespace.clone().expect("ns"),
        rp.metadata.name.clone().expect("name"),
    );
    let rnode = rp
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("remote node");
    let (ours, theirs) = wait_for("one memory measurement read both ways", RUN, async || {
        let req = http::Request::get(format!("/api/v1/nodes/{rnode}/proxy/stats/summary"))
            .body(Vec::new())
            .ok()?;
        let direct: Summary = env.remote.request(req).await.ok()?;
        let theirs = pod_of(&direct, &rns, &rname)?
            .containers
            .first()?
            .memory
            .clone()?;
        let s = summary(env, node).await;
        let ours = pod_of(&s, ns, "busy")?.containers.first()?.memory.clone()?;
        (ours.time == theirs.time).then_some((ours, theirs))
    })
    .await;
    assert!(ours.working_set_bytes.is_some_and(|b| b > 0));
    assert_eq!(ours.working_set_bytes, theirs.working_set_bytes);
    assert_eq!(ours.usage_bytes, theirs.usage_bytes);
    assert_eq!(ours.rss_bytes, theirs.rss_bytes);
}

/// The plugin's extension asked directly: the pod is reported to the
/// caller that created it (this virtual node), by name or in "all my pods",
/// and to no other caller, even one that names it.
async fn only_the_callers_pods(plugin: &Plugin, local: &Pod, node: &str) {
    let me = PodReference {
        name: local.metadata.name.clone().expect("name"),
        namespace: local.metadata.namespace.clone().expect("ns"),
        uid: uid(local),
    };
    let ask = async |node_name: &str, pods: Option<Vec<PodReference>>| {
        let req = StatsRequest {
            node_name: node_name.into(),
            pods,
        };
        let r = reqwest::Client::new()
            .post(format!("{}/stats/summary", plugin.url()))
            .json(&req)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let a: StatsAnswer = r.json().await.expect("answer");
        assert!(a.errors.is_empty(), "{:?}", a.errors);
        a.summary
            .pods
            .into_iter()
            .map(|p| p.pod_ref)
            .collect::<Vec<_>>()
    };
    assert_eq!(ask(node, Some(vec![me.clone()])).await, vec![me.clone()]);
    assert!(ask(node, None).await.contains(&me), "all of my pods");
    assert_eq!(ask("someone-else", Some(vec![me.clone()])).await, vec![]);
    assert!(!ask("someone-else", None).await.contains(&me));
    let r = reqwest::Client::new()
        .post(format!("{}/stats/summary", plugin.url()))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400, "a request without nodeName");
}

/// A plugin whose remote account may watch pods but not `get nodes/proxy`
/// (impersonating a user granted only that): no figures, and the answer
/// says why without naming the remote node.
async fn without_nodes_proxy_the_answer_says_why(env: &Env, local: &Pod, node: &str) {
    let user = format!("offload-stats-test-{node}");
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    }))
    .expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .expect("binding");
    let roles: Api<ClusterRole> = Api::all(env.remote.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(env.remote.clone());
    roles
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let kubeconfig = kube::config::Kubeconfig::read_from(&env.tb.remote.kubeconfig).expect("kc");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info.impersonate = Some(user.clone());
    let restricted = kube::Client::try_from(config).expect("client");
    let mut pc = offload_plugin::PluginConfig::for_tests();
    pc.listen = offload_plugin::Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    pc.remote_minor_version = Some(20);
    let plugin = offload_plugin::start(pc, restricted).await.expect("plugin");
    assert!(
        plugin.wait_ready(Duration::from_secs(120)).await,
        "pods readable"
    );
    let req = StatsRequest {
        node_name: node.into(),
        pods: Some(vec![PodReference {
            name: "busy".into(),
            namespace: local.metadata.namespace.clone().expect("ns"),
            uid: uid(local),
        }]),
    };
    let r = reqwest::Client::new()
        .post(format!("http://{}/stats/summary", plugin.addr()))
        .json(&req)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let a: StatsAnswer = r.json().await.expect("answer");
    assert!(a.summary.pods.is_empty(), "{a:?}");
    assert_eq!(
        a.errors,
        vec![
            "no figures for 1 pod(s): the plugin may not read remote kubelet stats \
             (its RBAC needs get on nodes/proxy)"
                .to_string()
        ]
    );
    plugin.shutdown().await;
    let _ = bindings.delete(&user, &DeleteParams::default()).await;
    let _ = roles.delete(&user, &DeleteParams::default()).await;
}

/// `/metrics/resource` has the pod's samples, CPU rising between reads.
async fn cpu_rises_in_the_metrics_text(env: &Env, ns: &str, node: &str) {
    let labels = format!("{{container=\"main\",namespace=\"{ns}\",pod=\"busy\"}}");
    let path = format!("/api/v1/nodes/{node}/proxy/metrics/resource");
    let text = raw(env, &path).await;
    let (cpu1, ts1) = sample(&text, "container_cpu_usage_seconds_total", &labels)
        .unwrap_or_else(|| panic!("container cpu in {text}"));
    let (mem, _) = sample(&text, "container_memory_working_set_bytes", &labels)
        .unwrap_or_else(|| panic!("container memory in {text}"));
    assert!(mem > 0.0, "{text}");
    assert!(text.contains("\nscrape_error 0\n"), "{text}");
    assert!(
        text.contains("# TYPE node_cpu_usage_seconds_total counter\n"),
        "{text}"
    );
    let pod_labels = format!("{{namespace=\"{ns}\",pod=\"busy\"}}");
    assert!(
        sample(&text, "pod_cpu_usage_seconds_total", &pod_labels).is_some(),
        "{text}"
    );
    let (cpu2, ts2) = wait_for(
        "cpu rising in /metrics/resource",
        Duration::from_secs(90),
        async || {
            let text = raw(env, &path).await;
            sample(&text, "container_cpu_usage_seconds_total", &labels)
                .filter(|(v, _)| *v > cpu1 + 1.0)
        },
    )
    .await;
    assert!(cpu2 > cpu1 && ts2 > ts1, "{cpu1}@{ts1} -> {cpu2}@{ts2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pods_cpu_rises_and_its_memory_is_the_remote_kubelets() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-stats");
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-stats", &[&node]).await;
    let busy: Pod = pod(
        "busy",
        &node,
        "Never",
        None,
        container("main", "while :; do :; done"),
    );
    pods.create(&PostParams::default(), &busy)
        .await
        .expect("create busy");
    let local = wait_phase(&pods, "busy", "Running", RUN).await;

    // The remote kubelet needs a housekeeping round before it has figures.
    let first = wait_for("busy's CPU in the summary", RUN, async || {
        let s = summary(&env, &node).await;
        let p = pod_of(&s, &ns, "busy")?;
        cpu_ns(p, "main").filter(|n| *n > 0).map(|_| s.clone())
    })
    .await;
    let p1 = pod_of(&first, &ns, "busy").expect("busy");
    assert_eq!(p1.pod_ref.uid, uid(&local), "podRef names the local pod");
    assert_eq!(first.node.node_name, node);
    let c1 = cpu_ns(p1, "main").expect("cpu");
    let node_cpu = first
        .node
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds);
    assert!(
        node_cpu >= Some(c1),
        "the node sums its pods: {node_cpu:?} < {c1}"
    );
    // Rising: a spinning shell uses about one core.
    let second = wait_for("busy's CPU rising", Duration::from_secs(90), async || {
        let s = summary(&env, &node).await;
        let c = cpu_ns(pod_of(&s, &ns, "busy")?, "main")?;
        (c > c1 + 1_000_000_000).then_some(c)
    })
    .await;
    assert!(second > c1);

    memory_is_the_remote_kubelets(&env, &local, &ns, &node).await;
    only_the_callers_pods(&plugin, &local, &node).await;
    without_nodes_proxy_the_answer_says_why(&env, &local, &node).await;
    cpu_rises_in_the_metrics_text(&env, &ns, &node).await;

    delete_all_pods(&pods, RUN).await;
    prov.shutdown().await;
    plugin.stop().await;
}

/// A ServiceAccount of `ns` and its token (1.20: the token Secret the
/// token controller adds to the account).
async fn service_account_token(env: &Env, ns: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(env.local.clone(), ns);
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("sa");
    accounts
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount");
    let secrets: Api<Secret> = Api::namespaced(env.local.clone(), ns);
    wait_for(
        &format!("token of {ns}/{name}"),
        Duration::from_secs(60),
        async || {
            let secret = accounts
                .get(name)
                .await
                .ok()?
                .secrets?
                .into_iter()
                .next()?
                .name?;
            let token = secrets
                .get(&secret)
                .await
                .ok()?
                .data?
                .get("token")?
                .0
                .clone();
            String::from_utf8(token).ok()
        },
    )
    .await
}

/// (status, body) of GET `url` on the provider's kubelet port with `token`.
async fn get(url: &str, token: &str) -> (u16, String) {
    send(reqwest::Method::GET, url, token).await
}

async fn send(method: reqwest::Method, url: &str, token: &str) -> (u16, String) {
    let c = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let r = c
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// `get nodes/stats` on `node` only (what metrics-server-like readers
/// hold) for ServiceAccount `ns/sa`; returns the ClusterRole(Binding) name.
async fn grant_nodes_stats(env: &Env, node: &str, ns: &str, sa: &str) -> String {
    let name = format!("offload-test-{node}-stats");
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["nodes/stats"],
                   "resourceNames": [node], "verbs": ["get"]}]
    }))
    .expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
    }))
    .expect("binding");
    let roles: Api<ClusterRole> = Api::all(env.local.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(env.local.clone());
    roles
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");

    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_need_nodes_stats_and_metrics_need_nodes_metrics() {
    let env = env().await;
    let mut plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-stauthz");
    let (ns, _cleanup, _pods) = test_namespace(&env, "prov-stauthz", &[&node]).await;
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;
    let nobody = service_account_token(&env, &ns, "nobody").await;
    let reader = service_account_token(&env, &ns, "reader").await;
    let name = grant_nodes_stats(&env, &node, &ns, "reader").await;
    let base = format!(
        "https://{}:{}",
        env.tb.local.node_ip,
        prov.kubelet_addr().port()
    );
    let (summary, metrics) = (
        format!("{base}/stats/summary"),
        format!("{base}/metrics/resource"),
    );
    let forbidden = |user: &str, sub: &str| {
        format!(
            "Forbidden (user=system:serviceaccount:{ns}:{user}, verb=get, resource=nodes, subresource={sub})"
        )
    };
    assert_eq!(
        get(&summary, &nobody).await,
        (403, forbidden("nobody", "stats"))
    );
    assert_eq!(
        get(&metrics, &nobody).await,
        (403, forbidden("nobody", "metrics"))
    );
    // RBAC is read through a cache on the apiserver: the grant may take a moment.
    let (status, body) = wait_for(
        "reader allowed nodes/stats",
        Duration::from_secs(30),
        async || {
            let r = get(&summary, &reader).await;
            (r.0 != 403).then_some(r)
        },
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let s: Summary = serde_json::from_str(&body).expect("summary");
    assert_eq!(s.node.node_name, node);
    assert!(s.pods.is_empty(), "no pods on the node: {body}");
    assert_eq!(
        s.node.cpu.and_then(|c| c.usage_core_nano_seconds),
        Some(0),
        "an empty virtual node uses nothing"
    );
    assert_eq!(
        get(&metrics, &reader).await,
        (403, forbidden("reader", "metrics"))
    );
    // exec, attach, port-forward and logs are nodes/proxy, as on a kubelet:
    // holding another right of the node opens none of them, whatever the pod.
    let proxy_denied = |verb: &str| {
        format!(
            "Forbidden (user=system:serviceaccount:{ns}:reader, verb={verb}, resource=nodes, subresource=proxy)"
        )
    };
    for path in [
        format!("/exec/{ns}/any/main?command=id&output=1"),
        format!("/attach/{ns}/any/main?output=1"),
        format!("/portForward/{ns}/any?port=80"),
    ] {
        assert_eq!(
            send(reqwest::Method::POST, &format!("{base}{path}"), &reader).await,
            (403, proxy_denied("create")),
            "POST {path}"
        );
        assert_eq!(
            send(reqwest::Method::GET, &format!("{base}{path}"), &reader).await,
            (403, proxy_denied("get")),
            "GET {path}"
        );
    }
    assert_eq!(
        get(&format!("{base}/containerLogs/{ns}/any/main"), &reader).await,
        (403, proxy_denied("get"))
    );

    let _ = Api::<ClusterRoleBinding>::all(env.local.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(env.local.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    prov.shutdown().await;
    plugin.stop().await;
}

/// A plugin that knows nothing of the extension (every path 404) or that
/// cannot be reached, and a node with one pod.
async fn state_with(plugin_url: &str) -> KubeletState {
    let (store, mut writer) = reflector::store::<Pod>();
    writer.apply_watcher_event(&watcher::Event::Apply(
        fixtures::pod("p")
            .namespace("default")
            .uid("6f1c1f1e-0000-4000-8000-00000000000a")
            .build(),
    ));
    let mut settings = ClientSettings::new(plugin_url, PluginMode::Plugin);
    settings.retries = 0;
    let plugin = PluginClient::new(settings, None).expect("client");
    let metrics = Metrics::new();
    let auth = Auth::new(
        "vn".into(),
        None,
        false,
        KubeletAuthArgs {
            authorization_mode: AuthorizationMode::AlwaysAllow,
            ..Default::default()
        },
        metrics.registry(),
    );
    KubeletState::new("vn".into(), store, plugin, metrics, auth)
}

async fn body(r: axum::response::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn a_plugin_without_stats_gives_empty_figures_and_a_dead_one_an_error() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    let app = axum::Router::new().fallback(async move || {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (axum::http::StatusCode::NOT_FOUND, "no such endpoint")
    });
    tokio::spawn(async move { axum::serve(l, app).await });
    let st = state_with(&format!("http://{addr}")).await;
    let (status, text) = body(stats::summary(State(st.clone())).await).await;
    assert_eq!(status, 200, "{text}");
    let s: Summary = serde_json::from_str(&text).expect("summary");
    assert!(s.pods.is_empty());
    assert_eq!(s.node.memory.and_then(|m| m.working_set_bytes), Some(0));
    let (status, text) = body(stats::resource_metrics(State(st)).await).await;
    assert_eq!(status, 200);
    assert!(text.contains("\nnode_cpu_usage_seconds_total 0 "), "{text}");
    assert!(text.ends_with("\nscrape_error 0\n"), "{text}");
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a plugin that answered 404 is not asked on every scrape"
    );

    // Nobody listens: the kubelet's answers to a failed collection.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let st = state_with(&format!("http://{dead}")).await;
    let (status, text) = body(stats::summary(State(st.clone())).await).await;
    assert_eq!(status, 500, "{text}");
    assert!(
        text.starts_with("Internal Error: failed to get node stats"),
        "{text}"
    );
    let (status, text) = body(stats::resource_metrics(State(st)).await).await;
    assert_eq!(status, 200);
    assert!(text.ends_with("\nscrape_error 1\n"), "{text}");
    assert!(!text.contains("node_cpu"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_extension_needs_the_token() {
    let env = env().await;
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "stats-test-token\n").expect("token");
    let mut config = offload_plugin::PluginConfig::for_tests();
    config.listen = offload_plugin::Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    config.token_file = Some(token_file);
    config.insecure_no_auth = false;
    let plugin = offload_plugin::start(config, env.remote.clone())
        .await
        .expect("plugin");
    assert!(plugin.wait_ready(Duration::from_secs(120)).await);
    let url = format!("http://{}/stats/summary", plugin.addr());
    let body = serde_json::json!({"nodeName": "vn-x"});
    let c = reqwest::Client::new();
    let r = c.post(&url).json(&body).send().await.expect("send");
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .bearer_auth("stats-test-token")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let a: StatsAnswer = r.json().await.expect("answer");
    assert!(a.summary.pods.is_empty(), "vn-x has no pods");
    plugin.shutdown().await;
}
