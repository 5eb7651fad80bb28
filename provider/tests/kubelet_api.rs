//! The kubelet HTTPS API. Without a cluster: authentication (client
//! certificates from a CA, anonymous 401), logs relayed from a plugin, and
//! the "not supported" answers of streams when the plugin has no streaming. On the real local cluster: authorization
//! by SubjectAccessReview (the attackers get 403, the apiserver and a
//! `nodes/proxy` user 200, `kubectl logs` works) and the TokenReview cap.

use axum::Router;
use axum::body::Bytes;
use axum::routing::any;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::runtime::{reflector, watcher};
use offload_provider::client::{ClientSettings, PluginClient};
use offload_provider::config::PluginMode;
use offload_provider::kubelet_api::{
    Auth, AuthorizationMode, KubeletAuthArgs, KubeletState, router,
};
use offload_provider::metrics::Metrics;
use offload_provider::tls::self_signed;
use offload_runtime::tls::{self, ClientAuth, HANDSHAKE_TIMEOUT};
use testbed::fixtures;
use testbed::pki::{ca, client_identity};
use tokio_util::sync::CancellationToken;

struct Pki {
    ca_pem: String,
    client_pem: String,
    other_client_pem: String,
}

fn pki() -> Pki {
    let good = ca("cluster-ca");
    let bad = ca("someone-else");
    Pki {
        ca_pem: good.pem(),
        client_pem: client_identity(&good, "kube-apiserver-kubelet-client"),
        other_client_pem: client_identity(&bad, "kube-apiserver-kubelet-client"),
    }
}

async fn fake_plugin() -> String {
    let app = Router::new().route(
        "/getLogs",
        any(|body: Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            format!(
                "log of {} tail={}\n",
                v["ContainerName"].as_str().unwrap_or("?"),
                v["Opts"]["Tail"]
            )
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    format!("http://{addr}")
}

async fn start(pki: &Pki) -> (String, CancellationToken) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &pki.ca_pem).expect("write");
    let (certs, key) = self_signed(&["vn".into(), "127.0.0.1".into()]).expect("cert");
    let cfg = tls::server_config(certs, key, ClientAuth::Optional(&ca_file)).expect("tls");

    let (store, mut writer) = reflector::store::<Pod>();
    writer.apply_watcher_event(&watcher::Event::Apply(
        fixtures::pod("hello")
            .namespace("default")
            .uid("6f1c1f1e-0000-4000-8000-000000000000")
            .container(Container {
                name: "c".into(),
                ..Default::default()
            })
            .init_container(Container {
                name: "init".into(),
                ..Default::default()
            })
            .build(),
    ));
    let plugin = PluginClient::new(
        ClientSettings::new(&fake_plugin().await, PluginMode::Plugin),
        None,
    )
    .expect("client");
    // Authentication alone here (no apiserver to authorize with); the
    // webhook authorization is tested on the real cluster below.
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
    let st = KubeletState::new("vn".into(), store, plugin, metrics, auth);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    tokio::spawn(tls::serve_tls(
        l,
        cfg,
        router(st),
        cancel.clone(),
        HANDSHAKE_TIMEOUT,
    ));
    (format!("https://{addr}"), cancel)
}

fn client(identity: Option<&str>) -> reqwest::Client {
    http(identity)
}

