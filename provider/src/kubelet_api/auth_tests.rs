//! Tests of the gate against a fake apiserver (a `kube::Client` over a function):
//! `good` is alice's token, alice may `get` `nodes/proxy`, user `boom`
//! makes the SubjectAccessReview fail.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pretty_assertions::assert_eq;
use rustls::pki_types::CertificateDer;
use tower::ServiceExt;

use super::*;

#[derive(Default)]
struct Calls {
    token_reviews: AtomicUsize,
    access_reviews: AtomicUsize,
}

fn answer(calls: &Calls, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    if path.ends_with("/tokenreviews") {
        calls.token_reviews.fetch_add(1, Ordering::SeqCst);
        let ok = body["spec"]["token"] == "good";
        let user = serde_json::json!({"username": "alice", "uid": "a-1", "groups": ["devs"]});
        let status = if ok {
            serde_json::json!({"authenticated": true, "user": user})
        } else {
            serde_json::json!({"authenticated": false})
        };
        return (
            201,
            serde_json::json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": {}, "status": status}),
        );
    }
    calls.access_reviews.fetch_add(1, Ordering::SeqCst);
    let spec = &body["spec"];
    if spec["user"] == "boom" {
        return (
            500,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "boom", "code": 500}),
        );
    }
    let attrs = &spec["resourceAttributes"];
    assert_eq!(attrs["resource"], "nodes");
    assert_eq!(attrs["name"], "vn");
    let allowed =
        spec["user"] == "alice" && attrs["subresource"] == "proxy" && attrs["verb"] == "get";
    (
        201,
        serde_json::json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": {}, "status": {"allowed": allowed}}),
    )
}

fn fake_apiserver(calls: Arc<Calls>) -> kube::Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let calls = Arc::clone(&calls);
        async move {
            let path = req.uri().path().to_string();
            let bytes = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let (status, out) = answer(&calls, &path, &body);
            let resp = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(out.to_string())))
                .expect("response");
            Ok::<_, Infallible>(resp)
        }
    });
    kube::Client::new(svc, "default")
}

fn auth(calls: &Arc<Calls>, args: KubeletAuthArgs) -> Auth {
    Auth::new(
        "vn".into(),
        Some(fake_apiserver(Arc::clone(calls))),
        true,
        args,
        &SharedRegistry::default(),
    )
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        name: name.into(),
        ..Default::default()
    }
    .authenticated()
}

const GET_PROXY: Attributes = Attributes {
    verb: "get",
    subresource: "proxy",
};

