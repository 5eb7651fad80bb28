//! The kubelet HTTPS API without a cluster: authentication (client
//! certificates from a CA, anonymous 401), logs relayed from a plugin, and
//! the "not supported" answers.

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
    for path in [
        "/exec/default/hello/c?command=sh",
        "/attach/default/hello/c",
        "/portForward/default/hello",
    ] {
        let r = ok.post(format!("{base}{path}")).send().await.expect("send");
        assert_eq!(r.status(), 501, "{path}");
        assert!(r.text().await.expect("text").contains("not supported"));
    }
    let r = ok.get(format!("{base}/pods")).send().await.expect("send");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["items"][0]["metadata"]["name"], "hello");
    cancel.cancel();
}
