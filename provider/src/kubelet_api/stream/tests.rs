use super::*;
use axum::http::HeaderValue;

#[test]
fn exec_options_take_the_kubelet_and_the_user_names() {
    let o = ExecOptions::parse("command=sh&command=-c&command=exit%203&input=1&output=1&error=1")
        .expect("parse");
    assert_eq!(o.command, ["sh", "-c", "exit 3"]);
    assert!(o.stdin && o.stdout && o.stderr && !o.tty);
    let o = ExecOptions::parse("command=sh&stdin=true&stdout=true&stderr=true&tty=true")
        .expect("parse");
    assert!(o.stdin && o.stdout && o.tty);
    assert!(!o.stderr, "a terminal merges stderr into stdout");
    let e = ExecOptions::parse("command=ls").expect_err("no stream");
    assert!(e.contains("at least 1 of stdin, stdout, stderr"), "{e}");
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn upgrades_are_recognized() {
    let spdy = headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]);
    assert_eq!(upgrade_of(&spdy), Some(Upgrade::Spdy));
    let ws = headers(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
    ]);
    assert_eq!(upgrade_of(&ws), Some(Upgrade::WebSocket));
    assert_eq!(upgrade_of(&headers(&[("upgrade", "websocket")])), None);
}

#[test]
fn negotiation_follows_the_client_order_and_refuses_with_403() {
    let h = headers(&[
        ("x-stream-protocol-version", "v9.channel.k8s.io"),
        ("x-stream-protocol-version", "v3.channel.k8s.io"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ]);
    let client = protocols(&Upgrade::Spdy, &h);
    assert_eq!(
        negotiate(&client, &SPDY_EXEC_PROTOCOLS, "channel.k8s.io").ok(),
        Some("v3.channel.k8s.io")
    );
    assert_eq!(
        negotiate(&[], &SPDY_EXEC_PROTOCOLS, "channel.k8s.io").ok(),
        Some("channel.k8s.io")
    );
    let r = negotiate(&["v9"], &SPDY_EXEC_PROTOCOLS, "channel.k8s.io").expect_err("none");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers()
            .contains_key("X-Accepted-Stream-Protocol-Versions")
    );
}

#[test]
fn the_open_gauge_returns_to_zero() {
    let m = StreamMetrics::register(&SharedRegistry::default());
    let a = m.open("exec");
    let b = m.open("exec");
    assert_eq!(m.open_now("exec"), 2);
    drop(a);
    drop(b);
    assert_eq!(m.open_now("exec"), 0);
}
