//! The streaming endpoints (exec, attach, port-forward) on the real remote
//! test cluster, through a WebSocket client speaking the contract of
//! `offload_wire::stream`: output, stdin and its end, exit codes, a
//! terminal and its size, attach, port-forward with parallel connections
//! and a multi-MiB body, the errors, who may reach which pod, and teardown
//! (a client that goes away leaves no remote process and no open stream).
//!
//! Needs the test clusters (`bash testbed/scripts/testbed.sh up`).

mod common;
mod stream_client;

use std::time::Duration;

use anyhow::{Context, bail};
use common::*;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use offload_plugin::naming::{NameKind, remote_name};
use offload_wire::stream::{
    ATTACH_PATH, EXEC_PATH, ExecQuery, PORT_FORWARD_PATH, PortForwardQuery, channel,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use stream_client::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_and_port_forward_on_a_remote_pod() -> anyhow::Result<()> {
    let bed = setup().await?;
    exec_output_stdin_and_exit_codes(&bed).await?;
    tty_and_resize(&bed).await?;
    attach_reads_stdin(&bed).await?;
    refusals(&bed).await?;
    foreign_pods_and_bad_queries(&bed).await?;
    stream_limit(&bed).await?;
    port_forward(&bed).await?;
    teardown(&bed).await?;
    slow_reader(&bed).await?;
    bed.plugin.stop().await;
    Ok(())
}

async fn exec_output_stdin_and_exit_codes(bed: &Bed) -> anyhow::Result<()> {
    // Output on both channels, then Success.
    let o = bed.exec(&["sh", "-c", "echo out; echo err >&2"]).await?;
    assert_eq!(
        (o.out().as_str(), o.stderr.as_slice()),
        ("out\n", &b"err\n"[..]),
        "{o:?}"
    );
    assert!(status_is_success(&o), "{o:?}");

    // A multi-MiB output arrives whole and in order (`kubectl cp` from a pod).
    let want: String = (1..=400000).map(|i| format!("{i}\n")).collect();
    let started = std::time::Instant::now();
    let o = bed.exec(&["seq", "1", "400000"]).await?;
    let secs = started.elapsed().as_secs_f64();
    assert!(
        o.stdout == want.as_bytes(),
        "stdout differs: {} bytes, want {}",
        o.stdout.len(),
        want.len()
    );
    assert!(status_is_success(&o), "{:?}", o.status);
    eprintln!(
        "exec stdout: {:.1} MiB in {secs:.2} s",
        want.len() as f64 / (1 << 20) as f64
    );

    // stdin: echoed back, then its end (CLOSE) ends `cat` with success.
    let mut ws = bed.exec_ws("web", &["cat"], true, false).await?;
    ws.send(stdin("hello stdin\n")).await?;
    read_until(&mut ws, "hello stdin\n").await?;
    ws.send(Message::binary(vec![channel::CLOSE, channel::STDIN]))
        .await?;
    let o = collect(&mut ws).await?;
    assert!(status_is_success(&o), "{o:?}");

    // `echo hi | kubectl exec -i -- cat`: stdin and its end at once; what
    // the process writes in answer still arrives (an old remote cannot end
    // stdin alone: the close waits for the output to be quiet).
    let mut ws = bed.exec_ws("web", &["cat"], true, false).await?;
    ws.send(stdin("hi\n")).await?;
    ws.send(Message::binary(vec![channel::CLOSE, channel::STDIN]))
        .await?;
    let o = collect(&mut ws).await?;
    assert_eq!(o.out(), "hi\n", "{o:?}");
    assert!(status_is_success(&o), "{o:?}");

    // `kubectl exec -i -- wc -c < file`: the output written after the end
    // of stdin arrives (the plugin ends stdin over SPDY on a remote < 1.30).
    let mut ws = bed.exec_ws("web", &["wc", "-c"], true, false).await?;
    ws.send(stdin(&"x".repeat(100_000))).await?;
    ws.send(Message::binary(vec![channel::CLOSE, channel::STDIN]))
        .await?;
    let o = collect(&mut ws).await?;
    assert_eq!(o.out().trim(), "100000", "{o:?}");
    assert!(status_is_success(&o), "{o:?}");

    // ... and so does the exit code of a process that read all its input.
    let mut ws = bed
        .exec_ws("web", &["sh", "-c", "cat >/dev/null; exit 4"], true, false)
        .await?;
    ws.send(stdin("some input\n")).await?;
    ws.send(Message::binary(vec![channel::CLOSE, channel::STDIN]))
        .await?;
    let o = collect(&mut ws).await?;
    let s = o.status.clone().context("no status")?;
    assert_eq!(s["reason"], "NonZeroExitCode", "{s}");
    assert_eq!(s["details"]["causes"][0]["message"], "4", "{s}");

    // The exit code survives, as the kubelet reports it.
    let o = bed.exec(&["sh", "-c", "exit 3"]).await?;
    let s = o.status.clone().context("no status")?;
    assert_eq!(s["status"], "Failure", "{s}");
    assert_eq!(s["reason"], "NonZeroExitCode", "{s}");
    let cause = &s["details"]["causes"][0];
    assert_eq!(
        (&cause["reason"], &cause["message"]),
        (&Value::from("ExitCode"), &Value::from("3")),
        "{s}"
    );

    // A failure before the process starts is a Failure status too.
    let mut ws = bed
        .exec_ws("no-such-container", &["true"], false, false)
        .await?;
    let o = collect(&mut ws).await?;
    let s = o.status.context("no status")?;
    assert_eq!(s["status"], "Failure", "{s}");
    assert!(
        s["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-container")),
        "{s}"
    );
    Ok(())
}

