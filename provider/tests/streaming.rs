//! `kubectl exec`, `attach`, `cp` and `port-forward` on an offloaded pod,
//! with the real kubectl of both versions against the local apiserver: the
//! testbed's 1.20 (SPDY) and the machine's newer one (`/usr/bin/kubectl`,
//! WebSocket first for exec, attach and cp). The real plugin runs in-process
//! against the remote cluster, the provider in-process on the local one.
//!
//! The benchmark (`bench_streaming_throughput`, ignored) compares the
//! throughput through the virtual node with kubectl against the remote
//! cluster directly: `scripts/bench-streaming`.

mod common;
#[path = "streaming/support.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use kube::api::PostParams;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_and_attach_with_both_kubectls() {
    let s = setup(
        "stream-exec",
        &[
            ("shell", "sleep 3600"),
            (
                "ticker",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
            ),
        ],
    )
    .await;
    for bin in kubectls() {
        let v = bin.display().to_string();
        let (code, out, err) = s
            .run(&bin, &["exec", "shell", "--", "echo", "hello"], None)
            .await;
        assert_eq!((code, out.as_slice()), (0, &b"hello\n"[..]), "{v}: {err}");

        let (code, _, err) = s
            .run(&bin, &["exec", "shell", "--", "sh", "-c", "exit 3"], None)
            .await;
        assert_eq!(code, 3, "{v}: the exit code is propagated: {err}");

        let (code, out, err) = s
            .run(
                &bin,
                &["exec", "shell", "--", "sh", "-c", "echo oops >&2"],
                None,
            )
            .await;
        assert_eq!(code, 0, "{v}: {err}");
        assert!(
            out.is_empty() && err.contains("oops"),
            "{v}: stderr {err:?}"
        );

        let input = vec![b'x'; 300_000];
        let (code, out, err) = s
            .run(
                &bin,
                // (`head`: the process ends without waiting for the end of stdin)
                &[
                    "exec",
                    "-i",
                    "shell",
                    "--",
                    "sh",
                    "-c",
                    "head -c 300000 | wc -c",
                ],
                Some(&input),
            )
            .await;
        assert_eq!(code, 0, "{v}: {err}");
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            "300000",
            "{v}: stdin reaches the process and ends"
        );

        // A terminal: `script` gives kubectl a pseudo-terminal.
        // The terminal's size (set in script's pseudo-terminal) reaches the
        // remote one through the resize stream or channel.
        let line = format!(
            "stty rows 31 cols 101; {} -n {} exec -it shell -- sh -c 'tty; stty size'",
            bin.display(),
            s.ns
        );
        let out = tokio::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("KUBECONFIG", &s.env.tb.local.kubeconfig)
            .env("COLUMNS", "100")
            .env("LINES", "30")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("script");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("/dev/pts/"),
            "{v}: a remote terminal: {text:?}"
        );

        attach(&s, &bin).await;
    }
}

