//! `GET /events` without a cluster: authenticated like every API route, a
//! caller must name its node, and the answer is the wire's `EventsAnswer`.
//! (What it answers, per caller, is tested on the real clusters in
//! `provider/tests/remote_events.rs`.)

use offload_wire::events::EventsAnswer;
use reqwest::StatusCode;

// Shared with the other offline tests, which use more of it.
#[allow(dead_code)]
mod offline;
use offline::*;

#[tokio::test]
async fn events_need_the_token_and_a_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "s3cret-token\n").expect("write token");
    let mut cfg = offline_config();
    cfg.insecure_no_auth = false;
    cfg.token_file = Some(token_path);
    let p = plugin(cfg).await;
    let base = format!("http://{}/events", p.addr());
    let c = http();
    let get = |query: &str, token: Option<&str>| {
        let mut req = c.get(format!("{base}?{query}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    for token in [None, Some("wrong")] {
        let resp = get("node=vn", token).await.expect("request");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "token {token:?}");
    }
    let resp = get("node=vn", Some("s3cret-token")).await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: EventsAnswer = resp.json().await.expect("an EventsAnswer");
    assert!(answer.events.is_empty() && !answer.more);
    assert!(!answer.cursor.is_empty());

    let long = format!("node={}", "a".repeat(300));
    for query in ["", "since=1.2", "node=", long.as_str()] {
        let resp = get(query, Some("s3cret-token")).await.expect("request");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "query {query:?}");
        let body: serde_json::Value = resp.json().await.expect("JSON error");
        assert_eq!(body["error"], "bad_request", "{body}");
    }
    p.shutdown().await;
}
