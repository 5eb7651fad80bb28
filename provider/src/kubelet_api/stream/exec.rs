//! exec and attach over SPDY, as the kubelet's `remotecommand` server: the
//! client opens one stream per `streamtype` (error, stdin, stdout, stderr,
//! resize), the process runs, the error stream carries how it ended (v4: a
//! `metav1.Status` JSON; older versions: the message of a failure), then
//! every stream is closed.

use std::time::Duration;

use bytes::Bytes;
use offload_wire::stream::TerminalSize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use super::ExecOptions;
use super::bridge::{self, BUFFER, FromClient, ToClient};
use super::spdy::{Incoming, Session};
use crate::client::stream::PluginSocket;

/// The kubelet's stream creation timeout.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client may take to hang up once everything was sent.
pub const LINGER: Duration = Duration::from_secs(5);

/// The remotecommand protocol versions over SPDY, best first.
pub const SPDY_EXEC_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// What the error stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusStyle {
    /// v4: the Status JSON, success included.
    Json,
    /// v1 to v3: the message of a failure, nothing on success.
    Text,
}

impl StatusStyle {
    pub fn of(protocol: &str) -> Self {
        if protocol.starts_with("v4.") || protocol.starts_with("v5.") {
            StatusStyle::Json
        } else {
            StatusStyle::Text
        }
    }

    /// What to write on the error stream for `status`, `None` for nothing.
    pub fn encode(self, status: Bytes) -> Option<Bytes> {
        match self {
            StatusStyle::Json => Some(status),
            StatusStyle::Text => {
                let v: serde_json::Value = serde_json::from_slice(&status).ok()?;
                if v["status"] == "Success" {
                    return None;
                }
                let msg = v["message"].as_str().unwrap_or("error executing command");
                Some(Bytes::from(msg.to_string()))
            }
        }
    }
}

#[derive(Default)]
struct Streams {
    error: Option<Incoming>,
    stdin: Option<Incoming>,
    stdout: Option<Incoming>,
    stderr: Option<Incoming>,
    resize: Option<Incoming>,
}

impl Streams {
    fn complete(&self, o: &ExecOptions, resize: bool) -> bool {
        self.error.is_some()
            && (!o.stdin || self.stdin.is_some())
            && (!o.stdout || self.stdout.is_some())
            && (!o.stderr || self.stderr.is_some())
            && (!resize || self.resize.is_some())
    }
}

/// The streams the client opens, until all that `o` asks for are there.
async fn collect(s: &mut Session, o: &ExecOptions, resize: bool) -> Option<Streams> {
    let mut got = Streams::default();
    let wait = async {
        while !got.complete(o, resize) {
            let mut inc = s.incoming.recv().await?;
            let slot = match inc.header("streamtype") {
                Some("error") => &mut got.error,
                Some("stdin") => &mut got.stdin,
                Some("stdout") => &mut got.stdout,
                Some("stderr") => &mut got.stderr,
                Some("resize") => &mut got.resize,
                other => {
                    debug!(stream_type = ?other, "unexpected stream");
                    let _ = s.out.reset(inc.id).await;
                    continue;
                }
            };
            if !matches!(inc.header("streamtype"), Some("stdin" | "resize")) {
                // The client does not write there: what comes is dropped.
                inc.data.close();
            }
            *slot = Some(inc);
        }
        Some(())
    };
    tokio::time::timeout(CREATE_TIMEOUT, wait).await.ok()??;
    Some(got)
}

/// Feeds the client's resize stream (JSON objects one after the other).
async fn resizes(mut inc: Incoming, tx: mpsc::Sender<FromClient>) {
    let mut buf = Vec::new();
    while let Some(b) = inc.data.recv().await {
        buf.extend_from_slice(&b);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
        let mut used = 0;
        while let Some(Ok(t)) = it.next() {
            used = it.byte_offset();
            if tx.send(FromClient::Resize(t)).await.is_err() {
                return;
            }
        }
        buf.drain(..used);
        if buf.len() > 4096 {
            return;
        }
    }
}

/// Serves one exec or attach on an upgraded connection.
pub async fn serve_spdy<IO>(io: IO, protocol: &str, o: &ExecOptions, plugin: PluginSocket)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let style = StatusStyle::of(protocol);
    let resize = o.tty && protocol != "channel.k8s.io" && protocol != "v2.channel.k8s.io";
    let mut s = Session::start(io);
    let Some(streams) = collect(&mut s, o, resize).await else {
        debug!("the client did not open its streams");
        return;
    };
    let gone = s.closed();
    let out = s.out.clone();
    let mut tasks = JoinSet::new();
    let mut late = std::mem::replace(&mut s.incoming, mpsc::channel(1).1);
    let o2 = out.clone();
    tasks.spawn(async move {
        while let Some(i) = late.recv().await {
            let _ = o2.reset(i.id).await;
        }
    });
    let (from_tx, from_rx) = mpsc::channel(BUFFER);
    let (to_tx, mut to_rx) = mpsc::channel(BUFFER);
    if let Some(mut stdin) = streams.stdin {
        let (tx, gone) = (from_tx.clone(), gone.clone());
        tasks.spawn(async move {
            while let Some(b) = stdin.data.recv().await {
                if tx.send(FromClient::Stdin(b)).await.is_err() {
                    return;
                }
            }
            if !gone.is_cancelled() {
                let _ = tx.send(FromClient::StdinEof).await;
            }
        });
    }
    if let Some(r) = streams.resize {
        tasks.spawn(resizes(r, from_tx.clone()));
    }
    drop(from_tx);
    let id = |i: &Option<Incoming>| i.as_ref().map(|i| i.id);
    let (stdout, stderr, error) = (id(&streams.stdout), id(&streams.stderr), id(&streams.error));
    let write = async {
        while let Some(m) = to_rx.recv().await {
            let r = match m {
                ToClient::Stdout(b) => match stdout {
                    Some(id) => out.data(id, b).await,
                    None => Ok(()),
                },
                ToClient::Stderr(b) => match stderr.or(stdout) {
                    Some(id) => out.data(id, b).await,
                    None => Ok(()),
                },
                ToClient::Status(b) => match (error, style.encode(b)) {
                    (Some(id), Some(b)) => out.data(id, b).await,
                    _ => Ok(()),
                },
            };
            if r.is_err() {
                return;
            }
        }
        for id in [stdout, stderr, error].into_iter().flatten() {
            let _ = out.fin(id).await;
        }
    };
    tokio::join!(bridge::exec(plugin, from_rx, to_tx, gone.clone()), write);
    drop(tasks);
    if !gone.is_cancelled() {
        s.finish(LINGER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_styles() {
        let ok = Bytes::from_static(br#"{"status":"Success","metadata":{}}"#);
        let bad = Bytes::from_static(
            br#"{"status":"Failure","reason":"NonZeroExitCode","message":"command terminated with non-zero exit code: 3"}"#,
        );
        assert_eq!(StatusStyle::of("v4.channel.k8s.io"), StatusStyle::Json);
        assert_eq!(StatusStyle::of("v3.channel.k8s.io"), StatusStyle::Text);
        assert_eq!(StatusStyle::Json.encode(ok.clone()), Some(ok.clone()));
        assert_eq!(StatusStyle::Text.encode(ok), None);
        assert_eq!(
            StatusStyle::Text.encode(bad).as_deref(),
            Some(&b"command terminated with non-zero exit code: 3"[..])
        );
    }
}
