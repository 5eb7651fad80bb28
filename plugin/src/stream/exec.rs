//! `kubectl exec` and `attach`: the client's WebSocket bridged to the remote
//! pod's through kube-rs' [`AttachedProcess`] (its stdin, stdout, stderr,
//! terminal size and final status).
//!
//! The remote status is forwarded as the kubelet sent it, exit code
//! included. A stream with stdin to a remote apiserver older than 1.30 goes
//! over SPDY ([`super::spdy_client`]), which ends stdin as kubectl does; the
//! rest over kube-rs' WebSocket. Should WebSocket `v4.channel.k8s.io`
//! carry stdin ([`USE_SPDY`] off), it cannot carry its end: kube-rs then
//! closes the remote stream, the process reads end-of-file, and the remote
//! sends no status; the plugin reports `Success` in that one case (what
//! `kubectl cp` and `echo x | kubectl exec -i` need), and logs it. So that
//! what the process writes in answer to its input still arrives, the close
//! waits until the output has been quiet for [`STDIN_CLOSE_QUIET`] (at
//! most [`STDIN_CLOSE_MAX`]) or the process ended.
//!
//! Teardown: when the client goes away the remote stream is closed, so the
//! process reads end-of-file on stdin; an exec'd interactive terminal is
//! hung up first ([`hang_up`]). A process with neither stdin nor a terminal
//! runs on, as with the kubelet; an attached one (the container's own) is
//! only detached from.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{
        RawQuery, State,
        ws::{Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    response::Response,
};
use futures::{
    FutureExt, SinkExt, StreamExt,
    future::FusedFuture,
    stream::{SplitSink, SplitStream},
};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Status};
use kube::api::{Api, AttachParams, TerminalSize};
use offload_wire::stream::{ExecQuery, channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, SimplexStream, WriteHalf};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    Kind, OpenStream, RemotePod, admit, bad_query,
    frames::{self, ClientFrame},
    metrics::{End, StreamMetrics},
};
use crate::{caller::Principal, http::AppState};

/// With a remote older than 1.30, how long the output must have been quiet
/// after the client ended stdin before the remote stream is closed (the
/// only way to end stdin there), and the longest wait for that quiet.
const STDIN_CLOSE_QUIET: Duration = Duration::from_secs(1);
const STDIN_CLOSE_MAX: Duration = Duration::from_secs(10);

/// Whether stdin sessions to a remote older than 1.30 use SPDY (else
/// WebSocket with the delayed close above).
const USE_SPDY: bool = true;

/// Bytes buffered per direction between the client's socket and kube-rs'
/// (a full buffer stops reading the other side: bounded memory).
const BUF: usize = 64 * 1024;

pub(super) async fn exec(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    handle(state, principal, query, ws, Kind::Exec).await
}

pub(super) async fn attach(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    handle(state, principal, query, ws, Kind::Attach).await
}

