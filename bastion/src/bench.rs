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

/// A local server on a free port that runs `handle` on each connection (with
/// Nagle off, as the tunnel's own sockets).
async fn serve_each<F, Fut>(handle: F) -> anyhow::Result<u16>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(handle(s));
        }
    });
    Ok(port)
}

/// Sends `total` bytes to each client, then closes.
async fn download_server(total: u64) -> anyhow::Result<u16> {
    serve_each(move |mut s| async move {
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
    })
    .await
}

/// Echoes every byte back, one at a time (the latency probe).
async fn echo_server() -> anyhow::Result<u16> {
    serve_each(|mut s| async move {
        let mut b = [0u8; 1];
        while let Ok(1) = s.read(&mut b).await {
            if s.write_all(&b).await.is_err() {
                return;
            }
        }
    })
    .await
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

fn local(port: u16) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
    }
}

/// Our tunnel to `dl` and `echo`: the time from spawn to "gateway port
/// answers", and for one more forward on the live connection.
async fn start_ours(
    gw: &TestGateway,
    [dl_port, echo_port, extra]: [u16; 3],
    [dl, echo]: [u16; 2],
) -> anyhow::Result<(GatewayTask, Duration, Duration)> {
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
            (GatewayPort(dl_port), local(dl)),
            (GatewayPort(echo_port), local(echo)),
        ]),
        Arc::new(config),
        Arc::new(Metrics::default()),
    );
    wait_port(dl_port, Duration::from_secs(10)).await?;
    let fresh = t.elapsed();
    let t = Instant::now();
    task.forwards.send_modify(|f| {
        f.insert(GatewayPort(extra), local(echo));
    });
    wait_port(extra, Duration::from_secs(10)).await?;
    Ok((task, fresh, t.elapsed()))
}

/// A plain OpenSSH client, same key, same sshd, same cipher, and its setup time.
async fn start_ssh(
    gw: &TestGateway,
    [dl_port, echo_port]: [u16; 2],
    [dl, echo]: [u16; 2],
) -> anyhow::Result<(tokio::process::Child, Duration)> {
    let mut ssh_args = gw.ssh_args()?;
    let dest = ssh_args.pop().unwrap_or_default();
    ssh_args.extend([
        "-R".into(),
        format!("127.0.0.1:{dl_port}:127.0.0.1:{dl}"),
        "-R".into(),
        format!("127.0.0.1:{echo_port}:127.0.0.1:{echo}"),
        dest,
    ]);
    let t = Instant::now();
    let ssh = tokio::process::Command::new("ssh")
        .args(&ssh_args)
        .kill_on_drop(true)
        .spawn()
        .context("spawn ssh")?;
    wait_port(dl_port, Duration::from_secs(10)).await?;
    wait_port(echo_port, Duration::from_secs(10)).await?;
    Ok((ssh, t.elapsed()))
}

/// Median throughput and p50/p99 latency of one path.
struct Measured {
    throughput: f64,
    p50: f64,
    p99: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let total = args.mib * 1024 * 1024;
    let range = free_range(5)?;
    let gw = TestGateway::start(range, "127.0.0.1").context("start loopback sshd")?;
    let [ours_dl, ours_echo, ssh_dl, ssh_echo, extra] =
        [0u16, 1, 2, 3, 4].map(|i| range.first().0 + i);
    let targets = [download_server(total).await?, echo_server().await?];
    let (task, fresh, added) = start_ours(&gw, [ours_dl, ours_echo, extra], targets).await?;
    let (mut ssh, ssh_setup) = start_ssh(&gw, [ssh_dl, ssh_echo], targets).await?;

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..args.runs.max(1) {
        ours.push(throughput(ours_dl, total).await?);
        theirs.push(throughput(ssh_dl, total).await?);
    }
    let measure = |samples, (p50, p99)| Measured {
        throughput: median(samples),
        p50,
        p99,
    };
    let direct = latency(targets[1], args.connections).await?;
    let ours = measure(ours, latency(ours_echo, args.connections).await?);
    let theirs = measure(theirs, latency(ssh_echo, args.connections).await?);
    print_report(&args, &gw, direct, &ours, &theirs);
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

fn print_report(
    args: &BenchArgs,
    gw: &TestGateway,
    (d50, d99): (f64, f64),
    ours: &Measured,
    theirs: &Measured,
) {
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
    let row = |name: &str, m: &Measured| {
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} |",
            m.throughput, m.p50, m.p99
        );
    };
    row("offload-bastion (russh)", ours);
    row("ssh -N -R (OpenSSH)", theirs);
    println!(
        "ratio bastion/ssh throughput: {:.2}",
        ours.throughput / theirs.throughput
    );
}
