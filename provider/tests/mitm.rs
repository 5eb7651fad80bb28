//! Man in the middle of the plugin link, on the real clusters with the real
//! plugin (`offload_plugin::start` against the remote cluster):
//!
//! - a TLS-terminating proxy with another certificate: a provider that pins
//!   the plugin's certificate (SHA-256, or its CA) refuses the handshake, no
//!   call goes through and the proxy never reads a byte of plaintext (so not
//!   the token either);
//! - a plain-HTTP proxy (`--plugin-insecure`) that swaps the `publicKey`
//!   answer: the first key is pinned, the swapped one is refused, the
//!   gateway's `authorized_keys` do not change (not even across a provider
//!   restart), a Warning Event on the node says why, a metric counts it;
//!   the documented rotation (annotation with the new fingerprint) applies it;
//! - mTLS end to end: the plugin refuses a provider without the client
//!   certificate (or with one of another CA) and serves one with it.

#[allow(unused_imports)]
mod common;
#[path = "mitm/proxies.rs"]
mod proxies;

use std::path::Path;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use offload_plugin::config::{Listen, PluginConfig};
use offload_provider::bastion_pin::{
    ACCEPT_ANNOTATION, REASON_REFUSED, REASON_ROTATED, fingerprint,
};
use offload_provider::client::{ClientSettings, PluginClient, PluginError};
use offload_provider::config::PluginMode;
use offload_provider::tls::CertFingerprint;
use offload_wire::keys::CONDITION_PLUGIN_REACHABLE;
use proxies::{KeySwapProxy, TlsProxy, cert_files};

const TOKEN: &str = "mitm-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(60);

/// The real plugin serving TLS on loopback with `cert`/`key`, the bearer
/// token [`TOKEN`] and, with `client_ca`, mTLS.
async fn tls_plugin(
    env: &Env,
    dir: &Path,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> offload_plugin::RunningPlugin {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).expect("token file");
    let mut config = PluginConfig::for_tests();
    config.listen = Listen::Tcp("127.0.0.1:0".parse().expect("addr"));
    config.token_file = Some(token);
    config.tls_cert = Some(cert.to_owned());
    config.tls_key = Some(key.to_owned());
    config.tls_client_ca = client_ca.map(Path::to_owned);
    config.status_watch = common::status_watch_default();
    let p = offload_plugin::start(config, env.remote.clone())
        .await
        .expect("plugin starts");
    assert!(
        p.wait_ready(Duration::from_secs(120)).await,
        "plugin cache synced"
    );
    p
}

fn settings(url: &str, dir: &Path) -> ClientSettings {
    let mut s = ClientSettings::new(url, PluginMode::Plugin);
    s.token_file = Some(dir.join("token"));
    s.retries = 0;
    s.timeout = Duration::from_secs(10);
    s
}

fn client(s: ClientSettings) -> PluginClient {
    PluginClient::new(s, None).expect("client")
}

/// [`provider_config`]'s testbed settings, for a plugin at `url`.
fn config_for(env: &Env, node: &str, url: &str) -> offload_provider::config::Config {
    let mut c = offload_provider::config::Config::for_node(node, url);
    c.kubelet_addr = "0.0.0.0:0".parse().expect("addr");
    c.admin_addr = None;
    c.client_ca_file = Some(local_pki(env.tb).join("ca.crt"));
    c.status_interval = Duration::from_millis(500);
    c.ping_interval = Duration::from_millis(500);
    c.plugin_retries = 0;
    c.plugin_connect_timeout = Duration::from_secs(2);
    c
}

fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_another_certificate_gets_no_call_through() {
    install_ring();
    let env = env().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key, pin) = cert_files(dir.path(), "plugin", &["127.0.0.1"]);
    let plugin = tls_plugin(&env, dir.path(), &crt, &key, None).await;
    let direct = format!("https://{}", plugin.addr());
    let (mcrt, mkey, mitm_pin) = cert_files(dir.path(), "mitm", &["127.0.0.1"]);
    let proxy = TlsProxy::start(&mcrt, &mkey, plugin.addr(), pin).await;

    // The proxy works: a client that trusts *its* certificate gets answers.
    let mut fooled = settings(&proxy.url(), dir.path());
    fooled.cert_sha256 = Some(mitm_pin);
    client(fooled)
        .ping()
        .await
        .expect("the proxy relays to the plugin");
    // A fooled client hands the proxy its plaintext, token included
    // (counted when the relayed connection closes: the dropped client's
    // pool closes it).
    let read_by_proxy = wait_for(
        "the proxy to count the fooled client's bytes",
        WAIT,
        async || Some(proxy.plaintext()).filter(|n| *n > 0),
    )
    .await;

    // Pinned to the plugin's certificate: through the proxy nothing succeeds.
    let mut pinned = settings(&proxy.url(), dir.path());
    pinned.cert_sha256 = Some(pin);
    let c = client(pinned.clone());
    let err = c.ping().await.expect_err("pinned client refuses the proxy");
    assert!(matches!(err, PluginError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("is not the pinned"), "{err}");
    assert!(c.bastion_public_key().await.is_err());
    assert!(c.status(&[]).await.is_err());
    // The same client, straight to the plugin: fine.
    pinned.url = direct.clone();
    client(pinned)
        .ping()
        .await
        .expect("pinned certificate accepted");

    // Trusting the plugin's CA (its self-signed certificate) instead of a pin.
    let mut by_ca = settings(&proxy.url(), dir.path());
    by_ca.ca_file = Some(crt.clone());
    let err = client(by_ca.clone())
        .ping()
        .await
        .expect_err("CA client refuses the proxy");
    assert!(matches!(err, PluginError::Tls(_)), "{err:?}");
    by_ca.url = direct;
    client(by_ca)
        .ping()
        .await
        .expect("the plugin's own certificate verifies");

    whole_provider_never_ready_through(&env, &proxy.url(), pin, dir.path()).await;
    assert_eq!(
        proxy.plaintext(),
        read_by_proxy,
        "the pinned provider sent the proxy no plaintext"
    );
    eprintln!(
        "proxy handshakes completed: {}",
        proxy.handshakes.load(std::sync::atomic::Ordering::SeqCst)
    );
    plugin.shutdown().await;
}

/// The whole provider, pinned, pointed at a proxy with another certificate:
/// the plugin never counts as reachable (the node stays Ready by design, an
/// outage never evicts, but `PluginReachable` is not True and says why) and
/// the TLS failures are counted.
async fn whole_provider_never_ready_through(
    env: &Env,
    url: &str,
    pin: CertFingerprint,
    dir: &Path,
) {
    let node = node_name("vn-mitm-tls");
    let (_ns, _cleanup, _pods) = test_namespace(env, "prov-mitm-tls", &[&node]).await;
    let mut cfg = config_for(env, &node, url);
    cfg.plugin_cert_sha256 = Some(pin);
    cfg.plugin_token_file = Some(dir.join("token"));
    let prov = start_provider(env, cfg).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let reachable = node_condition(&env.local, &node, CONDITION_PLUGIN_REACHABLE).await;
    let prov_metrics = prov.metrics.clone();
    prov.shutdown().await;
    assert!(
        reachable.as_ref().is_none_or(|(s, _, _)| s != "True"),
        "plugin reachable through a MITM: {reachable:?}"
    );
    // What an operator sees on the node: why the plugin is unreachable.
    let message = reachable.map(|(_, _, m)| m).unwrap_or_default();
    assert!(
        message.contains("is not the pinned"),
        "node condition: {message:?}"
    );
    let metrics = prov_metrics.registry().encode().expect("metrics");
    assert!(
        metrics.contains("error=\"tls\""),
        "TLS failures counted:\n{metrics}"
    );
}

