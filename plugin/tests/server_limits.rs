//! Server limits and up-front refusals, without a cluster: a readable 413
//! for oversized bodies, the concurrency limit (503 + Retry-After), the
//! request timeout (504), non-UUID UIDs and namespaces that map onto the
//! bastion's. The kube client points at a closed port: everything here is
//! answered before any remote call. (Kept apart from `http_layer.rs` for
//! the file size limit; the helpers in `offline/`.)

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod offline;
use offline::*;

fn message_mentions(body: &Value, needle: &str) -> bool {
    body["message"].as_str().is_some_and(|m| m.contains(needle))
}

/// A request body that sends `first` and then stalls until `release` is
/// dropped: a request that stays in flight as long as the test wants.
fn stalled_body(first: &'static str) -> (reqwest::Body, tokio::sync::oneshot::Sender<()>) {
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(first.as_bytes()) })
        .chain(futures::stream::once(async move {
            let _ = wait.await;
            Ok::<_, std::io::Error>(&b""[..])
        }));
    (reqwest::Body::wrap_stream(stream), release)
}

/// The attacker (or a buggy caller) sends 20 MB against a 16 MiB limit, with
/// a Content-Length and chunked: before, the plugin closed the connection
/// while the client was still sending and the client saw a broken pipe; now
/// it reads a 413 with the JSON error, and the plugin keeps serving.
#[tokio::test]
async fn an_oversized_body_gets_a_413_the_client_can_read() {
    let p = plugin(offline_config()).await;
    let base = format!("http://{}", p.addr());
    let c = http();
    let big = vec![b'x'; 20 * 1000 * 1000];
    let (st, v) = call(&c, Method::POST, format!("{base}/create"), big.clone()).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"], "body_too_large", "{v}");
    assert!(message_mentions(&v, "--body-limit"), "{v}");

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (st, v) = call(&c, Method::POST, format!("{base}/status"), chunked).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "chunked: {v}");
    assert_eq!(v["error"], "body_too_large", "{v}");

    let (st, _) = call(&c, Method::GET, format!("{base}/status"), "[]").await;
    assert_eq!(st, StatusCode::OK, "still serving");
    p.shutdown().await;
}

/// Two requests hold the two slots (their bodies stall): a third is shed at
/// once with 503, Retry-After and a JSON error; the health probes are not
/// limited; once the slots free up, requests are served again.
#[tokio::test]
async fn requests_beyond_the_concurrency_limit_get_503_with_retry_after() {
    let mut cfg = offline_config();
    cfg.max_concurrent_requests = 2;
    let p = plugin(cfg).await;
    let base = format!("http://{}", p.addr());
    let c = http();
    let mut releases = Vec::new();
    let mut held = Vec::new();
    for _ in 0..2 {
        let (body, release) = stalled_body("[");
        releases.push(release);
        // POST: a GET with a body of unknown length goes out without it.
        let req = c.post(format!("{base}/status")).body(body).send();
        held.push(tokio::spawn(req));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = std::time::Instant::now();
    let resp = c
        .get(format!("{base}/status"))
        .body("[]")
        .send()
        .await
        .expect("shed request");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(start.elapsed() < Duration::from_secs(2), "shed at once");
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let v: Value = resp.json().await.expect("JSON error");
    assert_eq!(v["error"], "overloaded", "{v}");
    assert_eq!(
        get_status(&c, format!("{base}/healthz")).await,
        StatusCode::OK
    );

    drop(releases);
    for h in held {
        let r = h.await.expect("join").expect("held request answered");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "'[' is malformed JSON");
    }
    let (st, _) = call(&c, Method::GET, format!("{base}/status"), "[]").await;
    assert_eq!(st, StatusCode::OK);
    p.shutdown().await;
}

/// A caller that never finishes its request (slowloris) is cut at
/// --request-timeout with a 504 JSON error, and frees its slot.
#[tokio::test]
async fn a_request_slower_than_the_timeout_gets_504() {
    let mut cfg = offline_config();
    cfg.request_timeout = Duration::from_secs(1);
    cfg.max_concurrent_requests = 1;
    let p = plugin(cfg).await;
    let base = format!("http://{}", p.addr());
    let c = http();
    let (body, _release) = stalled_body("[");
    let start = std::time::Instant::now();
    let (st, v) = call(&c, Method::POST, format!("{base}/status"), body).await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["error"], "timeout", "{v}");
    assert!(message_mentions(&v, "--request-timeout"), "{v}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let (st, _) = call(&c, Method::GET, format!("{base}/status"), "[]").await;
    assert_eq!(st, StatusCode::OK, "the slot is free again");
    p.shutdown().await;
}

/// Refused before any remote call (the kube client here reaches nothing):
/// a UID that is not a UUID, and a local namespace that maps onto the
/// bastion's namespace, for create, delete and getLogs.
#[tokio::test]
async fn non_uuid_uids_and_reserved_namespaces_are_refused_up_front() {
    let mut cfg = offline_config();
    cfg.bastion_namespace = Some("offloading-tunnels".into());
    let p = plugin(cfg).await;
    let base = format!("http://{}", p.addr());
    let c = http();
    let uid = "6f1c1f1e-0000-4000-8000-00000000000b";
    let spec = json!({"containers": [{"name": "c", "image": "i"}]});
    let pod = |ns: &str, uid: &str| json!({"metadata": {"name": "p", "namespace": ns, "uid": uid}, "spec": spec});
    let cases = [
        (
            "/create",
            json!({"pod": pod("team", "not-a-uuid")}),
            400,
            "not a valid UID",
        ),
        (
            "/create",
            json!({"pod": pod("team", "6F1C1F1E-0000-4000-8000-00000000000B")}),
            400,
            "not a valid UID",
        ),
        (
            "/create",
            json!({"pod": pod("tunnels", uid)}),
            403,
            "offloading-tunnels",
        ),
        ("/delete", pod("tunnels", uid), 403, "offloading-tunnels"),
        (
            "/getLogs",
            json!({"Namespace": "tunnels", "PodUID": uid, "PodName": "p"}),
            403,
            "offloading-tunnels",
        ),
        (
            "/getLogs",
            json!({"Namespace": "team", "PodUID": "x,y=z", "PodName": "p"}),
            400,
            "UID",
        ),
    ];
    for (path, body, want, needle) in cases {
        let method = if path == "/getLogs" {
            Method::GET
        } else {
            Method::POST
        };
        let (st, v) = call(&c, method, format!("{base}{path}"), body.to_string()).await;
        assert_eq!(st.as_u16(), want, "{path}: {v}");
        assert!(message_mentions(&v, needle), "{path}: {v} lacks {needle:?}");
    }
    p.shutdown().await;
}

/// A client that writes its whole body before it reads (as plain HTTP/1.1
/// clients do) against a 16 MiB limit with 20 MB: before, the plugin closed
/// after 16 MiB and the client's write failed with a broken pipe; now it
/// reads the 413.
#[tokio::test]
async fn a_client_that_sends_everything_first_reads_the_413() {
    use std::io::{Read, Write};
    let p = plugin(offline_config()).await;
    let addr = p.addr();
    let outcome = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        let n = 20 * 1000 * 1000;
        write!(
            s,
            "POST /create HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
        )?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < n {
            let k = chunk.len().min(n - sent);
            s.write_all(&chunk[..k])?;
            sent += k;
        }
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .await
    .expect("join");
    let answer = outcome.expect("the whole body is sent and the answer read");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body_too_large\""), "{answer}");
    p.shutdown().await;
}