#[tokio::test]
async fn decisions_are_cached_for_their_ttl_and_errors_never() {
    let calls = Arc::new(Calls::default());
    let a = auth(
        &calls,
        KubeletAuthArgs {
            unauthorized_ttl: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let n = || calls.access_reviews.load(Ordering::SeqCst);
    assert_eq!(
        a.authorize(&user("alice"), GET_PROXY).await,
        Decision::Allowed
    );
    assert_eq!(
        a.authorize(&user("alice"), GET_PROXY).await,
        Decision::Allowed
    );
    assert_eq!(n(), 1, "allowed: cached");
    let logs = Attributes {
        verb: "get",
        subresource: "log",
    };
    assert_eq!(a.authorize(&user("alice"), logs).await, Decision::Denied);
    assert_eq!(n(), 2, "other attributes: another review");
    assert_eq!(a.authorize(&user("eve"), GET_PROXY).await, Decision::Denied);
    assert_eq!(a.authorize(&user("eve"), GET_PROXY).await, Decision::Denied);
    assert_eq!(n(), 3, "denied: cached");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(a.authorize(&user("eve"), GET_PROXY).await, Decision::Denied);
    assert_eq!(n(), 4, "denial expired");
    // Same name, other groups: another identity.
    let mut alice_admin = user("alice");
    alice_admin.groups.push("admins".into());
    a.authorize(&alice_admin, GET_PROXY).await;
    assert_eq!(n(), 5);
    assert_eq!(a.authorize(&user("boom"), GET_PROXY).await, Decision::Error);
    assert_eq!(a.authorize(&user("boom"), GET_PROXY).await, Decision::Error);
    assert_eq!(n(), 7, "errors are not cached");
}

#[tokio::test]
async fn tokens_are_cached_and_unknown_ones_capped() {
    let calls = Arc::new(Calls::default());
    let a = auth(
        &calls,
        KubeletAuthArgs {
            token_review_qps: 0.0,
            token_review_burst: 3,
            ..Default::default()
        },
    );
    let n = || calls.token_reviews.load(Ordering::SeqCst);
    let tok = |t: &str| (None, Some(t.to_string()));
    let Authn::User(u) = a.authenticate(tok("good")).await else {
        panic!("good token")
    };
    assert_eq!((u.name.as_str(), u.uid.as_str()), ("alice", "a-1"));
    assert_eq!(u.groups, vec!["devs", "system:authenticated"]);
    assert!(matches!(
        a.authenticate(tok("bad")).await,
        Authn::Unauthenticated("bad-token")
    ));
    assert_eq!(n(), 2);
    for i in 0..50 {
        // Known tokens keep working without reviews while the bucket is empty.
        assert!(matches!(a.authenticate(tok("good")).await, Authn::User(_)));
        assert!(matches!(
            a.authenticate(tok("bad")).await,
            Authn::Unauthenticated(_)
        ));
        let _ = a.authenticate(tok(&format!("made-up-{i}"))).await;
    }
    assert_eq!(n(), 3, "one more review, then the cap (burst 3, rate 0)");
    assert!(matches!(a.authenticate(tok("new")).await, Authn::Throttled));
    assert_eq!(a.inner.metrics.token_reviews_throttled.get(), 50);
    // No credentials, or tokens off.
    assert!(matches!(
        a.authenticate((None, None)).await,
        Authn::Unauthenticated("no-credentials")
    ));
}

fn cert_der(cn: &str, org: &str) -> CertificateDer<'static> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let key = rcgen::KeyPair::generate().expect("key");
    p.self_signed(&key).expect("cert").der().clone()
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    cert: Option<(&str, &str)>,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(axum::body::Body::empty()).expect("request");
    if let Some((cn, org)) = cert {
        req.extensions_mut()
            .insert(PeerCertificates(Arc::new(vec![cert_der(cn, org)])));
    }
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// (method, path, client certificate (CN, O), token, status, body)
type Case<'a> = (
    &'a str,
    &'a str,
    Option<(&'a str, &'a str)>,
    Option<&'a str>,
    u16,
    &'a str,
);

#[tokio::test]
async fn the_gate_answers_like_a_kubelet() {
    let calls = Arc::new(Calls::default());
    let a = auth(&calls, KubeletAuthArgs::default());
    let app = Router::new()
        .route("/{*rest}", any(|| async { "served" }))
        .layer(axum::middleware::from_fn_with_state(a, gate));
    let cases: [Case; 8] = [
        ("GET", "/pods", None, None, 401, "Unauthorized"),
        ("GET", "/pods", None, Some("bad"), 401, "Unauthorized"),
        (
            "GET",
            "/containerLogs/ns/p/c",
            None,
            Some("good"),
            200,
            "served",
        ),
        (
            "GET",
            "/containerLogs/ns/p/c",
            Some(("alice", "devs")),
            None,
            200,
            "served",
        ),
        (
            "GET",
            "/pods",
            Some(("mallory", "tenants")),
            None,
            403,
            "Forbidden (user=mallory, verb=get, resource=nodes, subresource=proxy)",
        ),
        (
            "POST",
            "/exec/ns/p/c",
            None,
            Some("good"),
            403,
            "Forbidden (user=alice, verb=create, resource=nodes, subresource=proxy)",
        ),
        (
            "GET",
            "/metrics",
            None,
            Some("good"),
            403,
            "Forbidden (user=alice, verb=get, resource=nodes, subresource=metrics)",
        ),
        (
            "GET",
            "/pods",
            Some(("boom", "x")),
            None,
            500,
            "Authorization error (user=boom, verb=get, resource=nodes, subresource=proxy)",
        ),
    ];
    for (method, path, cert, token, status, body) in cases {
        assert_eq!(
            call(&app, method, path, cert, token).await,
            (status, body.to_string()),
            "{method} {path} as {cert:?} {token:?}"
        );
    }
    let (status, _) = call(&app, "OPTIONS", "/pods", Some(("alice", "devs")), None).await;
    assert_eq!(status, 405);
}
