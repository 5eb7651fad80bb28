use super::*;
use offload_runtime::tls::{ClientAuth, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn fingerprints_parse_in_the_usual_spellings() {
    let hex = "3f2a".repeat(16);
    let want = parse_fingerprint(&hex).expect("bare hex");
    assert_eq!(want.0[0], 0x3f);
    assert_eq!(want.0[31], 0x2a);
    let colons = hex
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    for s in [
        format!("sha256:{hex}"),
        format!("SHA256:{}", hex.to_uppercase()),
        format!("sha256 Fingerprint={colons}"),
        format!("SHA256={colons}"),
        format!("  {colons}\n"),
    ] {
        assert_eq!(parse_fingerprint(&s), Ok(want), "{s}");
    }
    assert_eq!(want.to_string(), format!("sha256:{hex}"));
    for bad in [
        "",
        "sha256:",
        &hex[..62],
        &format!("{hex}00"),
        &"zz".repeat(32),
    ] {
        assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
    }
}

fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn cert(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let (mut certs, key) = self_signed(&[name.to_owned()]).expect("cert");
    (certs.remove(0), key)
}

/// A TLS handshake over an in-memory pipe; `Ok` when the client accepted
/// the server and a byte went through.
async fn handshake(
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client: rustls::ClientConfig,
) -> Result<(), String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(
        server_config(vec![server.0], server.1, ClientAuth::None).expect("server config"),
    );
    let srv = tokio::spawn(async move {
        let mut s = acceptor.accept(b).await.map_err(|e| e.to_string())?;
        s.write_all(b"x").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("plugin.example").expect("name");
    let mut c = connector
        .connect(name, a)
        .await
        .map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    c.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
    let _ = srv.await;
    Ok(())
}

#[tokio::test]
async fn the_pinned_certificate_is_the_only_one_accepted() {
    install_ring();
    // Names do not matter with a pin: the plugin is reached by node IP.
    let plugin = cert("some-other-name");
    let pin = CertFingerprint::of(&plugin.0);
    let cfg = plugin_client_config(ServerTrust::Pinned(pin), None).expect("client config");
    handshake(plugin, cfg)
        .await
        .expect("pinned certificate accepted");

    // A man in the middle with another certificate (even for the right name).
    let mitm = cert("plugin.example");
    let cfg = plugin_client_config(ServerTrust::Pinned(pin), None).expect("client config");
    let err = handshake(mitm, cfg)
        .await
        .expect_err("another certificate is refused");
    assert!(err.contains("is not the pinned"), "{err}");
}

#[tokio::test]
async fn a_ca_bundle_checks_signature_and_name() {
    install_ring();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_der, key) = cert("plugin.example");
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &cert_der)
    );
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, pem).expect("write ca");
    let cfg = plugin_client_config(ServerTrust::Ca(&ca), None).expect("client config");
    handshake((cert_der, key), cfg)
        .await
        .expect("self-signed leaf as its own CA");
    let cfg = plugin_client_config(ServerTrust::Ca(&ca), None).expect("client config");
    assert!(
        handshake(cert("plugin.example"), cfg).await.is_err(),
        "another key, same name"
    );
}