fn http(identity: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().tls_danger_accept_invalid_certs(true);
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

#[tokio::test]
async fn anonymous_gets_401_and_ca_signed_client_cert_gets_in() {
    let pki = pki();
    let (base, cancel) = start(&pki).await;
    let anon = http(None);
    for path in [
        "/healthz",
        "/containerLogs/default/hello/c",
        "/pods",
        "/metrics",
    ] {
        let r = anon
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = anon
        .get(format!("{base}/healthz"))
        .bearer_auth("some-token")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401, "tokens without TokenReview are refused");
    // A certificate from another CA fails the handshake or gets 401.
    if let Ok(r) = http(Some(&pki.other_client_pem))
        .get(format!("{base}/healthz"))
        .send()
        .await
    {
        assert_eq!(r.status(), 401);
    }

    let ok = http(Some(&pki.client_pem));
    // (path, status, body when it is checked)
    let cases = [
        ("/healthz", 200, None),
        (
            "/containerLogs/default/hello/init?tailLines=3",
            200,
            Some("log of init tail=3\n"),
        ),
        ("/containerLogs/default/hello/c?tailLines=0", 200, Some("")),
        ("/containerLogs/default/hello/nope", 404, None),
        ("/containerLogs/default/missing/c", 404, None),
        ("/containerLogs/default/hello/c?sinceSeconds=0", 400, None),
    ];
    for (path, status, body) in cases {
        let r = ok.get(format!("{base}{path}")).send().await.expect("send");
        assert_eq!(r.status(), status, "{path}");
        if let Some(body) = body {
            assert_eq!(r.text().await.expect("text"), body, "{path}");
        }
    }
    // Streams: without upgrade headers 400; a plugin without the streaming
    // extension (this one) makes them 501, as before the extension.
    for path in [
        "/exec/default/hello/c?command=sh&output=1",
        "/attach/default/hello/c?output=1",
        "/portForward/default/hello",
    ] {
        let r = ok.post(format!("{base}{path}")).send().await.expect("send");
        assert_eq!(r.status(), 400, "{path}");
        // (HTTP/1.1: HTTP/2 has no Connection/Upgrade headers)
        let h1 = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .http1_only()
            .identity(reqwest::Identity::from_pem(pki.client_pem.as_bytes()).expect("identity"))
            .build()
            .expect("client");
        let r = h1
            .post(format!("{base}{path}"))
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1")
            .header("x-stream-protocol-version", "v4.channel.k8s.io")
            .header("x-stream-protocol-version", "portforward.k8s.io")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 501, "{path}");
        assert!(r.text().await.expect("text").contains("not supported"));
    }
    let r = ok
        .post(format!("{base}/exec/default/hello/c?command=sh"))
        .send()
        .await
        .expect("send");
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("at least 1 of stdin, stdout, stderr")
    );
    let r = ok.get(format!("{base}/pods")).send().await.expect("send");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["items"][0]["metadata"]["name"], "hello");
    cancel.cancel();
}

// ---- On the real local cluster: authorization by SubjectAccessReview ----

mod common;

use std::time::{Duration, Instant};

use common::{
    Env, Plugin, container, env, kubectl, local_pki, node_name, pod, provider_config,
    start_provider, test_namespace, wait_for, wait_phase,
};
use k8s_openapi::api::core::v1::{EnvVar, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use offload_provider::config::Config;

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
        &format!("token of ServiceAccount {ns}/{name}"),
        Duration::from_secs(60),
        async || {
            let sa = accounts.get(name).await.ok()?;
            let secret = sa.secrets?.into_iter().next()?.name?;
            let s = secrets.get(&secret).await.ok()?;
            let token = s.data?.get("token")?.0.clone();
            String::from_utf8(token).ok()
        },
    )
    .await
}

/// A client certificate of the local cluster CA for `subject` (openssl, as
/// the testbed signs its own), with its key, in PEM.
fn ca_signed_identity(env: &Env, subject: &str) -> String {
    let pki = local_pki(env.tb);
    let dir = tempfile::tempdir().expect("tmp");
    let (key, csr, crt, ext) = (
        dir.path().join("k.pem"),
        dir.path().join("r.csr"),
        dir.path().join("c.pem"),
        dir.path().join("ext"),
    );
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").expect("ext");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "req".as_ref(),
        "-newkey".as_ref(),
        "ec".as_ref(),
        "-pkeyopt".as_ref(),
        "ec_paramgen_curve:prime256v1".as_ref(),
        "-nodes".as_ref(),
        "-subj".as_ref(),
        subject.as_ref(),
        "-keyout".as_ref(),
        key.as_os_str(),
        "-out".as_ref(),
        csr.as_os_str(),
    ]);
    let serial = format!("0x{}", uuid::Uuid::new_v4().simple());
    run(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-in".as_ref(),
        csr.as_os_str(),
        "-CA".as_ref(),
        pki.join("ca.crt").as_os_str(),
        "-CAkey".as_ref(),
        pki.join("ca.key").as_os_str(),
        // Not -CAcreateserial: it would write next to the shared CA.
        "-set_serial".as_ref(),
        serial.as_ref(),
        "-days".as_ref(),
        "1".as_ref(),
        "-extfile".as_ref(),
        ext.as_os_str(),
        "-out".as_ref(),
        crt.as_os_str(),
    ]);
    let mut pem = std::fs::read_to_string(&crt).expect("cert");
    pem.push_str(&std::fs::read_to_string(&key).expect("key"));
    pem
}

/// The identity the testbed's apiserver presents to kubelets
/// (`--kubelet-client-certificate`: CN=kube-apiserver-kubelet-client,
/// O=system:masters).
fn apiserver_identity(env: &Env) -> String {
    let pki = local_pki(env.tb);
    let mut pem = std::fs::read_to_string(pki.join("apiserver-kubelet-client.crt")).expect("cert");
    pem.push_str(&std::fs::read_to_string(pki.join("apiserver-kubelet-client.key")).expect("key"));
    pem
}

