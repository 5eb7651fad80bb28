//! `offload-bastion bench`: our tunnel vs a plain `ssh -N -R`, same sshd,
//! same machine, same run.
//!
//! A loopback gateway (real sshd, config rendered by gateway-manager) gets
//! four forwards: a "download" target and an "echo" target, each once through
//! our russh tunnel and once through `ssh -N -R`. Throughput: bytes a client
//! reads through the gateway port from the download target. Latency: connect,
//! send one byte, read it back, close, through the gateway port (and direct,
//! as a floor). Setup: time from "start the tunnel" to "gateway port answers",
//! for a fresh connection and for one more forward on a live connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use offload_bastion::desired::{Forwards, Gateway, Target};
use offload_bastion::harness::{TestGateway, free_range};
use offload_bastion::metrics::Metrics;
use offload_bastion::tunnel::{GatewayTask, TunnelConfig};
use offload_wire::tunnel::GatewayPort;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// MiB read through each tunnel per throughput run.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Throughput runs per tunnel (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Connections per latency measurement.
    #[arg(long, default_value_t = 500)]
    connections: usize,
}

async fn download_server(total: u64) -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let buf = vec![0x5au8; 256 * 1024];
                let mut left = total;
                while left > 0 {
                    let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(port)
}

async fn echo_server() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 1];
                while let Ok(1) = s.read(&mut b).await {
                    if s.write_all(&b).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

async fn throughput(port: u16, expect: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    if got != expect {
        bail!("read {got} bytes through port {port}, expected {expect}");
    }
    Ok(got as f64 / 1e6 / t.elapsed().as_secs_f64())
}

async fn latency(port: u16, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.5), pct(0.99)))
}

async fn wait_port(port: u16, timeout: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("port {port} did not open within {timeout:?}")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let total = args.mib * 1024 * 1024;
    let range = free_range(5)?;
    let gw = TestGateway::start(range, "127.0.0.1").context("start loopback sshd")?;
    let [ours_dl, ours_echo, ssh_dl, ssh_echo, extra] =
        [0u16, 1, 2, 3, 4].map(|i| range.first().0 + i);
    let dl = download_server(total).await?;
    let echo = echo_server().await?;
    let target = |port| Target {
        host: "127.0.0.1".into(),
        port,
    };

    // Our tunnel: time from spawn to "gateway port answers".
    let mut config = TunnelConfig::new(gw.user.clone(), gw.client.private.clone());
    config.listen_host = "127.0.0.1".into();
    let gateway = Gateway {
        address: gw.address(),
        host_key: gw.host_key.clone(),
    };
    let t = Instant::now();
    let task = GatewayTask::spawn(
        gateway,
        Forwards::from([
            (GatewayPort(ours_dl), target(dl)),
            (GatewayPort(ours_echo), target(echo)),
        ]),
        Arc::new(config),
        Arc::new(Metrics::default()),
    );
    wait_port(ours_dl, Duration::from_secs(10)).await?;
    let fresh = t.elapsed();
    let t = Instant::now();
    task.forwards.send_modify(|f| {
        f.insert(GatewayPort(extra), target(echo));
    });
    wait_port(extra, Duration::from_secs(10)).await?;
    let added = t.elapsed();

    // Plain OpenSSH client, same key, same sshd, same cipher.
    let mut ssh_args = gw.ssh_args()?;
    let dest = ssh_args.pop().unwrap_or_default();
    ssh_args.extend([
        "-R".into(),
        format!("127.0.0.1:{ssh_dl}:127.0.0.1:{dl}"),
        "-R".into(),
        format!("127.0.0.1:{ssh_echo}:127.0.0.1:{echo}"),
        dest,
    ]);
    let t = Instant::now();
    let mut ssh = tokio::process::Command::new("ssh")
        .args(&ssh_args)
        .kill_on_drop(true)
        .spawn()
        .context("spawn ssh")?;
    wait_port(ssh_dl, Duration::from_secs(10)).await?;
    wait_port(ssh_echo, Duration::from_secs(10)).await?;
    let ssh_setup = t.elapsed();

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..args.runs.max(1) {
        ours.push(throughput(ours_dl, total).await?);
        theirs.push(throughput(ssh_dl, total).await?);
    }
    let (d50, d99) = latency(echo, args.connections).await?;
    let (o50, o99) = latency(ours_echo, args.connections).await?;
    let (s50, s99) = latency(ssh_echo, args.connections).await?;

    let (om, sm) = (median(ours), median(theirs));
    println!(
        "bench: loopback sshd {}, cipher aes256-gcm@openssh.com, {} MiB x {} runs, {} connections",
        gw.address(),
        args.mib,
        args.runs,
        args.connections
    );
    println!("| path | throughput MB/s (median) | connect+echo p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!("| direct (no tunnel) | - | {d50:.3} | {d99:.3} |");
    println!("| offload-bastion (russh) | {om:.0} | {o50:.3} | {o99:.3} |");
    println!("| ssh -N -R (OpenSSH) | {sm:.0} | {s50:.3} | {s99:.3} |");
    println!("ratio bastion/ssh throughput: {:.2}", om / sm);
    println!(
        "setup to gateway port answering: bastion fresh connection {:.1} ms, one more forward on a live connection {:.1} ms, ssh -R {:.1} ms",
        fresh.as_secs_f64() * 1e3,
        added.as_secs_f64() * 1e3,
        ssh_setup.as_secs_f64() * 1e3
    );
    let _ = ssh.kill().await;
    task.stop().await;
    Ok(())
}