async fn tty_and_resize(bed: &Bed) -> anyhow::Result<()> {
    let mut ws = bed
        .exec_ws("web", &["sh", "-c", "sleep 2; stty size"], true, true)
        .await?;
    let size = br#"{"Width":123,"Height":45}"#;
    let mut resize = vec![channel::RESIZE];
    resize.extend_from_slice(size);
    ws.send(Message::binary(resize)).await?;
    let o = collect(&mut ws).await?;
    assert_eq!(o.out().trim(), "45 123", "{o:?}");
    assert!(o.stderr.is_empty(), "a terminal has no stderr: {o:?}");
    assert!(status_is_success(&o), "{o:?}");
    Ok(())
}

async fn attach_reads_stdin(bed: &Bed) -> anyhow::Result<()> {
    let q = bed.exec_query("reader", &[], true, false);
    // Leaving detaches only: the container reads the next attach's line.
    for line in ["ping-1", "ping-2"] {
        let mut ws = bed
            .open(ATTACH_PATH, &q, Some(TOKEN))
            .await
            .map_err(|s| anyhow::anyhow!("attach answered {s}"))?;
        ws.send(stdin(&format!("{line}\n"))).await?;
        read_until(&mut ws, &format!("got:{line}")).await?;
        ws.close(None).await?;
    }
    Ok(())
}