/// A ClusterRole granting `get` on `nodes/proxy` of `node` only, bound to
/// ServiceAccount `ns/sa`; removed on drop.
struct NodeProxyGrant {
    name: String,
    local: testbed::Cluster,
}

impl NodeProxyGrant {
    async fn create(env: &Env, node: &str, ns: &str, sa: &str) -> NodeProxyGrant {
        let name = format!("offload-test-{node}-proxy");
        let role: ClusterRole = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["nodes/proxy"],
                       "resourceNames": [node], "verbs": ["get"]}]
        }))
        .expect("role");
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
        }))
        .expect("binding");
        let grant = NodeProxyGrant {
            name,
            local: env.tb.local.clone(),
        };
        Api::<ClusterRole>::all(env.local.clone())
            .create(&PostParams::default(), &role)
            .await
            .expect("create ClusterRole");
        Api::<ClusterRoleBinding>::all(env.local.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("create ClusterRoleBinding");
        grant
    }
}

impl Drop for NodeProxyGrant {
    fn drop(&mut self) {
        let _ = self
            .local
            .kubectl()
            .args(["delete", "clusterrole,clusterrolebinding", &self.name])
            .args([
                "--ignore-not-found",
                "--wait=false",
                "--request-timeout=20s",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// (status, body) of GET `url` as `client`, with `token` if any.
async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("send");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The sum of every sample of metric `name` (all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_callers_allowed_nodes_proxy_read_pods_and_logs() {
    let env = env().await;
    let plugin = Plugin::start(&env.remote).await;
    let node = node_name("vn-authz");
    let (ns, _cleanup, pods) = test_namespace(&env, "prov-authz", &[&node]).await;
    let prov = start_provider(&env, provider_config(&env, &node, &plugin)).await;

    // The victim: a pod whose spec holds a literal secret and whose log too.
    let mut main = container("main", "echo victim-log-line; sleep 600");
    main.env = Some(vec![EnvVar {
        name: "DB_PASSWORD".into(),
        value: Some("victim-env-secret".into()),
        ..Default::default()
    }]);
    pods.create(
        &PostParams::default(),
        &pod("victim", &node, "Never", None, main),
    )
    .await
    .expect("create victim");
    wait_phase(&pods, "victim", "Running", Duration::from_secs(300)).await;
    // A bystander bound to another node: /pods (read from the apiserver with
    // the provider's rights) must not hand it to this node's readers.
    let mut other = container("main", "sleep 600");
    other.env = Some(vec![EnvVar {
        name: "DB_PASSWORD".into(),
        value: Some("bystander-env-secret".into()),
        ..Default::default()
    }]);
    let elsewhere = format!("{node}-elsewhere");
    pods.create(
        &PostParams::default(),
        &pod("bystander", &elsewhere, "Never", None, other),
    )
    .await
    .expect("create bystander");

    let nobody = service_account_token(&env, &ns, "nobody").await;
    let reader = service_account_token(&env, &ns, "reader").await;
    let _grant = NodeProxyGrant::create(&env, &node, &ns, "reader").await;
    let mallory = client(Some(&ca_signed_identity(&env, "/O=tenants/CN=mallory")));
    let apiserver = client(Some(&apiserver_identity(&env)));
    let anon = client(None);

    let base = format!(
        "https://{}:{}",
        env.tb.local.node_ip,
        prov.kubelet_addr().port()
    );
    let logs = format!("{base}/containerLogs/{ns}/victim/main");
    let pods_url = format!("{base}/pods");
    let nobody_user = format!("system:serviceaccount:{ns}:nobody");

    // The attackers: an unprivileged pod's token, a certificate of the
    // cluster CA that is not the apiserver's. 403 naming the permission,
    // nothing of the victim in the answer.
    for (who, c, token, user) in [
        (
            "nobody's token",
            &anon,
            Some(nobody.as_str()),
            nobody_user.as_str(),
        ),
        ("mallory's certificate", &mallory, None, "mallory"),
    ] {
        for url in [&logs, &pods_url] {
            let (status, body) = get(c, url, token).await;
            assert_eq!(status, 403, "{who} on {url}: {body}");
            assert_eq!(
                body,
                format!("Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)"),
                "{who} on {url}"
            );
        }
    }
    // Without credentials: 401 (also for a made-up token).
    assert_eq!(get(&anon, &logs, None).await.0, 401);
    assert_eq!(get(&anon, &logs, Some("made-up-token")).await.0, 401);

    // The apiserver and a user granted nodes/proxy on this node read both.
    for (who, c, token) in [
        ("the apiserver", &apiserver, None),
        ("reader (nodes/proxy)", &anon, Some(reader.as_str())),
    ] {
        let body = wait_for(
            &format!("{who} reads the logs"),
            Duration::from_secs(60),
            async || {
                let (status, body) = get(c, &logs, token).await;
                (status == 200 && body.contains("victim-log-line")).then_some(body)
            },
        )
        .await;
        assert!(body.starts_with("victim-log-line"), "{who}: {body}");
        let (status, body) = get(c, &pods_url, token).await;
        assert_eq!(status, 200, "{who} on /pods: {body}");
        assert!(body.contains("victim-env-secret"), "{who} sees the spec");
        assert!(
            !body.contains("bystander-env-secret"),
            "{who} sees another node's pod: {body}"
        );
        let list: serde_json::Value = serde_json::from_str(&body).expect("a PodList");
        let items = list["items"].as_array().expect("items");
        assert!(
            items.iter().all(|p| p["spec"]["nodeName"] == node.as_str()),
            "{who}: /pods holds pods of other nodes: {body}"
        );
    }

    // kubectl logs goes through the apiserver, which presents its certificate.
    let (ok, out, err) = kubectl(&env, &ns, &["logs", "victim"]).await;
    assert!(ok, "kubectl logs: {err}");
    assert!(out.contains("victim-log-line"), "{out}");

    // What an operator sees: denials and allowances by subresource.
    let m = prov.metrics.encode();
    assert!(
        m.contains(
            "offload_provider_kubelet_authorization_decisions_total{decision=\"denied\",verb=\"get\",subresource=\"proxy\",source=\"webhook\"}"
        ),
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "offload_provider_kubelet_unauthenticated_requests_total"
        ) >= 2.0
    );

    for name in ["victim", "bystander"] {
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .expect("delete the test's pods");
    }
    prov.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_cost_at_most_the_cap_of_token_reviews() {
    let env = env().await;
    let node = node_name("vn-tokcap");
    let (ns, _cleanup, _pods) = test_namespace(&env, "prov-tokcap", &[&node]).await;
    // No plugin needed: only the kubelet API is asked.
    let mut config = Config::for_node(&node, "http://127.0.0.1:1");
    config.kubelet_addr = "0.0.0.0:0".parse().expect("addr");
    config.admin_addr = None;
    config.client_ca_file = Some(local_pki(env.tb).join("ca.crt"));
    config.kubelet_auth.token_review_qps = 1.0;
    config.kubelet_auth.token_review_burst = 3;
    let prov = start_provider(&env, config).await;
    let url = format!(
        "https://{}:{}/pods",
        env.tb.local.node_ip,
        prov.kubelet_addr().port()
    );
    let anon = client(None);
    let reviews = |m: &str| metric_sum(m, "offload_provider_kubelet_token_reviews_total");

    // A burst of 100 made-up tokens.
    let started = Instant::now();
    let answers = futures::future::join_all((0..100).map(|i| {
        let (anon, url) = (anon.clone(), url.clone());
        async move {
            get(
                &anon,
                &url,
                Some(&format!("made-up-{i}-{}", uuid::Uuid::new_v4())),
            )
            .await
            .0
        }
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let m = prov.metrics.encode();
    let cap = 3.0 + elapsed.ceil();
    assert!(
        reviews(&m) <= cap,
        "{} TokenReviews in {elapsed:.1}s, cap {cap}",
        reviews(&m)
    );
    let throttled = answers.iter().filter(|s| **s == 429).count();
    assert!(
        answers.iter().all(|s| *s == 401 || *s == 429),
        "{answers:?}"
    );
    assert!(
        100.0 - throttled as f64 <= cap,
        "{throttled} of 100 throttled"
    );
    assert_eq!(
        metric_sum(&m, "offload_provider_kubelet_token_reviews_throttled_total"),
        throttled as f64
    );

    // A known token (authenticated or not) is answered from the cache: no
    // TokenReview, no throttling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sa = service_account_token(&env, &ns, "someone").await;
    let before = reviews(&prov.metrics.encode());
    assert_eq!(
        get(&anon, &url, Some(&sa)).await.0,
        403,
        "valid token, no nodes/proxy"
    );
    for _ in 0..20 {
        assert_eq!(get(&anon, &url, Some(&sa)).await.0, 403);
        assert_eq!(get(&anon, &url, Some("made-up-0")).await.0 / 100, 4);
    }
    let after = reviews(&prov.metrics.encode());
    assert!(
        after - before <= 2.0,
        "cached tokens cost no review: {before} -> {after}"
    );
    prov.shutdown().await;
}
