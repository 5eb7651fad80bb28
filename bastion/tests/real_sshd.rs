//! The bastion against a real OpenSSH `sshd` on loopback, running as a
//! non-root user with the gateway's config from the tunnel contract
//! (`offload_wire::tunnel::sshd`, what gateway-manager renders). Needs Debian's
//! openssh-server and openssh-client; fails (never skips) without them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_bastion::desired::{Desired, Forwards, Gateway, Target};
use offload_bastion::harness::{TestGateway, free_range, write_key};
use offload_bastion::metrics::Metrics;
use offload_bastion::supervisor::Supervisor;
use offload_bastion::tunnel::{GatewayTask, TunnelConfig};
use offload_runtime::shutdown::CancellationToken;
use offload_wire::tunnel::GatewayPort;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(15);

fn config(gw: &TestGateway) -> Arc<TunnelConfig> {
    let mut c = TunnelConfig::new(gw.user.clone(), gw.client.private.clone());
    c.listen_host = "127.0.0.1".into();
    c.keepalive_interval = Duration::from_secs(1);
    c.keepalive_max = 2;
    c.backoff_max = Duration::from_secs(1);
    c.retry_interval = Duration::from_millis(300);
    Arc::new(c)
}

fn gateway(gw: &TestGateway) -> Gateway {
    Gateway {
        address: gw.address(),
        host_key: gw.host_key.clone(),
    }
}

fn local(port: u16) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
    }
}

/// An echo server standing in for a remote pod.
async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

async fn echo_through(port: GatewayPort, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let s = TcpStream::connect(on_gateway(port)).await?;
    let (mut r, mut w) = s.into_split();
    let data = payload.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await?;
        anyhow::Ok(())
    });
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut got)).await??;
    writer.await??;
    Ok(got)
}

/// Where a gateway port listens (the test gateway is on loopback).
fn on_gateway(port: GatewayPort) -> (&'static str, u16) {
    ("127.0.0.1", port.0)
}

fn start(len: u16) -> TestGateway {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let range = free_range(len).expect("free range");
    TestGateway::start(range, "127.0.0.1").expect("start sshd (apt-get install openssh-server)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_carries_real_bytes_and_is_counted() {
    let gw = start(4);
    let echo = echo_server().await;
    let port = gw.range.first();
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::registered(
        reg.sub_registry_with_prefix("offload_bastion"),
    ));
    let mut task = GatewayTask::spawn(
        gateway(&gw),
        Forwards::from([(port, local(echo))]),
        config(&gw),
        Arc::clone(&metrics),
    );
    let st = task
        .wait_for(WAIT, |s| s.active.contains(&port))
        .await
        .unwrap_or_else(|| panic!("forward not up; sshd log:\n{}", gw.log()));
    assert!(st.connected && st.refused.is_empty());

    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let got = echo_through(port, &payload)
        .await
        .unwrap_or_else(|e| panic!("echo through tunnel: {e}; sshd log:\n{}", gw.log()));
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "bytes differ");
    // Several at once.
    let many = futures::future::join_all((0..20).map(|i| {
        let p = vec![i as u8; 10_000];
        async move { echo_through(port, &p).await.map(|g| g == p) }
    }))
    .await;
    assert!(many.into_iter().all(|r| matches!(r, Ok(true))));

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
    assert!(
        text.contains("offload_bastion_forwards{gateway=\""),
        "{text}"
    );
    assert!(
        text.contains("offload_bastion_bytes_total{gateway=")
            && text.contains("direction=\"ToPod\""),
        "{text}"
    );
    assert!(
        metrics
            .tunneled_connections
            .get_or_create(&Metrics::gateway(&gw.address()))
            .get()
            >= 21
    );

    // Removing the forward closes the port on the gateway.
    task.forwards.send_replace(Forwards::new());
    task.wait_for(WAIT, |s| s.active.is_empty())
        .await
        .expect("cancelled");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(on_gateway(port)).await.is_err());
    task.stop().await;
}

