//! Leader election against the real remote apiserver (Kubernetes 1.20): two
//! election loops in this process, on one Lease of a fresh namespace.
//!
//! Checked: exactly one leads while both run (sampled every 50 ms, never
//! both); when the leader dies without releasing (task aborted, like a crashed
//! pod) the standby takes over, and not before the Lease could have expired;
//! the Lease names the new holder and counts the transition; a restarted
//! replica stands by; a clean stop releases the Lease and the standby takes
//! over within one lease duration. Takeover times are printed.
//!
//! Then the same with two real `offload-bastion run` processes sharing a
//! forwards file and one real OpenSSH gateway on loopback: exactly one says
//! `leader` on `/leader`, only it wants and holds the forward and the
//! tunnel echoes through it; SIGKILL the leader and the standby leads and
//! carries the tunnel again after the Lease expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use offload_bastion::leader::{self, LeaderMetrics, LeaseConfig};
use offload_runtime::shutdown::CancellationToken;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const LEASE_DURATION: Duration = Duration::from_secs(6);
const WAIT: Duration = Duration::from_secs(90);

struct Replica {
    leader: watch::Receiver<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn start(client: &Client, ns: &str, identity: &str) -> Replica {
    let cfg = LeaseConfig::new(ns, "bastion", identity).with_lease_duration(LEASE_DURATION);
    let (leader_tx, leader) = watch::channel(false);
    let stop = CancellationToken::new();
    let task = tokio::spawn(leader::run(
        client.clone(),
        cfg,
        leader_tx,
        Arc::new(LeaderMetrics::default()),
        stop.clone(),
    ));
    Replica { leader, stop, task }
}

async fn wait_leader(r: &Replica, what: &str) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let rx = r.leader.clone();
    testbed::wait_for(what, WAIT, || {
        let rx = rx.clone();
        async move { Ok((*rx.borrow()).then_some(())) }
    })
    .await?;
    Ok(t0.elapsed())
}

/// Samples two replicas every 50 ms while `alive`, counting moments where
/// both believe they lead.
fn both_leading_counter(
    a: watch::Receiver<bool>,
    b: watch::Receiver<bool>,
    alive: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, JoinHandle<()>) {
    let both = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&both);
    let task = tokio::spawn(async move {
        while alive.load(Ordering::SeqCst) {
            if *a.borrow() && *b.borrow() {
                count.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (both, task)
}

async fn holder(api: &Api<Lease>) -> anyhow::Result<(Option<String>, i32)> {
    let spec = api.get("bastion").await?.spec.context("lease spec")?;
    Ok((spec.holder_identity, spec.lease_transitions.unwrap_or(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_the_standby_takes_over() -> anyhow::Result<()> {
    let tb = testbed::testbed().await?;
    let client = tb.remote.client().await?;
    let ns = tb.remote.test_namespace("lease").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);

    // a first, so it is the one that leads; then b.
    let a = start(&client, &ns.name, "bastion-a");
    wait_leader(&a, "a to lead").await?;
    let b = start(&client, &ns.name, "bastion-b");

    let alive = Arc::new(AtomicBool::new(true));
    let (both, sampler) =
        both_leading_counter(a.leader.clone(), b.leader.clone(), Arc::clone(&alive));
    // Two lease durations with both running: a keeps renewing, b stands by.
    tokio::time::sleep(LEASE_DURATION * 2).await;
    alive.store(false, Ordering::SeqCst);
    sampler.await?;
    ensure!(*a.leader.borrow(), "a lost the lease while running");
    ensure!(!*b.leader.borrow(), "b leads while a renews");
    ensure!(
        both.load(Ordering::SeqCst) == 0,
        "both led at the same time ({} samples)",
        both.load(Ordering::SeqCst)
    );
    let (h, transitions_before) = holder(&leases).await?;
    ensure!(h.as_deref() == Some("bastion-a"), "lease holder {h:?}");

    // a dies without releasing (like a killed pod): b takes over once the
    // lease expired, not before.
    a.task.abort();
    let crashed = Instant::now();
    wait_leader(&b, "b to take over after a died").await?;
    let takeover = crashed.elapsed();
    let retry = LeaseConfig::new("", "", "")
        .with_lease_duration(LEASE_DURATION)
        .retry_period;
    println!("takeover after the leader died: {takeover:?} (lease {LEASE_DURATION:?})");
    ensure!(
        takeover >= LEASE_DURATION - retry * 2,
        "b took over after {takeover:?}, before a's lease of {LEASE_DURATION:?} could expire"
    );
    let (h, transitions) = holder(&leases).await?;
    ensure!(h.as_deref() == Some("bastion-b"), "lease holder {h:?}");
    ensure!(
        transitions == transitions_before + 1,
        "transitions {transitions_before} -> {transitions}"
    );

    // a comes back: it stands by while b renews.
    let a2 = start(&client, &ns.name, "bastion-a");
    let alive = Arc::new(AtomicBool::new(true));
    let (both, sampler) =
        both_leading_counter(a2.leader.clone(), b.leader.clone(), Arc::clone(&alive));
    tokio::time::sleep(LEASE_DURATION + Duration::from_secs(2)).await;
    alive.store(false, Ordering::SeqCst);
    sampler.await?;
    ensure!(
        *b.leader.borrow() && !*a2.leader.borrow(),
        "b should still lead"
    );
    ensure!(
        both.load(Ordering::SeqCst) == 0,
        "both led at the same time"
    );

    // b stops cleanly: it releases the lease, a takes over without waiting
    // for it to expire.
    b.stop.cancel();
    let stopped = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), b.task)
        .await
        .context("b did not stop")??;
    ensure!(
        !*b.leader.borrow(),
        "b still believes it leads after stopping"
    );
    wait_leader(&a2, "a to take over after b released").await?;
    let handover = stopped.elapsed();
    println!("takeover after a clean stop: {handover:?}");
    ensure!(
        handover < LEASE_DURATION,
        "handover took {handover:?}: the lease was not released"
    );
    let (h, _) = holder(&leases).await?;
    ensure!(h.as_deref() == Some("bastion-a"), "lease holder {h:?}");

    a2.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), a2.task).await;
    ns.delete().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Two real bastion processes, one real OpenSSH gateway on loopback.
// ---------------------------------------------------------------------------

/// `GET path` over plain HTTP/1.0; `None` when nothing answers.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

/// Echo server standing in for the remote pod.
async fn echo_server() -> anyhow::Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(port)
}

/// Whether a round trip through the gateway port works right now.
async fn echoes(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        anyhow::Ok(&buf == b"ping")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Ok(true))
    )
}

