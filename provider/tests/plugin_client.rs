//! The plugin client against small in-process servers that check the exact
//! methods, paths, headers and JSON each target expects.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::any;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use offload_provider::client::{ClientSettings, PluginClient, PluginError};
use offload_provider::config::PluginMode;
use offload_provider::logs::{LogQuery, log_request};
use offload_wire::{RetrievedContainer, RetrievedPodData};
use serde_json::{Value, json};
use testbed::fixtures;

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn handler(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::String("<invalid json>".into()))
    };
    log.lock().expect("lock").push(Seen {
        method: method.clone(),
        path: uri.path().into(),
        headers,
        body: parsed.clone(),
    });
    match (method.as_str(), uri.path()) {
        ("POST", "/create") => {
            let uid = parsed["pod"]["metadata"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (
                StatusCode::OK,
                json!({"PodUID": uid, "PodJID": "remote-job-1"}).to_string(),
            )
        }
        ("DELETE", "/delete") | ("POST", "/delete") => (StatusCode::OK, "Pod deleted".into()),
        ("GET", "/status") => {
            let pods = parsed.as_array().cloned().unwrap_or_default();
            let out: Vec<Value> = pods.iter().map(|p| json!({
                "name": p["metadata"]["name"], "UID": p["metadata"]["uid"], "namespace": p["metadata"]["namespace"], "JID": "remote-job-1",
                "containers": [{"name":"c","state":{"running":{"startedAt":"2026-01-01T00:00:00Z"}},"ready":true,"restartCount":0,"image":"busybox","imageID":""}],
                "initContainers": null
            })).collect();
            (StatusCode::OK, Value::Array(out).to_string())
        }
        ("POST", "/pinglink") => (
            StatusCode::OK,
            json!({"status":"ok","resources":{"cpu":"8","pods":"50"}}).to_string(),
        ),
        ("GET", "/getLogs") => (StatusCode::OK, "line 1\nline 2\n".into()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "wrong method".into()),
    }
}

async fn server() -> (String, Log) {
    let log: Log = Arc::default();
    let app = Router::new().fallback(any(handler)).with_state(log.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    (format!("http://{addr}"), log)
}

fn pod() -> Pod {
    fixtures::pod("hello")
        .namespace("default")
        .uid("6f1c1f1e-0000-4000-8000-000000000000")
        .container(Container {
            name: "c".into(),
            image: Some("busybox".into()),
            ..Default::default()
        })
        .build()
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

fn payload() -> RetrievedPodData {
    RetrievedPodData {
        pod: pod(),
        containers: vec![
            RetrievedContainer {
                name: "init".into(),
                config_maps: vec![cm("shared")],
                ..Default::default()
            },
            RetrievedContainer {
                name: "c".into(),
                config_maps: vec![cm("shared"), cm("own")],
                projected_volume_maps: vec![cm("vol")],
                ..Default::default()
            },
        ],
        job_config: None,
        job_script: None,
    }
}

fn client(url: &str, mode: PluginMode, token: Option<std::path::PathBuf>) -> PluginClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = ClientSettings::new(url, mode);
    s.token_file = token;
    PluginClient::new(s, None).expect("client")
}

#[tokio::test]
async fn interlink_api_server_target_gets_its_vk_facing_format() {
    let (url, log) = server().await;
    let dir = tempfile::tempdir().expect("tmp");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").expect("write");
    let c = client(&url, PluginMode::Interlink, Some(token));

    let created = c.create(&payload()).await.expect("create");
    assert_eq!(created.pod_jid, "remote-job-1");
    assert_eq!(created.pod_uid, "6f1c1f1e-0000-4000-8000-000000000000");
    c.delete(&pod()).await.expect("delete");
    let st = c.status(&[pod()]).await.expect("status");
    assert_eq!(st[0].jid, "remote-job-1");
    assert!(st[0].init_containers.is_empty());
    let ping = c.ping().await.expect("ping").expect("ping response");
    assert_eq!(ping.resources.and_then(|r| r.cpu).as_deref(), Some("8"));
    let q = LogQuery::parse("tailLines=5").expect("query");
    let body = c
        .logs(&log_request(
            "default",
            "hello",
            "6f1c1f1e-0000-4000-8000-000000000000",
            "c",
            &q,
        ))
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    assert_eq!(body, "line 1\nline 2\n");

    let seen = log.lock().expect("lock").clone();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.to_string(), s.path.clone()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("POST".into(), "/create".into()),
            ("DELETE".into(), "/delete".into()),
            ("GET".into(), "/status".into()),
            ("POST".into(), "/pinglink".into()),
            ("GET".into(), "/getLogs".into()),
        ]
    );
    for s in &seen {
        assert_eq!(
            s.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(
            s.headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer s3cret-token")
        );
        assert!(s.headers.get("interlink-http-session").is_some());
    }
    // PodCreateRequests: exact keys, objects deduplicated across containers.
    let create = &seen[0].body;
    let mut keys: Vec<&str> = create
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "configmaps",
            "jobscriptURL",
            "pod",
            "projectedvolumesmaps",
            "secrets"
        ]
    );
    let names: Vec<&str> = create["configmaps"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["shared", "own"]);
    assert_eq!(create["projectedvolumesmaps"][0]["metadata"]["name"], "vol");
    assert_eq!(create["secrets"], json!([]));
    assert_eq!(create["pod"]["metadata"]["name"], "hello");
    // delete: the v1.Pod itself.
    assert_eq!(
        seen[1].body["metadata"]["uid"],
        "6f1c1f1e-0000-4000-8000-000000000000"
    );
    assert!(seen[1].body.get("kind").is_none() || seen[1].body["kind"] == "Pod");
    // status: an array of pods.
    assert!(seen[2].body.is_array());
    // pinglink: no body.
    assert_eq!(seen[3].body, Value::Null);
    // getLogs: PascalCase LogStruct with Go's zero SinceTime.
    assert_eq!(
        seen[4].body,
        json!({"Namespace":"default","PodUID":"6f1c1f1e-0000-4000-8000-000000000000","PodName":"hello","ContainerName":"c",
        "Opts":{"Tail":5,"Bytes":0,"Timestamps":false,"Follow":false,"Previous":false,"SinceSeconds":0,"SinceTime":"0001-01-01T00:00:00Z"}})
    );
}

