use super::*;
use std::io::Write as _;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A self-signed certificate for 127.0.0.1 and its PEM files.
struct Pem {
    dir: tempfile::TempDir,
    cert: CertificateDer<'static>,
}

impl Pem {
    fn new() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("rcgen");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).expect("write");
        Pem {
            dir,
            cert: ck.cert.der().clone(),
        }
    }
    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }
}

#[test]
fn loading_errors_name_the_file() {
    install_ring();
    let pem = Pem::new();
    let missing = pem.dir.path().join("missing.pem");
    assert!(matches!(load_certs(&missing), Err(TlsError::Read { .. })));
    let empty = pem.dir.path().join("empty.pem");
    std::fs::File::create(&empty)
        .and_then(|mut f| f.write_all(b"nothing here\n"))
        .expect("write");
    let err = load_certs(&empty).expect_err("no cert");
    assert!(matches!(err, TlsError::NoCert(_)));
    assert!(err.to_string().contains("empty.pem"), "{err}");
    assert!(matches!(load_key(&pem.cert()), Err(TlsError::NoKey(_))));
    let cfg = load_server_config(&pem.cert(), &pem.key(), ClientAuth::None).expect("config");
    assert_eq!(
        cfg.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    load_server_config(&pem.cert(), &pem.key(), ClientAuth::Optional(&pem.cert()))
        .expect("optional client certs");
    load_server_config(&pem.cert(), &pem.key(), ClientAuth::Required(&pem.cert()))
        .expect("required client certs");
    assert!(load_server_config(&pem.cert(), &pem.key(), ClientAuth::Required(&empty)).is_err());
}

fn app() -> Router {
    Router::new().route("/", get(|| async { "hello" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow"
        }),
    )
}

async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn plain_serves_and_drains_in_flight_requests() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(l, app(), stop.clone()));
    let ok = http_get(TcpStream::connect(addr).await.expect("connect"), "/").await;
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("hello"),
        "{ok}"
    );

    // A request in flight when the token is cancelled still gets its answer.
    let slow = tokio::spawn(async move {
        http_get(TcpStream::connect(addr).await.expect("connect"), "/slow").await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let answer = slow.await.expect("join");
    assert!(answer.ends_with("slow"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stopped")
        .expect("join");
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn tls_serves_and_drops_silent_handshakes() {
    install_ring();
    let pem = Pem::new();
    let cfg = load_server_config(&pem.cert(), &pem.key(), ClientAuth::None).expect("config");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_tls(
        l,
        cfg,
        app(),
        stop.clone(),
        Duration::from_millis(200),
    ));

    let mut roots = RootCertStore::empty();
    roots.add(pem.cert.clone()).expect("root");
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let ok = http_get(tls, "/").await;
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("hello"),
        "{ok}"
    );

    // A client that never speaks TLS is dropped after the handshake timeout.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed by the server in time");
    assert!(matches!(n, Ok(0) | Err(_)));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stopped")
        .expect("join");
}