/// Above --max-open-streams: 503 with Retry-After, until one closes.
async fn stream_limit(bed: &Bed) -> anyhow::Result<()> {
    let (mut cfg, _dir) = token_config()?;
    cfg.max_open_streams = 1;
    // The API limits do not apply to an open stream.
    cfg.max_concurrent_requests = 1;
    cfg.request_timeout = Duration::from_secs(1);
    let one = Plugin::start(&bed.env, cfg).await?;
    let url = |q: String| {
        format!(
            "ws://{}{EXEC_PATH}?{q}",
            one.base.trim_start_matches("http://")
        )
    };
    let connect = |q: String| async move {
        let mut req = url(q).into_client_request()?;
        req.headers_mut()
            .insert("Authorization", format!("Bearer {TOKEN}").parse()?);
        anyhow::Ok(tokio_tungstenite::connect_async(req).await)
    };
    let (mut first, _) = connect(bed.exec_query("web", &["cat"], true, false)).await??;
    let refused = connect(bed.exec_query("web", &["true"], false, false)).await?;
    let Err(tungstenite::Error::Http(resp)) = refused else {
        bail!("a second stream was not refused");
    };
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    first
        .send(Message::binary(vec![channel::CLOSE, channel::STDIN]))
        .await?;
    collect(&mut first).await?;
    let again = testbed::wait_for("a stream permit again", Duration::from_secs(10), || async {
        Ok(connect(bed.exec_query("web", &["true"], false, false))
            .await?
            .ok())
    })
    .await?;
    let (mut again, _) = again;
    let o = collect(&mut again).await?;
    assert!(status_is_success(&o), "{o:?}");
    // A stream outlives --request-timeout, and leaves the one request
    // slot (--max-concurrent-requests 1) to the other routes.
    let (mut open, _) = connect(bed.exec_query("web", &["cat"], true, false)).await??;
    tokio::time::sleep(Duration::from_secs(3)).await;
    open.send(stdin("still here\n")).await?;
    read_until(&mut open, "still here").await?;
    let caps = bed
        .env
        .http
        .get(one.url("/capabilities"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(caps.status(), StatusCode::OK);
    // A shutdown ends open streams at once (a close, no status).
    tokio::time::timeout(Duration::from_secs(15), one.stop())
        .await
        .context("shutdown waited for an open stream")?;
    let o = collect(&mut open).await?;
    assert!(o.status.is_none(), "{o:?}");
    Ok(())
}

async fn refusals(bed: &Bed) -> anyhow::Result<()> {
    let q = bed.exec_query("web", &["true"], false, false);
    assert_eq!(
        bed.open(EXEC_PATH, &q, None).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        bed.open(EXEC_PATH, &q, Some("wrong")).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    // The same pod named by another caller (another node of the same
    // principal): as if it did not exist.
    let mut other = bed.target.clone();
    other.node = "another-node".into();
    let q = ExecQuery::parse(&bed.exec_query("web", &["true"], false, false))?;
    let foreign = ExecQuery {
        target: other.clone(),
        ..q
    };
    for path in [EXEC_PATH, ATTACH_PATH] {
        let r = bed.open(path, &foreign.to_query(), Some(TOKEN)).await.err();
        assert_eq!(r, Some(StatusCode::NOT_FOUND), "{path}");
    }
    let pf = PortForwardQuery {
        target: other,
        port: 8080,
    };
    let r = bed
        .open(PORT_FORWARD_PATH, &pf.to_query(), Some(TOKEN))
        .await
        .err();
    assert_eq!(r, Some(StatusCode::NOT_FOUND));
    // Another plugin instance with the same token does not reach it either.
    let (mut cfg, _dir) = token_config()?;
    cfg.instance = "another-instance".into();
    let second = Plugin::start(&bed.env, cfg).await?;
    let url = format!(
        "{}?{}",
        second.url(EXEC_PATH),
        bed.exec_query("web", &["true"], false, false)
    );
    let code = bed
        .env
        .http
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await?
        .status();
    second.stop().await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    Ok(())
}

async fn foreign_pods_and_bad_queries(bed: &Bed) -> anyhow::Result<()> {
    // A pod in the plugin's remote namespace under the very name the plugin
    // would give a local pod, made by someone else (no labels of ours).
    let victim_uid = uid();
    let victim = remote_name(NameKind::Pod, "victim", &victim_uid);
    let pods: Api<Pod> = Api::namespaced(bed.env.remote.clone(), &bed.remote_ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": victim, "labels": {"app": "tenant"}},
        "spec": {"containers": [{"name": "web", "image": testbed::images::BUSYBOX, "command": ["sleep", "3600"]}]}
    }))?;
    pods.create(&Default::default(), &pod).await?;
    let mut target = bed.target.clone();
    (target.name, target.uid) = ("victim".into(), victim_uid);
    let q = ExecQuery {
        target,
        ..ExecQuery::parse(&bed.exec_query("web", &["true"], false, false))?
    };
    let r = bed.open(EXEC_PATH, &q.to_query(), Some(TOKEN)).await.err();
    assert_eq!(
        r,
        Some(StatusCode::NOT_FOUND),
        "a foreign pod was reachable"
    );
    // A query without a container: 400 with the reason.
    let resp = bed
        .env
        .http
        .request(
            Method::GET,
            format!(
                "{}?{}",
                bed.plugin.url(EXEC_PATH),
                "namespace=a&name=b&uid=c&node=d"
            ),
        )
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await?.contains("container"));
    // The capabilities name the three endpoints.
    let caps: Value = bed
        .env
        .http
        .get(bed.plugin.url("/capabilities"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    for name in ["exec", "attach", "portForward"] {
        assert!(
            caps["extensions"]
                .as_array()
                .is_some_and(|a| a.contains(&Value::from(name))),
            "{caps}"
        );
    }
    Ok(())
}

/// One HTTP/1.0 GET through one port-forward WebSocket: the response.
async fn http_get(bed: &Bed, port: u16, path: &str) -> anyhow::Result<(Vec<u8>, Option<String>)> {
    let q = PortForwardQuery {
        target: bed.target.clone(),
        port,
    };
    let mut ws = bed
        .open(PORT_FORWARD_PATH, &q.to_query(), Some(TOKEN))
        .await
        .map_err(|s| anyhow::anyhow!("port-forward answered {s}"))?;
    ws.send(Message::binary(
        format!("GET {path} HTTP/1.0\r\n\r\n").into_bytes(),
    ))
    .await?;
    let (mut body, mut error) = (Vec::new(), None);
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await? {
        match msg? {
            Message::Binary(b) => body.extend_from_slice(&b),
            Message::Text(t) => error = Some(t.to_string()),
            _ => {}
        }
    }
    Ok((body, error))
}

async fn port_forward(bed: &Bed) -> anyhow::Result<()> {
    let want: String = (1..=400000).map(|i| format!("{i}\n")).collect();
    let gets = (0..20).map(|_| http_get(bed, 8080, "/big"));
    let started = std::time::Instant::now();
    let answers = futures::future::try_join_all(gets).await?;
    let secs = started.elapsed().as_secs_f64();
    for (raw, error) in &answers {
        assert_eq!(error, &None);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no header end")?;
        assert!(
            raw.starts_with(b"HTTP/1.") && raw[8..].starts_with(b" 200"),
            "{:?}",
            String::from_utf8_lossy(&raw[..split])
        );
        assert!(
            raw[split + 4..] == *want.as_bytes(),
            "body differs ({} bytes, want {})",
            raw.len() - split - 4,
            want.len()
        );
    }
    let mib = (20 * want.len()) as f64 / (1 << 20) as f64;
    eprintln!(
        "port-forward: 20 parallel downloads, {mib:.1} MiB in {secs:.2} s ({:.1} MiB/s)",
        mib / secs
    );
    // Nothing listens on port 9: one text message, then the close.
    let (body, error) = http_get(bed, 9, "/").await?;
    assert!(body.is_empty(), "{body:?}");
    let error = error.context("no error message for a closed port")?;
    assert!(error.contains('9'), "{error}");
    let open = r#"offload_plugin_streams_open{kind="portforward"}"#;
    testbed::wait_for(
        "no open port-forward stream",
        Duration::from_secs(30),
        || async { Ok((bed.metric(open).await? == 0.0).then_some(())) },
    )
    .await?;
    Ok(())
}

async fn teardown(bed: &Bed) -> anyhow::Result<()> {
    let sleeping = || async {
        let o = bed.exec(&["ps", "-o", "args"]).await?;
        anyhow::Ok(o.out().lines().any(|l| l.trim() == "sleep 4242"))
    };
    let open = r#"offload_plugin_streams_open{kind="exec"}"#;
    let ws = bed.exec_ws("web", &["sleep", "4242"], true, true).await?;
    testbed::wait_for("the exec'd sleep to run", RUN, || async {
        Ok(sleeping().await?.then_some(()))
    })
    .await?;
    assert!(bed.metric(open).await? >= 1.0);
    // The client goes away without a word (its TCP connection closes).
    drop(ws);
    testbed::wait_for(
        "the remote sleep to end",
        Duration::from_secs(60),
        || async { Ok((!sleeping().await?).then_some(())) },
    )
    .await?;
    testbed::wait_for("no open exec stream", Duration::from_secs(30), || async {
        Ok((bed.metric(open).await? == 0.0).then_some(()))
    })
    .await?;
    Ok(())
}

/// A client that stops reading stops the plugin reading the remote output
/// (nothing piles up in between), and its hang-up still ends the process.
async fn slow_reader(bed: &Bed) -> anyhow::Result<()> {
    let read = r#"offload_plugin_stream_bytes_total{kind="exec",direction="from_remote"}"#;
    let ws = bed
        .exec_ws("web", &["yes", "slow-reader"], true, true)
        .await?;
    // Long enough for every buffer on the way to fill.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = bed.metric(read).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = bed.metric(read).await?;
    drop(ws);
    eprintln!("slow reader: {before} then {after} bytes read from the remote");
    assert!(before > 0.0, "no output read at all");
    assert!(
        after - before < 256.0 * 1024.0,
        "the plugin kept reading for a client that reads nothing: {before} then {after} bytes"
    );
    testbed::wait_for("the remote yes to end", Duration::from_secs(60), || async {
        let o = bed.exec(&["ps", "-o", "args"]).await?;
        Ok((!o.out().lines().any(|l| l.trim() == "yes slow-reader")).then_some(()))
    })
    .await
}