/// Runs a task that must not get in (forwarding the first port of the range)
/// and returns its error once it has one: never connected, no forward.
async fn refusal(gw: &TestGateway, g: Gateway, c: Arc<TunnelConfig>) -> String {
    let first = gw.range.first();
    let mut task = GatewayTask::spawn(
        g,
        Forwards::from([(first, local(9))]),
        c,
        Arc::new(Metrics::default()),
    );
    let st = task
        .wait_for(WAIT, |s| s.last_error.is_some())
        .await
        .expect("an error");
    assert!(!st.connected);
    assert!(TcpStream::connect(on_gateway(first)).await.is_err());
    task.stop().await;
    st.last_error.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_is_refused() {
    let gw = start(2);
    let dir = tempfile::tempdir().expect("tmp");
    let impostor = write_key(dir.path(), "other", "x").expect("key");
    let mut g = gateway(&gw);
    g.host_key = impostor.public;
    let err = refusal(&gw, g, config(&gw)).await;
    assert!(err.contains("pinned host key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_not_authorized_is_refused() {
    let gw = start(2);
    let dir = tempfile::tempdir().expect("tmp");
    let stranger = write_key(dir.path(), "stranger", "x").expect("key");
    let mut c = (*config(&gw)).clone();
    c.key = Arc::new(stranger.private);
    let err = refusal(&gw, gateway(&gw), Arc::new(c)).await;
    assert!(err.contains("refused our key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_outside_permitlisten_is_refused_others_work() {
    let gw = start(2);
    let echo = echo_server().await;
    let inside = gw.range.first();
    // Outside the key's permitlisten (the range), but free.
    let outside = GatewayPort(offload_bastion::harness::free_port().expect("port"));
    let mut task = GatewayTask::spawn(
        gateway(&gw),
        Forwards::from([(inside, local(echo)), (outside, local(echo))]),
        config(&gw),
        Arc::new(Metrics::default()),
    );
    let st = task
        .wait_for(WAIT, |s| {
            s.active.contains(&inside) && s.refused.contains(&outside)
        })
        .await
        .unwrap_or_else(|| panic!("expected one granted one refused; log:\n{}", gw.log()));
    assert!(!st.active.contains(&outside));
    assert_eq!(echo_through(inside, b"hi").await.expect("echo"), b"hi");
    assert!(TcpStream::connect(on_gateway(outside)).await.is_err());
    // Also on the other address: permitlisten pins 127.0.0.1.
    let mut c = (*config(&gw)).clone();
    c.listen_host = "0.0.0.0".into();
    let mut other = GatewayTask::spawn(
        gateway(&gw),
        Forwards::from([(gw.range.last(), local(echo))]),
        Arc::new(c),
        Arc::new(Metrics::default()),
    );
    other
        .wait_for(WAIT, |s| s.refused.contains(&gw.range.last()))
        .await
        .expect("0.0.0.0 refused");
    other.stop().await;
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_forwards_on_one_connection() {
    let gw = start(200);
    let echo = echo_server().await;
    let all: Forwards = gw.range.iter().map(|p| (p, local(echo))).collect();
    let t = Instant::now();
    let mut task = GatewayTask::spawn(
        gateway(&gw),
        all.clone(),
        config(&gw),
        Arc::new(Metrics::default()),
    );
    let st = task
        .wait_for(WAIT, |s| s.active.len() == 200)
        .await
        .unwrap_or_else(|| panic!("200 forwards not up; log tail:\n{}", gw.log()));
    eprintln!(
        "200 forwards up in {:?} (connect + auth + requests)",
        t.elapsed()
    );
    assert_eq!(st.connections, 1);
    let ok = futures::future::join_all(gw.range.iter().map(|p| async move {
        echo_through(p, format!("port {p}").as_bytes())
            .await
            .map(|g| g == format!("port {p}").as_bytes())
    }))
    .await;
    assert_eq!(ok.iter().filter(|r| matches!(r, Ok(true))).count(), 200);

    // Drop half: those ports close, the rest keep working.
    let keep: Forwards = all.iter().take(100).map(|(p, t)| (*p, t.clone())).collect();
    let t = Instant::now();
    task.forwards.send_replace(keep);
    task.wait_for(WAIT, |s| s.active.len() == 100)
        .await
        .expect("100 left");
    eprintln!("100 forwards cancelled in {:?}", t.elapsed());
    assert!(
        TcpStream::connect(on_gateway(gw.range.last()))
            .await
            .is_err()
    );
    assert!(echo_through(gw.range.first(), b"x").await.is_ok());
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_come_back_after_sshd_restart() {
    let mut gw = start(20);
    let echo = echo_server().await;
    let all: Forwards = gw.range.iter().map(|p| (p, local(echo))).collect();
    let metrics = Arc::new(Metrics::default());
    let mut task = GatewayTask::spawn(gateway(&gw), all, config(&gw), Arc::clone(&metrics));
    task.wait_for(WAIT, |s| s.active.len() == 20)
        .await
        .expect("up");

    // Kill the whole sshd tree (listener and the session holding the ports).
    gw.kill();
    task.wait_for(WAIT, |s| !s.connected)
        .await
        .expect("drop noticed");
    assert!(
        TcpStream::connect(on_gateway(gw.range.first()))
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    gw.restart().expect("restart sshd");
    let st = task
        .wait_for(WAIT, |s| s.connected && s.active.len() == 20)
        .await
        .unwrap_or_else(|| panic!("forwards did not come back; log:\n{}", gw.log()));
    eprintln!("20 forwards back {:?} after sshd restarted", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(st.connections, 2);
    assert_eq!(
        metrics
            .reconnects
            .get_or_create(&Metrics::gateway(&gw.address()))
            .get(),
        1
    );
    for p in gw.range.iter() {
        assert_eq!(echo_through(p, b"back").await.expect("echo"), b"back");
    }
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_target_does_not_stall_other_channels() {
    let gw = start(2);
    let echo = echo_server().await;
    let (slow, fast) = (gw.range.first(), gw.range.last());
    // A listener that never accepts and has a full backlog would be ideal; a
    // non-routable address makes the dial hang until its timeout instead.
    let blackhole = Target {
        host: "10.255.255.1".into(),
        port: 9,
    };
    let mut task = GatewayTask::spawn(
        gateway(&gw),
        Forwards::from([(slow, blackhole), (fast, local(echo))]),
        config(&gw),
        Arc::new(Metrics::default()),
    );
    task.wait_for(WAIT, |s| s.active.len() == 2)
        .await
        .expect("up");
    let mut hanging = Vec::new();
    for _ in 0..5 {
        hanging.push(
            TcpStream::connect(on_gateway(slow))
                .await
                .expect("gateway accepts"),
        );
    }
    let t = Instant::now();
    assert_eq!(echo_through(fast, b"quick").await.expect("echo"), b"quick");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(hanging);
    task.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_follows_desired_and_goes_idle() {
    let gw = start(3);
    let echo = echo_server().await;
    let (sup, mut ready) = Supervisor::new(config(&gw), Arc::new(Metrics::default()));
    let p = gw.range.first();
    // The forward is desired before the supervisor starts: with nothing
    // desired it is (rightly) ready at once, which would race the wait below.
    let (dtx, drx) = watch::channel(BTreeMap::from([(
        gateway(&gw),
        Forwards::from([(p, local(echo))]),
    )]));
    let stop = CancellationToken::new();
    let run = tokio::spawn(sup.run(drx, stop.clone()));
    tokio::time::timeout(WAIT, ready.wait_for(|r| *r))
        .await
        .expect("ready in time")
        .expect("ready");
    assert_eq!(echo_through(p, b"sup").await.expect("echo"), b"sup");
    // Last pod gone: the bastion disconnects and stays healthy.
    dtx.send_replace(Desired::new());
    let t = Instant::now();
    while TcpStream::connect(on_gateway(p)).await.is_ok() {
        assert!(t.elapsed() < WAIT, "port still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And comes back when a pod returns.
    dtx.send_replace(BTreeMap::from([(
        gateway(&gw),
        Forwards::from([(p, local(echo))]),
    )]));
    let t = Instant::now();
    while echo_through(p, b"again").await.is_err() {
        assert!(t.elapsed() < WAIT, "not back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    run.await.expect("supervisor ends");
}