async fn handle(
    state: Arc<AppState>,
    principal: Principal,
    query: Option<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    kind: Kind,
) -> Response {
    let q = match ExecQuery::parse(query.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let (pod, ws, open) = match admit(&state, &principal, &q.target, kind, ws).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let span = info_span!("stream", kind = kind.as_str(), pod = %q.target.name,
        namespace = %q.target.namespace, uid = %q.target.uid, container = %q.container,
        tty = q.tty, stdin = q.stdin, remote = %pod.name);
    ws.protocols([offload_wire::stream::EXEC_PROTOCOL])
        .on_upgrade(move |socket| bridge(state, pod, q, kind, socket, open).instrument(span))
}

/// Runs one stream to its end; the permit goes when it returns.
async fn bridge(
    state: Arc<AppState>,
    pod: RemotePod,
    q: ExecQuery,
    kind: Kind,
    socket: WebSocket,
    open: OpenStream,
) {
    let started = Instant::now();
    let metrics = state.streams.metrics.clone();
    let (mut tx, rx) = socket.split();
    let work = async {
        match connect(&state, &pod, &q, kind).await {
            Err(status) => {
                warn!(
                    message = status.message.as_deref().unwrap_or_default(),
                    "remote stream refused"
                );
                let _ = finish(&mut tx, &status).await;
                End::RemoteError
            }
            Ok(remote) => {
                let relay = Relay {
                    kind,
                    metrics: &metrics,
                    stdin_closed: AtomicBool::new(false),
                    lazy_stdin_close: q.stdin && !remote.ends_stdin,
                    started,
                    last_output_ms: AtomicU64::new(0),
                    // Never on attach: that process is the container's own,
                    // and a client that leaves only detaches from it.
                    hang_up: kind == Kind::Exec && q.tty && q.stdin,
                };
                relay.run(remote, &mut tx, rx).await
            }
        }
    };
    // A shutdown ends the stream in any phase (connecting included).
    let end = tokio::select! {
        end = work => end,
        () = state.shutdown.cancelled() => End::Shutdown,
    };
    if end == End::Shutdown {
        let _ = tx.send(Message::Close(None)).await;
    }
    metrics.ended(kind, end);
    info!(result = ?end, secs = started.elapsed().as_secs_f64(), "stream ended");
    drop(open);
}

/// The remote end of a stream, from kube-rs (WebSocket) or the SPDY
/// session: what the relay reads and writes.
struct Remote {
    stdin: Option<WriteHalf<SimplexStream>>,
    resize: Option<futures::channel::mpsc::Sender<TerminalSize>>,
    stdout: Output,
    stderr: Output,
    status: futures::future::BoxFuture<'static, Option<Status>>,
    /// Dropped when the relay ends: closes the remote connection.
    guard: Box<dyn Send>,
    /// The remote can end stdin on its own (SPDY, or WebSocket `v5`).
    ends_stdin: bool,
}

/// Opens the remote stream; a refusal becomes the `Failure` status sent to
/// the client. With stdin and a remote older than 1.30, SPDY (the only way
/// to end stdin there and still get the output and exit code).
async fn connect(
    state: &AppState,
    pod: &RemotePod,
    q: &ExecQuery,
    kind: Kind,
) -> Result<Remote, Status> {
    let client = state.remote.client();
    // With a terminal the kubelet merges stderr into stdout; kube-rs refuses
    // the combination instead.
    let ap = AttachParams::default()
        .container(q.container.clone())
        .stdin(q.stdin)
        .stdout(q.stdout)
        .stderr(q.stderr && !q.tty)
        .tty(q.tty)
        .max_stdin_buf_size(BUF)
        .max_stdout_buf_size(BUF)
        .max_stderr_buf_size(BUF);
    state.metrics.remote_call(kind.as_str());
    let v5 = super::remote_version::carries_stdin_close(client).await;
    if q.stdin && !v5 && USE_SPDY {
        let s = super::spdy_client::open(client, pod, kind, &q.command, &ap, BUF).await?;
        return Ok(Remote {
            stdin: s.stdin,
            resize: s.resize,
            stdout: s.stdout,
            stderr: s.stderr,
            status: async move { s.status.await.ok().flatten() }.boxed(),
            guard: Box::new(s.task),
            ends_stdin: true,
        });
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let r = match kind {
        Kind::Attach => api.attach(&pod.name, &ap).await,
        _ => api.exec(&pod.name, q.command.clone(), &ap).await,
    };
    let mut p = r.map_err(|e| remote_failure(&e))?;
    let status = p.take_status();
    Ok(Remote {
        stdin: p.stdin(),
        resize: p.terminal_size(),
        stdout: p.stdout(),
        stderr: p.stderr(),
        status: async move {
            match status {
                Some(s) => s.await,
                None => None,
            }
        }
        .boxed(),
        guard: Box::new(p),
        ends_stdin: v5,
    })
}

/// The status the client gets for a remote stream that did not open.
fn remote_failure(e: &kube::Error) -> Status {
    match e {
        kube::Error::Api(s) => frames::failure(s.message.clone(), &s.reason, s.code),
        kube::Error::BuildRequest(e) => frames::failure(e.to_string(), "BadRequest", 400),
        e => frames::failure(
            format!("connecting to the remote apiserver: {e}"),
            "InternalError",
            500,
        ),
    }
}

/// Sends the final status and closes.
async fn finish(
    tx: &mut SplitSink<WebSocket, Message>,
    status: &Status,
) -> Result<(), axum::Error> {
    tx.send(Message::Binary(frames::status(status))).await?;
    tx.send(Message::Close(None)).await
}

/// One stream's relay between the client and kube-rs' process handle.
struct Relay<'a> {
    kind: Kind,
    metrics: &'a StreamMetrics,
    /// The client closed stdin (see the module docs for why it matters).
    stdin_closed: AtomicBool,
    /// An exec'd interactive terminal: hang up when the client goes away.
    hang_up: bool,
    /// The remote cannot carry the end of stdin: close it only once the
    /// output is quiet (see the module docs).
    lazy_stdin_close: bool,
    started: Instant,
    /// When output last came, in ms since `started`.
    last_output_ms: AtomicU64,
}

type Output = Option<ReadHalf<SimplexStream>>;

impl Relay<'_> {
    /// Until the process ends (its status sent) or the client goes away;
    /// then the handle is dropped, which closes the remote stream.
    async fn run(
        &self,
        remote: Remote,
        tx: &mut SplitSink<WebSocket, Message>,
        rx: SplitStream<WebSocket>,
    ) -> End {
        let Remote {
            mut stdin,
            resize,
            mut stdout,
            mut stderr,
            status,
            guard,
            ends_stdin: _,
        } = remote;
        // Fused: awaited by the relay and, after it, maybe by the hang-up.
        let mut status = std::pin::pin!(status.fuse());
        let end = tokio::select! {
            () = self.upstream(rx, &mut stdin, resize) => End::ClientGone,
            end = self.downstream(tx, &mut stdout, &mut stderr, status.as_mut()) => end,
        };
        // (A process whose status came has nothing left to hang up.)
        if end == End::ClientGone && self.hang_up && !status.is_terminated() {
            let outputs = async {
                drain(&mut stdout).await;
                drain(&mut stderr).await;
            };
            hang_up(stdin, outputs, status).await;
        }
        // Dropping the handle aborts kube-rs' (or the SPDY session's) task:
        // the remote connection closes and the remote process reads
        // end-of-file on stdin.
        drop(guard);
        end
    }

    /// Client -> remote, until the client closes its socket.
    async fn upstream(
        &self,
        mut rx: SplitStream<WebSocket>,
        stdin: &mut Option<WriteHalf<SimplexStream>>,
        mut resize: Option<futures::channel::mpsc::Sender<TerminalSize>>,
    ) {
        // The client's end of stdin, held back until the output is quiet.
        let mut closing: Option<(WriteHalf<SimplexStream>, Instant)> = None;
        loop {
            let quiet = async {
                match &closing {
                    Some((_, since)) => self.output_quiet(*since).await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                m = rx.next() => m,
                () = quiet => {
                    if let Some((mut w, _)) = closing.take() {
                        debug!("output quiet: closing the remote stream to end stdin");
                        let _ = w.shutdown().await;
                    }
                    continue;
                }
            };
            let Some(Ok(msg)) = msg else { return };
            let bin = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => return,
                _ => continue,
            };
            match frames::parse_client(bin) {
                Ok(ClientFrame::Stdin(data)) => {
                    let Some(w) = stdin.as_mut() else { continue };
                    if w.write_all(&data).await.is_err() {
                        // The remote stream ended; its status follows.
                        *stdin = None;
                    } else {
                        self.metrics.bytes(self.kind, true, data.len());
                    }
                }
                Ok(ClientFrame::Resize(s)) => {
                    if let Some(r) = resize.as_mut() {
                        let size = TerminalSize {
                            width: s.width,
                            height: s.height,
                        };
                        let _ = r.send(size).await;
                    }
                }
                Ok(ClientFrame::CloseStdin) => {
                    if let Some(mut w) = stdin.take() {
                        self.stdin_closed.store(true, Ordering::SeqCst);
                        if self.lazy_stdin_close {
                            closing = Some((w, Instant::now()));
                        } else {
                            let _ = w.shutdown().await;
                        }
                    }
                }
                Ok(ClientFrame::Nothing) => {}
                Err(e) => debug!(error = %e, "client message ignored"),
            }
        }
    }

    /// Resolves once the output has been quiet for [`STDIN_CLOSE_QUIET`]
    /// (or [`STDIN_CLOSE_MAX`] after `since`).
    async fn output_quiet(&self, since: Instant) {
        loop {
            let now = self.started.elapsed();
            let last = Duration::from_millis(self.last_output_ms.load(Ordering::Relaxed));
            let quiet_at = last.max(since.duration_since(self.started)) + STDIN_CLOSE_QUIET;
            if now >= quiet_at || since.elapsed() >= STDIN_CLOSE_MAX {
                return;
            }
            tokio::time::sleep((quiet_at - now).min(STDIN_CLOSE_QUIET)).await;
        }
    }

    /// Remote -> client: output until both outputs end, then the status.
    async fn downstream(
        &self,
        tx: &mut SplitSink<WebSocket, Message>,
        stdout: &mut Output,
        stderr: &mut Output,
        status: std::pin::Pin<&mut impl Future<Output = Option<Status>>>,
    ) -> End {
        let (mut out_buf, mut err_buf) = (vec![0u8; BUF], vec![0u8; BUF]);
        let mut ping = tokio::time::interval(super::PING_EVERY);
        ping.reset();
        while stdout.is_some() || stderr.is_some() {
            let (ch, read) = tokio::select! {
                r = read_some(stdout, &mut out_buf) => (channel::STDOUT, r),
                r = read_some(stderr, &mut err_buf) => (channel::STDERR, r),
                _ = ping.tick() => {
                    if tx.send(Message::Ping(Default::default())).await.is_err() {
                        return End::ClientGone;
                    }
                    continue;
                }
            };
            let (src, buf) = if ch == channel::STDOUT {
                (&mut *stdout, &out_buf)
            } else {
                (&mut *stderr, &err_buf)
            };
            match read {
                Ok(n) if n > 0 => {
                    self.metrics.bytes(self.kind, false, n);
                    let ms = self.started.elapsed().as_millis();
                    self.last_output_ms
                        .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
                    let msg = Message::Binary(frames::data(ch, &buf[..n]));
                    if tx.send(msg).await.is_err() {
                        return End::ClientGone;
                    }
                }
                _ => *src = None,
            }
        }
        let status = status.await.unwrap_or_else(|| self.missing_status());
        if let Some(code) = frames::exit_code(&status) {
            info!(exit_code = code, "remote process exited");
        }
        match finish(tx, &status).await {
            Ok(()) => End::Completed,
            Err(_) => End::ClientGone,
        }
    }

    /// The status when the remote stream ended without one.
    fn missing_status(&self) -> Status {
        if self.stdin_closed.load(Ordering::SeqCst) {
            info!(
                "the remote apiserver cannot carry the end of stdin (v4.channel.k8s.io): the remote stream was closed to end stdin and sent no exit status; reporting success"
            );
            frames::success()
        } else {
            frames::failure(
                "the remote stream ended without an exit status",
                "InternalError",
                500,
            )
        }
    }
}