async fn configmap(env: &Env, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(env.local.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

fn blob(key: &str) -> String {
    key.split_whitespace().nth(1).expect("key blob").to_owned()
}

async fn authorized_keys(env: &Env, ns: &str, gw: &str) -> String {
    configmap(env, ns, gw)
        .await
        .and_then(|c| c.data)
        .and_then(|mut d| d.remove("authorized_keys"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_swapped_bastion_key_is_refused_and_the_gateway_keeps_the_pinned_one() {
    install_ring();
    let env = env().await;
    let plugin = common::Plugin::start(&env.remote).await;
    let (_, key_a) = offload_wire::tunnel::generate_ed25519("bastion-a").expect("key a");
    let (_, key_b) = offload_wire::tunnel::generate_ed25519("attacker-b").expect("key b");
    let proxy = KeySwapProxy::start(plugin.url(), &key_a).await;

    let node = node_name("vn-mitm-key");
    let (ns, _cleanup, _pods) = test_namespace(&env, "prov-mitm-key", &[&node]).await;
    let gw = format!("gw-{}", &node[node.len() - 6..]);
    let pin_name = format!("{gw}-bastion-pin");
    let mut cfg = provider_config(&env, &node, &plugin);
    cfg.plugin_url = proxy.url();
    cfg.plugin_insecure = true;
    cfg.gateway.address = Some("192.0.2.1:2222".into());
    cfg.gateway.node_port = 0;
    cfg.gateway.namespace = Some(ns.clone());
    cfg.gateway.name = gw.clone();
    cfg.bastion_key_refresh = Duration::from_secs(1);
    let prov = start_provider(&env, cfg.clone()).await;

    // First use: A is pinned and authorized.
    wait_for("key A pinned and authorized", WAIT, async || {
        let pin = configmap(&env, &ns, &pin_name).await?.data?;
        (pin.get("publicKey").map(|k| blob(k)) == Some(blob(&key_a))
            && authorized_keys(&env, &ns, &gw)
                .await
                .contains(&blob(&key_a)))
        .then_some(())
    })
    .await;

    // The man in the middle swaps the answer.
    proxy.offer(&key_b);
    let fp_b = fingerprint(&key_b).expect("fingerprint");
    let refused = wait_for("a BastionKeyRefused event on the node", WAIT, async || {
        let ev = node_events(&env.local, &node, REASON_REFUSED).await;
        (!ev.is_empty()).then_some(ev)
    })
    .await;
    assert!(
        refused[0].contains(&fp_b),
        "the event names the offered key: {refused:?}"
    );
    let asked = proxy.key_answers.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        proxy.key_answers.load(std::sync::atomic::Ordering::SeqCst) > asked,
        "still asking"
    );
    assert_only_a(&env, &ns, &gw, &key_a, &key_b, "after the swap").await;
    assert_refusal_counted(&prov);

    // A provider restart keeps the pin: still A.
    prov.shutdown().await;
    let prov = start_provider(&env, cfg).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_only_a(&env, &ns, &gw, &key_a, &key_b, "after a restart").await;
    accept_rotation(&env, &ns, &gw, &key_b).await;
    wait_for("a BastionKeyRotated event", WAIT, async || {
        (!node_events(&env.local, &node, REASON_ROTATED)
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    prov.shutdown().await;
}

/// The gateway authorizes `a` and not `b`.
async fn assert_only_a(env: &Env, ns: &str, gw: &str, a: &str, b: &str, when: &str) {
    let ak = authorized_keys(env, ns, gw).await;
    assert!(
        ak.contains(&blob(a)) && !ak.contains(&blob(b)),
        "authorized_keys {when}:\n{ak}"
    );
}

/// The refusal is on `/metrics`: the counter above 0, the mismatch gauge 1.
fn assert_refusal_counted(prov: &offload_provider::provider::RunningProvider) {
    let metrics = prov.metrics.registry().encode().expect("metrics");
    let refused_line = metrics
        .lines()
        .find(|l| l.starts_with("offload_provider_bastion_key_refused_total "))
        .unwrap_or_default()
        .to_owned();
    assert!(
        !refused_line.ends_with(" 0") && !refused_line.is_empty(),
        "{refused_line}"
    );
    assert!(
        metrics.contains("offload_provider_bastion_key_mismatch 1"),
        "{metrics}"
    );
}

/// The documented rotation: the operator accepts exactly `key`'s
/// fingerprint on the pin; the gateway then authorizes it, the pin holds it
/// and the acceptance is used up.
async fn accept_rotation(env: &Env, ns: &str, gw: &str, key_b: &str) {
    let pin_name = format!("{gw}-bastion-pin");
    let fp_b = fingerprint(key_b).expect("fingerprint");
    let patch = serde_json::json!({"metadata": {"annotations": {ACCEPT_ANNOTATION: fp_b}}});
    Api::<ConfigMap>::namespaced(env.local.clone(), ns)
        .patch(&pin_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate the pin");
    wait_for(
        "key B authorized after the operator accepted it",
        WAIT,
        async || {
            authorized_keys(env, ns, gw)
                .await
                .contains(&blob(key_b))
                .then_some(())
        },
    )
    .await;
    let pin = configmap(env, ns, &pin_name).await.expect("pin");
    assert_eq!(
        pin.data
            .as_ref()
            .and_then(|d| d.get("publicKey"))
            .map(|k| blob(k)),
        Some(blob(key_b))
    );
    let used_up = pin.metadata.annotations.unwrap_or_default();
    assert!(
        !used_up.contains_key(ACCEPT_ANNOTATION),
        "the acceptance is used up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_the_plugin_serves_only_a_provider_with_the_client_certificate() {
    install_ring();
    let env = env().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key, pin) = cert_files(dir.path(), "plugin", &["127.0.0.1"]);
    let callers = testbed::pki::ca("mitm-test-callers");
    let ca_file = dir.path().join("callers.crt");
    std::fs::write(&ca_file, callers.pem()).expect("ca");
    // Certificate and key in one PEM file: the provider reads each from it.
    let good = dir.path().join("provider.pem");
    std::fs::write(&good, testbed::pki::client_identity(&callers, "provider")).expect("identity");
    let stranger = testbed::pki::ca("someone-else");
    let bad = dir.path().join("stranger.pem");
    std::fs::write(&bad, testbed::pki::client_identity(&stranger, "provider")).expect("identity");
    let plugin = tls_plugin(&env, dir.path(), &crt, &key, Some(&ca_file)).await;
    let url = format!("https://{}", plugin.addr());

    let mut s = settings(&url, dir.path());
    s.cert_sha256 = Some(pin);
    let err = client(s.clone())
        .ping()
        .await
        .expect_err("no client certificate: refused");
    eprintln!("without a client certificate: {err}");
    let mut wrong = s.clone();
    wrong.client_cert = Some((bad.clone(), bad.clone()));
    let err = client(wrong)
        .ping()
        .await
        .expect_err("another CA's certificate: refused");
    eprintln!("with another CA's certificate: {err}");
    let mut with = s.clone();
    with.client_cert = Some((good.clone(), good.clone()));
    client(with.clone())
        .ping()
        .await
        .expect("the client certificate opens the door");
    // A pod the plugin does not know (`/status` with `[]` is the ping,
    // answered with the ping's object since the plugin reports capacity).
    let unknown: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nobody", "namespace": "default", "uid": "00000000-0000-4000-8000-000000000000"},
        "spec": {"nodeName": "vn-mtls", "containers": []},
    }))
    .expect("pod");
    client(with)
        .status(&[unknown])
        .await
        .expect("status with mTLS");

    // The whole provider over mTLS: the node turns Ready.
    let node = node_name("vn-mtls");
    let (_ns, _cleanup, _pods) = test_namespace(&env, "prov-mtls", &[&node]).await;
    let mut cfg = config_for(&env, &node, &url);
    cfg.plugin_cert_sha256 = Some(pin);
    cfg.plugin_token_file = Some(dir.path().join("token"));
    cfg.plugin_client_cert_file = Some(good.clone());
    cfg.plugin_client_key_file = Some(good);
    let prov = start_provider(&env, cfg).await;
    wait_for("the node Ready over mTLS", WAIT, async || {
        node_ready(&env.local, &node)
            .await
            .filter(|(s, _, _)| s == "True")
    })
    .await;
    prov.shutdown().await;
    plugin.shutdown().await;
}

/// Token rotation without restarts: the plugin re-reads its token file, the
/// provider reads its own on every call. Whoever kept the old token (a
/// former operator, a leaked copy) is refused as soon as the file changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_takes_effect_on_both_sides_without_a_restart() {
    install_ring();
    let env = env().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key, pin) = cert_files(dir.path(), "plugin", &["127.0.0.1"]);
    let plugin = tls_plugin(&env, dir.path(), &crt, &key, None).await;
    let url = format!("https://{}", plugin.addr());
    let old_copy = dir.path().join("old-token");
    std::fs::write(&old_copy, TOKEN).expect("old copy");

    let mut provider_side = settings(&url, dir.path());
    provider_side.cert_sha256 = Some(pin);
    let provider_side = client(provider_side);
    let mut leaked = settings(&url, dir.path());
    leaked.cert_sha256 = Some(pin);
    leaked.token_file = Some(old_copy);
    let leaked = client(leaked);
    provider_side.ping().await.expect("before the rotation");
    leaked
        .ping()
        .await
        .expect("the old token works before the rotation");

    // One file for both sides here (the plugin's and the provider's copies
    // are rotated together); a new length makes the change visible at once.
    std::fs::write(
        dir.path().join("token"),
        "a-new-and-longer-token-after-rotation",
    )
    .expect("rotate");
    provider_side
        .ping()
        .await
        .expect("the new token, no restart");
    match leaked.ping().await {
        Err(PluginError::Status { status: 401, .. }) => {}
        other => panic!("the old token must be refused after the rotation: {other:?}"),
    }
    plugin.shutdown().await;
}
