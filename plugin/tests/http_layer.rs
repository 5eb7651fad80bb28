//! The HTTP layer without a cluster: authentication, bad JSON, body limits,
//! routing of GET-with-body, 200-only success, listeners (unix, TLS).
//!
//! The plugin gets a kube client pointing at a closed port: every request
//! tested here must be answered before any remote call is needed (that is
//! the point: bad input never reaches the remote cluster).

use std::time::Duration;

use offload_plugin::{Listen, PluginConfig, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod offline;
use offline::*;

/// An offline config that requires the bearer token `s3cret-token` (kept in `dir`).
fn token_config(dir: &tempfile::TempDir) -> PluginConfig {
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "s3cret-token\n").expect("write token");
    let mut cfg = offline_config();
    cfg.insecure_no_auth = false;
    cfg.token_file = Some(token_path);
    cfg
}

/// Whether the `message` of a JSON error body mentions `needle`.
fn message_mentions(body: &Value, needle: &str) -> bool {
    body["message"].as_str().is_some_and(|m| m.contains(needle))
}

fn pod_json(uid: &str) -> Value {
    json!({"metadata":{"name":"p","namespace":"default","uid":uid},
           "spec":{"containers":[{"name":"c","image":"busybox"}]}})
}

#[tokio::test]
async fn auth_is_required_when_a_token_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(token_config(&dir)).await;
    let base = format!("http://{}", p.addr());
    let c = http();

    let (st, body) = call(&c, Method::GET, format!("{base}/status"), "[]").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");

    let status_as = |token: &'static str| {
        c.get(format!("{base}/status"))
            .bearer_auth(token)
            .body("[]")
            .send()
    };
    let resp = status_as("wrong").await.expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = status_as("s3cret-token").await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    // The ping answer (interLink's PingResponse); no node cache offline.
    assert_eq!(resp.text().await.expect("text"), r#"{"status":"ok"}"#);

    // Probes stay reachable for the kubelet without the token.
    let healthz = get_status(&c, format!("{base}/healthz")).await;
    assert_eq!(healthz, StatusCode::OK);
    p.shutdown().await;
}

#[tokio::test]
async fn refuses_to_start_without_token_or_explicit_insecure_flag() {
    install_provider();
    let mut cfg = offline_config();
    cfg.insecure_no_auth = false;
    cfg.token_file = None;
    let err = start(cfg, dead_client()).await.err().expect("must refuse");
    assert!(err.to_string().contains("--insecure-no-auth"), "{err}");
}