/// How long a hung-up terminal's process may take to end before the remote
/// stream is closed anyway.
const HANG_UP_GRACE: Duration = Duration::from_secs(3);

/// A terminal whose client went away hangs up, as an ssh session does. The
/// kubelet would only end stdin, which leaves running whatever does not
/// read it (`kubectl exec -it pod -- sleep 1000` lives on after kubectl is
/// killed): so the plugin types ^C (SIGINT to the terminal's foreground
/// processes) and ^D (end of input for a shell), ends stdin and gives the
/// process a moment to end, its output discarded.
async fn hang_up(
    stdin: Option<WriteHalf<SimplexStream>>,
    outputs: impl Future<Output = ()>,
    status: std::pin::Pin<&mut impl Future<Output = Option<Status>>>,
) {
    if let Some(mut w) = stdin {
        let _ = w.write_all(b"\x03\x04").await;
        let _ = w.shutdown().await;
    }
    let ended = tokio::time::timeout(HANG_UP_GRACE, async {
        outputs.await;
        status.await
    })
    .await;
    info!(ended = ended.is_ok(), "client gone: terminal hung up");
}

/// Reads an output to its end, discarding it.
async fn drain(r: &mut Output) {
    if let Some(r) = r {
        let _ = tokio::io::copy(r, &mut tokio::io::sink()).await;
    }
}

/// Reads from an output that may be absent (never ready then).
async fn read_some(
    r: &mut Option<ReadHalf<SimplexStream>>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_remote_stream_is_a_failure_status_with_the_remote_reason() {
        let remote = kube::core::Status {
            status: Some(kube::core::response::StatusSummary::Failure),
            code: 400,
            message: "container nope is not valid for pod web-1".into(),
            reason: "BadRequest".into(),
            ..Default::default()
        };
        let s = remote_failure(&kube::Error::Api(Box::new(remote)));
        assert_eq!(s.status.as_deref(), Some("Failure"));
        assert_eq!(s.code, Some(400));
        assert_eq!(s.reason.as_deref(), Some("BadRequest"));
        assert_eq!(
            s.message.as_deref(),
            Some("container nope is not valid for pod web-1")
        );
    }
}
