//! The men in the middle of the MITM tests: a TLS-terminating proxy with its
//! own certificate, and a plain-HTTP proxy that answers the bastion-key call
//! itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use offload_provider::tls::{CertFingerprint, ServerTrust, plugin_client_config};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

/// A certificate and key for `names`, written to `dir/<stem>.{crt,key}`:
/// (cert path, key path, SHA-256 of the certificate).
pub fn cert_files(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf, CertFingerprint) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("cert");
    let crt = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&crt, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (crt, key, CertFingerprint::of(ck.cert.der()))
}

/// Terminates TLS with its own certificate and relays the plaintext to the
/// plugin over TLS (it knows the plugin's certificate, as an attacker
/// would). Counts the plaintext bytes clients sent through it: with a
/// pinned certificate that must stay 0 (the token never reaches it).
pub struct TlsProxy {
    pub addr: SocketAddr,
    pub plaintext_from_clients: Arc<AtomicUsize>,
    pub handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsProxy {
    pub async fn start(
        cert: &Path,
        key: &Path,
        upstream: SocketAddr,
        upstream_pin: CertFingerprint,
    ) -> TlsProxy {
        let server = offload_runtime::tls::load_server_config(
            cert,
            key,
            offload_runtime::tls::ClientAuth::None,
        )
        .expect("proxy server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let mut client =
            plugin_client_config(ServerTrust::Pinned(upstream_pin), None).expect("client config");
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let plaintext = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (p, h) = (plaintext.clone(), handshakes.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, connector, p, h) =
                    (acceptor.clone(), connector.clone(), p.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(mut down) = acceptor.accept(tcp).await else {
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    let Ok(up_tcp) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let name = ServerName::try_from("127.0.0.1").expect("name");
                    let Ok(mut up) = connector.connect(name, up_tcp).await else {
                        return;
                    };
                    if let Ok((from_client, _)) =
                        tokio::io::copy_bidirectional(&mut down, &mut up).await
                    {
                        p.fetch_add(from_client as usize, Ordering::SeqCst);
                    }
                });
            }
        });
        TlsProxy {
            addr,
            plaintext_from_clients: plaintext,
            handshakes,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn plaintext(&self) -> usize {
        self.plaintext_from_clients.load(Ordering::SeqCst)
    }
}

/// Plain HTTP in the middle: relays every call to the plugin, except `GET
/// /bastion/publicKey`, which it answers with a key of its choosing.
pub struct KeySwapProxy {
    pub addr: SocketAddr,
    pub key: Arc<Mutex<String>>,
    pub key_answers: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeySwapProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct SwapState {
    upstream: String,
    http: reqwest::Client,
    key: Arc<Mutex<String>>,
    answers: Arc<AtomicUsize>,
}

async fn relay(
    State(s): State<SwapState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut req = s.http.request(method, format!("{}{}", s.upstream, uri));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    match req.body(body).send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.bytes().await.unwrap_or_default()).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn swapped_key(State(s): State<SwapState>) -> Response {
    s.answers.fetch_add(1, Ordering::SeqCst);
    let key = s.key.lock().expect("lock").clone();
    axum::Json(serde_json::json!({ "publicKey": key })).into_response()
}

impl KeySwapProxy {
    pub async fn start(upstream: String, key: &str) -> KeySwapProxy {
        let key = Arc::new(Mutex::new(key.to_owned()));
        let answers = Arc::new(AtomicUsize::new(0));
        let state = SwapState {
            upstream,
            http: reqwest::Client::new(),
            key: key.clone(),
            answers: answers.clone(),
        };
        let app = Router::new()
            .route("/bastion/publicKey", get(swapped_key))
            .fallback(any(relay))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KeySwapProxy {
            addr,
            key,
            key_answers: answers,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn offer(&self, key: &str) {
        *self.key.lock().expect("lock") = key.to_owned();
    }
}