#[tokio::test]
async fn status_ping_is_get_with_a_body_and_answers_200_fast() {
    let p = plugin(offline_config()).await;
    let base = format!("http://{}", p.addr());
    let c = http();
    for method in [Method::GET, Method::POST] {
        let started = std::time::Instant::now();
        let (st, body) = call(&c, method.clone(), format!("{base}/status"), "[]").await;
        assert_eq!(st, StatusCode::OK, "{method}");
        // interLink's PingResponse: the ping of interLink >= 0.6.2 reads
        // it (the remote capacity once the node cache is synced).
        assert_eq!(body, json!({"status": "ok"}));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let (st, body) = call(&c, Method::GET, format!("{base}/ping"), "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    p.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_that_says_what_is_wrong() {
    let mut cfg = offline_config();
    cfg.body_limit = 4096;
    let p = plugin(cfg).await;
    let base = format!("http://{}", p.addr());
    let c = http();
    let uid = "6f1c1f1e-0000-4000-8000-00000000000a";

    let cases: Vec<(Method, &str, String, u16, &str)> = vec![
        (Method::POST, "/create", "{not json".into(), 400, "malformed JSON"),
        (Method::POST, "/create", "".into(), 400, "empty"),
        (Method::POST, "/create", pod_json(uid).to_string(), 400, "bare Pod"),
        (Method::POST, "/create", json!({"container": []}).to_string(), 400, "pod"),
        (Method::POST, "/create", json!({"pod": pod_json(uid), "configmaps": [], "projectedvolumesmaps": [], "jobscriptURL": ""}).to_string(), 400, "PodCreateRequests"),
        (Method::POST, "/create", json!({"pod": pod_json(uid), "container": [{"name": "c", "projectedvolumesmaps": []}]}).to_string(), 400, "container[0].\"projectedvolumesmaps\""),
        (Method::POST, "/create", json!([{"pod": pod_json(uid)}, {"pod": pod_json(uid)}]).to_string(), 400, "array of 2"),
        (Method::POST, "/create", json!({"pod": {"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}).to_string(), 400, "uid is missing"),
        (Method::POST, "/create", json!({"pod": {"metadata": {"name": "p", "namespace": "default", "uid": uid}, "spec": {"containers": "nope"}}}).to_string(), 400, "pod.spec.containers"),
        (Method::POST, "/create", json!({"pod": {"metadata": {"name": "p", "namespace": "default", "uid": uid, "spec": {}}}}).to_string(), 400, "pod.spec is missing"),
        (Method::POST, "/create", json!({"pod": {"metadata": {"name": "p", "namespace": "default", "uid": uid}, "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}}}).to_string(), 403, "hostNetwork"),
        (Method::POST, "/create", json!({"pod": {"metadata": {"name": "p", "namespace": "default", "uid": uid}, "spec": {"containers": [{"name": "c", "image": "i", "envFrom": [{"configMapRef": {"name": "absent"}}]}]}}}).to_string(), 422, "ConfigMap \"absent\""),
        (Method::POST, "/create", "x".repeat(5000), 413, "limit"),
        (Method::GET, "/status", json!({"not": "an array"}).to_string(), 400, "unexpected JSON"),
        (Method::GET, "/status", json!([{"metadata": {"name": "p"}}]).to_string(), 400, "pod [0]"),
        (Method::POST, "/delete", json!({"metadata": {"name": "p", "namespace": "default"}}).to_string(), 400, "uid is missing"),
        (Method::GET, "/getLogs", json!({"Namespace": "Bad_NS", "PodUID": uid, "PodName": "p"}).to_string(), 400, "Namespace"),
        (Method::GET, "/getLogs", json!({"Namespace": "default", "PodUID": uid, "PodName": "p", "Opts": {"Tail": -5}}).to_string(), 400, "Opts.Tail"),
        (Method::GET, "/getLogs", json!({"Namespace": "default", "PodUID": uid, "PodName": "p", "Opts": {"SinceTime": "yesterday"}}).to_string(), 400, "SinceTime"),
        (Method::GET, "/nope", "".into(), 404, "no endpoint"),
        (Method::GET, "/create", "".into(), 405, "not allowed"),
    ];
    for (method, path, body, want, needle) in cases {
        let (st, v) = call(&c, method.clone(), format!("{base}{path}"), body).await;
        assert_eq!(st.as_u16(), want, "{method} {path}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            v["error"].is_string(),
            "{method} {path}: error code missing: {v}"
        );
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} lacks {needle:?}"
        );
    }

    // Every request above is counted by endpoint and code.
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("offload_plugin_http_requests_total{endpoint=\"/create\",code=\"400\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("offload_plugin_http_requests_total{endpoint=\"/create\",code=\"413\"}"),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn readyz_reports_an_unsynced_cache() {
    let p = plugin(offline_config()).await;
    let c = http();
    let readyz = get_status(&c, format!("http://{}/readyz", p.addr())).await;
    assert_eq!(readyz, StatusCode::SERVICE_UNAVAILABLE);
    p.shutdown().await;
}

#[tokio::test]
async fn serves_on_a_unix_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("plugin.sock");
    let mut cfg = offline_config();
    cfg.listen = Listen::Unix(sock.clone());
    let p = plugin(cfg).await;
    let mut s = tokio::net::UnixStream::connect(&sock)
        .await
        .expect("connect");
    s.write_all(b"GET /status HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(r#"{"status":"ok"}"#), "{out}");
    p.shutdown().await;
    assert!(!sock.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn serves_tls_when_configured() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let mut cfg = offline_config();
    cfg.tls_cert = Some(cert_path);
    cfg.tls_key = Some(key_path);
    let p = plugin(cfg).await;
    let ca = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("ca");
    let c = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("localhost", p.addr())
        .build()
        .expect("client");
    let resp = c
        .get(format!("https://localhost:{}/status", p.addr().port()))
        .body("[]")
        .send()
        .await
        .expect("tls request");
    assert_eq!(resp.status(), StatusCode::OK);
    // Plain HTTP on the TLS port does not get an answer.
    let plain = http()
        .get(format!("http://{}/status", p.addr()))
        .body("[]")
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != StatusCode::OK));
    p.shutdown().await;
}

/// With a client CA configured (mTLS, as the provider chart can set it up),
/// someone on the network between the clusters gets no answer without a
/// client certificate of that CA, even holding one from another CA; the
/// provider's certificate of that CA gets in.
#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_of_the_client_ca() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let client_ca = testbed::pki::ca("provider-clients");
    let stranger_ca = testbed::pki::ca("someone-else");
    let files = [
        ("tls.crt", server.cert.pem()),
        ("tls.key", server.signing_key.serialize_pem()),
        ("client-ca.crt", client_ca.pem()),
    ];
    for (name, pem) in &files {
        std::fs::write(dir.path().join(name), pem).expect("write pem");
    }
    let mut cfg = offline_config();
    cfg.tls_cert = Some(dir.path().join("tls.crt"));
    cfg.tls_key = Some(dir.path().join("tls.key"));
    cfg.tls_client_ca = Some(dir.path().join("client-ca.crt"));
    let p = plugin(cfg).await;
    let server_ca = reqwest::Certificate::from_pem(server.cert.pem().as_bytes()).expect("ca");
    let get = |identity: Option<String>| {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([server_ca.clone()])
            .resolve("localhost", p.addr())
            .timeout(Duration::from_secs(10));
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        let c = b.build().expect("client");
        let url = format!("https://localhost:{}/status", p.addr().port());
        async move { c.get(url).body("[]").send().await.map(|r| r.status()) }
    };
    assert!(get(None).await.is_err(), "no client certificate: no answer");
    let stranger = testbed::pki::client_identity(&stranger_ca, "provider");
    assert!(
        get(Some(stranger)).await.is_err(),
        "a certificate of another CA: no answer"
    );
    let provider = testbed::pki::client_identity(&client_ca, "provider");
    assert_eq!(
        get(Some(provider)).await.expect("mTLS request"),
        StatusCode::OK
    );
    p.shutdown().await;
}

/// No input makes the plugin panic (a panic would surface as 500) or answer
/// without a JSON error: truncations and byte flips of a real interLink create
/// body, sent to every endpoint.
#[tokio::test]
async fn mangled_bodies_never_panic_and_always_get_a_json_error() {
    let p = plugin(offline_config()).await;
    let base = format!("http://{}", p.addr());
    let c = http();
    let full = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/create_full.json"
    ))
    .expect("fixture")
    .replace("__NS__", "default")
    .replace("__UID__", "6f1c1f1e-0000-4000-8000-00000000000b")
    .replace("__IMAGE__", "busybox");
    let bytes = full.as_bytes();
    let mut bodies: Vec<Vec<u8>> = (0..bytes.len())
        .step_by(53)
        .map(|n| bytes[..n].to_vec())
        .collect();
    for i in (0..bytes.len()).step_by(61) {
        let mut b = bytes.to_vec();
        b[i] = match b[i] {
            b'"' => b'}',
            b'{' => b'[',
            b':' => b',',
            x => x.wrapping_add(1),
        };
        bodies.push(b);
    }
    bodies.push(vec![0xff, 0xfe, 0x00]);
    bodies.push(b"null".to_vec());
    bodies.push(b"[null]".to_vec());
    bodies.push(b"{\"pod\":null}".to_vec());
    assert!(bodies.len() > 100);
    let mut seen = std::collections::BTreeMap::new();
    for body in bodies {
        for (method, path) in [
            (Method::POST, "/create"),
            (Method::GET, "/status"),
            (Method::POST, "/delete"),
            (Method::GET, "/getLogs"),
        ] {
            let (st, v) = call(&c, method.clone(), format!("{base}{path}"), body.clone()).await;
            *seen.entry((path, st.as_u16())).or_insert(0u32) += 1;
            assert_ne!(st, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {v}");
            if st != StatusCode::OK {
                assert!(v["error"].is_string(), "{path} {st}: {v}");
            }
        }
    }
    eprintln!("status codes by endpoint: {seen:?}");
    // The flips that keep the JSON valid reach the (unreachable) remote: 502;
    // everything else is refused as 4xx.
    assert!(
        seen.keys()
            .all(|(_, code)| (400..500).contains(code) || *code == 502 || *code == 200),
        "{seen:?}"
    );
    let alive = get_status(&c, format!("{base}/healthz")).await;
    assert_eq!(alive, StatusCode::OK, "still serving");
    p.shutdown().await;
}

#[tokio::test]
async fn bastion_public_key_is_authenticated_and_says_why_it_is_missing() {
    let c = http();
    // --no-bastion (the test default): 404 with what to do instead.
    let p = plugin(offline_config()).await;
    let base = format!("http://{}", p.addr());
    let (st, body) = call(&c, Method::GET, format!("{base}/bastion/publicKey"), "").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "bastion_disabled");
    assert!(message_mentions(&body, "--bastion-public-key"), "{body}");
    p.shutdown().await;

    // A bastion that cannot be installed (the remote apiserver is
    // unreachable): 503 until it is, behind the same bearer token as the rest.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = token_config(&dir);
    cfg.no_bastion = false;
    cfg.bastion_namespace = Some("tunnels".into());
    let p = plugin(cfg).await;
    let url = format!("http://{}/bastion/publicKey", p.addr());
    let (st, _) = call(&c, Method::GET, url.clone(), "").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let resp = c
        .get(&url)
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "bastion_not_ready");
    assert!(message_mentions(&body, "tunnels"), "{body}");
    p.shutdown().await;
}