struct Bastion {
    child: tokio::process::Child,
    admin: u16,
}

/// The bastion's `/metrics` text (empty when it does not answer).
async fn metrics_of(b: &Bastion) -> String {
    http_get(b.admin, "/metrics").await.unwrap_or_default()
}

async fn leader_state(b: &Bastion) -> Option<String> {
    http_get(b.admin, "/leader").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bastion_processes_one_holds_the_tunnel_the_standby_takes_over() -> anyhow::Result<()> {
    use offload_bastion::harness::{TestGateway, free_port, free_range};
    let tb = testbed::testbed().await?;
    let ns = tb.remote.test_namespace("bastion-ha").await?;
    let gw = TestGateway::start(free_range(2)?, "127.0.0.1")
        .context("start sshd (apt-get install openssh-server openssh-client)")?;
    let echo = echo_server().await?;
    let port = gw.range.first().0;
    let dir = tempfile::tempdir()?;
    let forwards = dir.path().join("forwards.json");
    std::fs::write(
        &forwards,
        serde_json::to_string(&serde_json::json!([{
            "gateway": gw.address(),
            "hostKey": gw.host_key,
            "forwards": { port.to_string(): format!("127.0.0.1:{echo}") },
        }]))?,
    )?;
    let spawn = |identity: &str| -> anyhow::Result<Bastion> {
        let admin = free_port()?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_offload-bastion"))
            .env("KUBECONFIG", &tb.remote.kubeconfig)
            .env("RUST_LOG", "warn")
            .arg("run")
            .arg("--key-file")
            .arg(&gw.client.private_path)
            .args(["--user", &gw.user, "--listen-host", "127.0.0.1"])
            .args(["--keepalive-secs", "1"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .arg("--forwards-file")
            .arg(&forwards)
            .args(["--lease-name", "bastion", "--lease-namespace", &ns.name])
            .args(["--lease-duration-secs", "6", "--identity", identity])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting offload-bastion")?;
        Ok(Bastion { child, admin })
    };
    let a = spawn("bastion-a")?;
    let b = spawn("bastion-b")?;

    // Exactly one leads, and the tunnel is up through it.
    let (leader, _standby) = testbed::wait_for("one bastion to lead", WAIT, || async {
        let (sa, sb) = (leader_state(&a).await, leader_state(&b).await);
        Ok(match (sa.as_deref(), sb.as_deref()) {
            (Some("leader"), Some("standby")) => Some(("a", "b")),
            (Some("standby"), Some("leader")) => Some(("b", "a")),
            _ => None,
        })
    })
    .await?;
    testbed::wait_for("the tunnel through the leader", WAIT, || async {
        Ok(echoes(port).await.then_some(()))
    })
    .await?;
    for _ in 0..20 {
        let (sa, sb) = (leader_state(&a).await, leader_state(&b).await);
        ensure!(
            sa.as_deref() != sb.as_deref(),
            "both bastions say {sa:?} at the same time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut killed, survivor) = if leader == "a" { (a, b) } else { (b, a) };
    let metrics = metrics_of(&survivor).await;
    ensure!(
        metrics.contains("offload_bastion_leader 0"),
        "standby metrics: {metrics}"
    );
    // The standby does not even try to hold the forward; the leader does.
    ensure!(
        !metrics.contains("offload_bastion_forwards_desired{"),
        "standby wants forwards: {metrics}"
    );
    let leader_metrics = metrics_of(&killed).await;
    ensure!(
        leader_metrics.contains("offload_bastion_leader 1")
            && leader_metrics.contains("offload_bastion_forwards{"),
        "leader metrics: {leader_metrics}"
    );

    // The leader crashes (SIGKILL: no Lease release): the standby takes over
    // once the Lease expired and brings the tunnel back.
    killed.child.start_kill()?;
    let _ = killed.child.wait().await;
    let crashed = Instant::now();
    testbed::wait_for("the standby to take over", WAIT, || async {
        Ok((leader_state(&survivor).await.as_deref() == Some("leader")).then_some(()))
    })
    .await?;
    let took_over = crashed.elapsed();
    testbed::wait_for("the tunnel through the new leader", WAIT, || async {
        Ok(echoes(port).await.then_some(()))
    })
    .await?;
    let back = crashed.elapsed();
    println!(
        "bastion processes: leader killed -> standby leads {took_over:?}, tunnel answers again {back:?} (lease 6 s)"
    );
    let metrics = metrics_of(&survivor).await;
    ensure!(
        metrics.contains("offload_bastion_leader 1"),
        "new leader metrics: {metrics}"
    );
    drop(survivor);
    ns.delete().await?;
    Ok(())
}