/// `kubectl attach` shows the running container's output.
async fn attach(s: &Setup, bin: &Path) {
    let mut c = s.cmd(bin);
    c.args(["attach", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("attach");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("out")).lines();
    let got = tokio::time::timeout(Duration::from_secs(60), async {
        let mut got = vec![];
        while got.len() < 2 {
            match lines.next_line().await {
                Ok(Some(l)) if l.starts_with("tick ") => got.push(l),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        got
    })
    .await
    .unwrap_or_default();
    let _ = child.kill().await;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err).await;
    }
    assert_eq!(
        got.len(),
        2,
        "{}: attach shows new lines: {err}",
        bin.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cp_both_ways_with_10_mib() {
    let s = setup("stream-cp", &[("box", "sleep 3600")]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let data: Vec<u8> = (0..10 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = dir.path().join("up.bin");
    std::fs::write(&src, &data).expect("write");
    for (i, bin) in kubectls().into_iter().enumerate() {
        let v = bin.display().to_string();
        let remote = format!("{}/box:/tmp/f{i}", s.ns);
        let (code, _, err) = s
            .run(&bin, &["cp", src.to_str().expect("path"), &remote], None)
            .await;
        assert_eq!(code, 0, "{v}: cp up: {err}");
        let (_, out, err) = s
            .run(
                &bin,
                &["exec", "box", "--", "sha256sum", &format!("/tmp/f{i}")],
                None,
            )
            .await;
        let remote_sum = String::from_utf8_lossy(&out);
        assert!(
            remote_sum.starts_with(&sha(&data)),
            "{v}: the pod has the same bytes: {remote_sum} {err}"
        );

        let back = dir.path().join(format!("down{i}.bin"));
        let (code, _, err) = s
            .run(&bin, &["cp", &remote, back.to_str().expect("path")], None)
            .await;
        assert_eq!(code, 0, "{v}: cp down: {err}");
        let got = std::fs::read(&back).expect("read back");
        assert_eq!(sha(&got), sha(&data), "{v}: the same bytes come back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn port_forward_50_parallel_requests_and_100_mib() {
    let s = setup("stream-pf", &[("web", HTTPD)]).await;
    wait_for("the pod's file", RUN, async || {
        let (code, _, _) = s
            .run(
                &testbed::kubectl_binary(),
                &["exec", "web", "--", "test", "-f", "/www/ready"],
                None,
            )
            .await;
        (code == 0).then_some(())
    })
    .await;
    let (_, out, _) = s
        .run(
            &testbed::kubectl_binary(),
            &["exec", "web", "--", "sha256sum", "/www/big"],
            None,
        )
        .await;
    let want = String::from_utf8_lossy(&out)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(want.len(), 64, "the pod's checksum: {out:?}");
    for bin in kubectls() {
        let v = bin.display().to_string();
        let (mut child, port) = port_forward(&s, &bin, "web").await;
        let url = format!("http://127.0.0.1:{port}");
        let mut reqs = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let url = format!("{url}/index.html");
            reqs.spawn(async move {
                // A client each: 50 TCP connections, 50 forwarded streams.
                let c = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("client");
                c.get(&url).send().await?.text().await
            });
        }
        let mut ok = 0;
        while let Some(r) = reqs.join_next().await {
            match r.expect("task") {
                Ok(body) if body == "ok\n" => ok += 1,
                other => panic!("{v}: a parallel request failed: {other:?}"),
            }
        }
        assert_eq!(ok, 50, "{v}");
        // An answer that comes well after kubectl passed on the client's end
        // of sending (the plugin link has no half-close) still arrives.
        let slow = reqwest::get(format!("{url}/cgi-bin/slow"))
            .await
            .expect("slow get")
            .text()
            .await
            .expect("slow body");
        assert_eq!(slow, "slow\n", "{v}: a slow answer");
        let started = Instant::now();
        let big = reqwest::get(format!("{url}/big"))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        eprintln!("{v}: 100 MiB in {:?}", started.elapsed());
        assert_eq!(big.len(), BIG, "{v}");
        assert_eq!(sha(&big), want, "{v}: the same bytes");
        child.kill().await.expect("kill port-forward");
    }
    wait_for(
        "port-forward streams closed",
        Duration::from_secs(30),
        async || {
            (s.open_streams("portforward").await == 0
                && s.open_streams("portforward_connection").await == 0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_clients_leave_no_stream_and_no_remote_process() {
    let s = setup("stream-kill", &[("shell", "sleep 3600")]).await;
    for bin in kubectls() {
        let v = bin.display().to_string();
        let mut c = s.cmd(&bin);
        c.args([
            "exec",
            "-i",
            "shell",
            "--",
            "sh",
            "-c",
            "cat; echo teardown-marker",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let mut child = c.spawn().expect("exec");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"ping\n").await.expect("write");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(60), out.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(&buf, b"ping\n", "{v}");
        assert_eq!(s.open_streams("exec").await, 1, "{v}: one exec open");
        assert!(
            s.remote_ps("shell").await.contains("teardown-marker"),
            "{v}"
        );

        child.kill().await.expect("kill kubectl");
        wait_for(
            "the exec stream closed",
            Duration::from_secs(30),
            async || (s.open_streams("exec").await == 0).then_some(()),
        )
        .await;
        wait_for(
            "no remote exec process",
            Duration::from_secs(30),
            async || (!s.remote_ps("shell").await.contains("teardown-marker")).then_some(()),
        )
        .await;
        drop(stdin);
    }
}

/// Throughput through the virtual node vs kubectl against the remote
/// cluster directly (same run): `scripts/bench-streaming`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: scripts/bench-streaming"]
async fn bench_streaming_throughput() {
    let s = setup("stream-bench", &[("web", HTTPD)]).await;
    let bin = testbed::kubectl_binary();
    wait_for("the pod's file", RUN, async || {
        let (code, _, _) = s
            .run(
                &bin,
                &["exec", "web", "--", "test", "-f", "/www/ready"],
                None,
            )
            .await;
        (code == 0).then_some(())
    })
    .await;
    let p = s.pods.get("web").await.expect("pod");
    let rp = remote_pods(&s.env.remote, &uid(&p)).await.remove(0);
    let rns = rp.metadata.namespace.clone().expect("ns");
    let rname = rp.metadata.name.clone().expect("name");
    let remote_cmd = |args: &[&str]| {
        let mut c = tokio::process::Command::new(&bin);
        c.env("KUBECONFIG", &s.env.tb.remote.kubeconfig)
            .args(["-n", &rns])
            .args(args)
            .kill_on_drop(true);
        c
    };
    let mib = (BIG >> 20) as f64;
    let cat = ["exec", "web", "--", "cat", "/www/big"];
    let mut local = s.cmd(&bin);
    local.args(cat).stdout(Stdio::piped());
    let via_node = time_output(local).await;
    let mut direct = remote_cmd(&["exec", &rname, "--", "cat", "/www/big"]);
    direct.stdout(Stdio::piped());
    let remote = time_output(direct).await;
    println!(
        "exec stdout: virtual node {:.1} MiB/s, remote directly {:.1} MiB/s, virtual/direct {:.2}",
        mib / via_node,
        mib / remote,
        remote / via_node
    );
    let (mut child, port) = port_forward(&s, &bin, "web").await;
    let via_node = time_get(port).await;
    child.kill().await.expect("kill");
    let mut c = remote_cmd(&["port-forward", &rname, ":8080"]);
    c.stdout(Stdio::piped());
    let mut child = c.spawn().expect("remote port-forward");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("out")).lines();
    let mut port = 0;
    while let Ok(Some(l)) = lines.next_line().await {
        if let Some(rest) = l.strip_prefix("Forwarding from 127.0.0.1:") {
            port = rest
                .split(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            break;
        }
    }
    let remote = time_get(port).await;
    child.kill().await.expect("kill");
    println!(
        "port-forward: virtual node {:.1} MiB/s, remote directly {:.1} MiB/s, virtual/direct {:.2}",
        mib / via_node,
        mib / remote,
        remote / via_node
    );
}

async fn time_output(mut c: tokio::process::Command) -> f64 {
    let started = Instant::now();
    let out = c.output().await.expect("run");
    assert_eq!(out.stdout.len(), BIG, "all bytes");
    started.elapsed().as_secs_f64()
}

async fn time_get(port: u16) -> f64 {
    let started = Instant::now();
    let b = reqwest::get(format!("http://127.0.0.1:{port}/big"))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(b.len(), BIG, "all bytes");
    started.elapsed().as_secs_f64()
}

/// The plugin link over TLS with a pinned certificate, a client certificate
/// and a token (what the charts set up): exec and port-forward open their
/// WebSockets to the plugin as `wss://` with the same credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_over_a_pinned_mtls_plugin_link() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = env().await;
    let dir = tempfile::tempdir().expect("tmp");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let (crt, key) = (dir.path().join("plugin.crt"), dir.path().join("plugin.key"));
    std::fs::write(&crt, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    let pin = offload_provider::tls::CertFingerprint::of(ck.cert.der());
    let callers = testbed::pki::ca("stream-callers");
    let ca = dir.path().join("callers.crt");
    std::fs::write(&ca, callers.pem()).expect("ca");
    let identity = dir.path().join("provider.pem");
    std::fs::write(
        &identity,
        testbed::pki::client_identity(&callers, "provider"),
    )
    .expect("id");
    let token = dir.path().join("token");
    std::fs::write(&token, "stream-test-token-0123456789").expect("token");

    let mut pc = offload_plugin::PluginConfig::for_tests();
    pc.listen = offload_plugin::Listen::Tcp("127.0.0.1:0".parse().expect("addr"));
    pc.token_file = Some(token.clone());
    pc.tls_cert = Some(crt);
    pc.tls_key = Some(key);
    pc.tls_client_ca = Some(ca);
    let plugin = offload_plugin::start(pc, env.remote.clone())
        .await
        .expect("plugin");
    assert!(
        plugin.wait_ready(Duration::from_secs(120)).await,
        "plugin ready"
    );

    let node = node_name("stream-tls");
    let (ns, _cleanup, pods) = test_namespace(&env, "stream-tls", &[&node]).await;
    let mut c =
        offload_provider::config::Config::for_node(&node, &format!("https://{}", plugin.addr()));
    c.kubelet_addr = "0.0.0.0:0".parse().expect("addr");
    c.admin_addr = None;
    c.client_ca_file = Some(local_pki(env.tb).join("ca.crt"));
    c.status_interval = Duration::from_millis(500);
    c.plugin_cert_sha256 = Some(pin);
    c.plugin_token_file = Some(token);
    c.plugin_client_cert_file = Some(identity.clone());
    c.plugin_client_key_file = Some(identity);
    let prov = start_provider(&env, c).await;
    pods.create(
        &PostParams::default(),
        &pod(
            "shell",
            &node,
            "Never",
            None,
            container("main", "sleep 3600"),
        ),
    )
    .await
    .expect("pod");
    wait_phase(&pods, "shell", "Running", RUN).await;
    for bin in kubectls() {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env("KUBECONFIG", &env.tb.local.kubeconfig).args([
            "-n",
            &ns,
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "echo over-tls; exit 4",
        ]);
        let out = cmd.output().await.expect("kubectl exec");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "over-tls\n",
            "{}",
            bin.display()
        );
        assert_eq!(out.status.code(), Some(4), "{}", bin.display());
    }
    prov.shutdown().await;
    plugin.shutdown().await;
}