#[tokio::test]
async fn plugin_target_gets_retrieved_pod_data_and_post_delete() {
    let (url, log) = server().await;
    let c = client(&url, PluginMode::Plugin, None);
    c.create(&payload()).await.expect("create");
    c.delete(&pod()).await.expect("delete");
    assert!(
        c.ping().await.expect("ping").is_none(),
        "a JSON array ping answer is a plain ok"
    );
    let seen = log.lock().expect("lock").clone();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/create")
    );
    let body = &seen[0].body;
    assert_eq!(body["container"][1]["name"], "c");
    assert_eq!(
        body["container"][1]["configMaps"][1]["metadata"]["name"],
        "own"
    );
    assert_eq!(
        body["container"][1]["projectedvolumemaps"][0]["metadata"]["name"],
        "vol"
    );
    assert!(seen[0].headers.get("authorization").is_none());
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("POST", "/delete")
    );
    assert_eq!(
        (seen[2].method.as_str(), seen[2].path.as_str()),
        ("GET", "/status")
    );
    assert_eq!(seen[2].body, json!([]));
}

#[tokio::test]
async fn only_200_is_success_and_connection_errors_are_retried_then_reported() {
    let app = Router::new().fallback(any(|| async { (StatusCode::CREATED, "made") }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    let c = client(&format!("http://{addr}"), PluginMode::Plugin, None);
    match c.delete(&pod()).await {
        Err(PluginError::Status { status: 201, body }) => assert_eq!(body, "made"),
        other => panic!("expected a status error, got {other:?}"),
    }
    // Nothing listens here.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let c = client(&format!("http://{dead_addr}"), PluginMode::Plugin, None);
    let started = std::time::Instant::now();
    let err = c.ping().await.expect_err("unreachable");
    assert!(err.is_unreachable(), "{err}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(200 + 400),
        "retried with backoff"
    );
}

#[tokio::test]
async fn unix_socket_target() {
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("plugin.sock");
    let log: Log = Arc::default();
    let app = Router::new().fallback(any(handler)).with_state(log.clone());
    let l = tokio::net::UnixListener::bind(&sock).expect("bind");
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    let c = client(
        &format!("unix://{}", sock.display()),
        PluginMode::Plugin,
        None,
    );
    let st = c.status(&[pod()]).await.expect("status over unix socket");
    assert_eq!(st.len(), 1);
}

/// A hostile plugin (or anything in front of it) answering without end:
/// the client stops reading at its cap and says so, with or without a
/// Content-Length; an error body is shown cut, never read whole.
#[tokio::test]
async fn answers_are_read_up_to_a_cap() {
    use futures::stream;
    let app = Router::new()
        .route(
            "/status",
            any(|| async { (StatusCode::OK, vec![b'['; 3 << 20]) }),
        )
        .route(
            "/bastion/publicKey",
            any(|| async {
                // Chunked, no Content-Length: 64 KiB chunks forever.
                let chunks = stream::repeat_with(|| {
                    Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 << 10]))
                });
                (StatusCode::OK, axum::body::Body::from_stream(chunks))
            }),
        )
        .route(
            "/delete",
            any(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(1 << 20)) }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = ClientSettings::new(&format!("http://{addr}"), PluginMode::Plugin);
    s.max_response = 1 << 20;
    let c = PluginClient::new(s, None).expect("client");
    match c.status(&[]).await {
        Err(e @ PluginError::TooLarge { limit: 1048576 }) => {
            assert!(e.to_string().contains("--plugin-max-response-size"), "{e}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let started = std::time::Instant::now();
    match c.bastion_public_key().await {
        Err(PluginError::TooLarge { .. }) => {}
        other => panic!("expected TooLarge for an endless body, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    match c.delete(&pod()).await {
        Err(PluginError::Status { status: 500, body }) => assert_eq!(body.len(), 2000),
        other => panic!("expected a cut status error, got {other:?}"),
    }
}
