//! The processes under measure: the provider binary and the plugin (this
//! bench re-executed as `--plugin-child`), their CPU and RSS from `/proc`,
//! the provider's metrics, and the counting proxy between them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// CPU seconds (user + system) and RSS / peak RSS (KiB) of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let cpu_s = (ticks(11) + ticks(12)) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        cpu_s,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    }
}

/// A free local port (bound, then released for a child to take).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Sum of the samples of `metric` (any labels) in a Prometheus text page.
pub fn metric_sum(page: &str, metric: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if name == metric {
            found = true;
            sum += line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    found.then_some(sum)
}

/// The provider's `/metrics` page.
pub async fn scrape(admin: SocketAddr) -> String {
    let url = format!("http://{admin}/metrics");
    match reqwest::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A TCP proxy that counts the bytes both ways (provider <-> plugin).
pub struct CountingProxy {
    pub addr: SocketAddr,
    pub bytes: Arc<AtomicU64>,
}

impl CountingProxy {
    pub async fn start(target: SocketAddr) -> anyhow::Result<CountingProxy> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&bytes);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = l.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, Arc::clone(&counted)), pump(ro, wi, counted));
                });
            }
        });
        Ok(CountingProxy { addr, bytes })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counted: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        counted.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The plugin as a child process (this bench binary with `--plugin-child`),
/// so its CPU and RSS are its own. It prints `listening <addr>` once, then
/// `kube_requests <n>` (its remote apiserver requests) every second.
pub struct PluginChild {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub kube_requests: Arc<AtomicU64>,
}

impl PluginChild {
    pub async fn spawn(remote_kubeconfig: &str, args: &[String]) -> anyhow::Result<PluginChild> {
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .arg("--plugin-child")
            .args(["--remote-kubeconfig", remote_kubeconfig])
            .args(
                args.iter()
                    .flat_map(|a| ["--plugin-arg".to_string(), a.clone()]),
            )
            .env(
                "RUST_LOG",
                std::env::var("PLUGIN_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn the plugin child")?;
        let out = child.stdout.take().context("plugin stdout")?;
        let mut lines = BufReader::new(out).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
                .await
                .context("plugin child did not start")??
                .context("plugin child exited")?;
            if let Some(a) = line.strip_prefix("listening ") {
                break a.parse()?;
            }
        };
        let kube_requests = Arc::new(AtomicU64::new(0));
        let k = Arc::clone(&kube_requests);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(n) = line
                    .strip_prefix("kube_requests ")
                    .and_then(|v| v.parse().ok())
                {
                    k.store(n, Ordering::Relaxed);
                }
            }
        });
        Ok(PluginChild {
            child,
            addr,
            kube_requests,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub fn kube_requests(&self) -> u64 {
        self.kube_requests.load(Ordering::Relaxed)
    }
}

/// The child side: run the real plugin against the remote cluster on a
/// client that counts its requests, until killed.
pub async fn plugin_child_main(remote_kubeconfig: &str, args: &[String]) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(remote_kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&counter);
    let client = kube::client::ClientBuilder::try_from(cfg)?
        .with_layer(&tower::util::MapRequestLayer::new(
            move |req: http::Request<kube::client::Body>| {
                counted.fetch_add(1, Ordering::Relaxed);
                req
            },
        ))
        .build();
    let mut config = offload_plugin::PluginConfig::for_tests();
    let parsed = <offload_plugin::PluginConfig as clap::Parser>::try_parse_from(
        ["offload-plugin", "--insecure-no-auth"]
            .into_iter()
            .map(String::from)
            .chain(args.iter().cloned()),
    )?;
    // The test settings (no sweep, no bastion) with the flags given.
    config = offload_plugin::PluginConfig {
        listen: config.listen.clone(),
        no_sweep: config.no_sweep,
        no_bastion: config.no_bastion,
        namespace_gc_after: config.namespace_gc_after,
        ..parsed
    };
    let p = offload_plugin::start(config, client).await?;
    p.wait_ready(Duration::from_secs(120)).await;
    println!("listening {}", p.addr());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let total = counter.load(Ordering::Relaxed);
        println!("kube_requests {total}");
    }
}
