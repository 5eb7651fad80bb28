//! exec and attach to a remote apiserver older than 1.30 over SPDY/3.1, as
//! `kubectl` does: the only protocol such an apiserver has that carries the
//! end of stdin (a FIN on the stdin stream) while the output and the exit
//! status still come back. kube-rs speaks only WebSocket
//! (`v4.channel.k8s.io` there cannot end stdin) and no maintained crate
//! offers a SPDY client, so this is written here on the frame codec the
//! provider's SPDY server uses ([`offload_runtime::spdy`]).
//!
//! The upgrade goes through the kube client's own stack (its TLS, its
//! credentials, HTTP/1.1), then the session hands the relay the same pieces
//! kube-rs' `AttachedProcess` does: bounded pipes for stdin, stdout and
//! stderr, a resize channel and the final status.

use bytes::Bytes;
use futures::{StreamExt, channel::mpsc};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, TerminalSize};
use offload_runtime::spdy::{Frame, FrameError, HeaderCodec, read_frame, write_frame};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, SimplexStream, WriteHalf},
    sync::oneshot,
};
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use super::{Kind, RemotePod, frames};

/// The remote command protocol asked for: the newest a pre-1.30 kubelet
/// speaks over SPDY (exit codes in a `metav1.Status`).
const PROTOCOL: &str = "v4.channel.k8s.io";
/// Largest error-stream payload kept (a `metav1.Status` is small).
const MAX_STATUS: usize = 64 * 1024;

/// One open remote session: what the relay reads and writes. Dropping
/// `task` tears the connection down.
pub struct Session {
    pub stdin: Option<WriteHalf<SimplexStream>>,
    pub stdout: Option<ReadHalf<SimplexStream>>,
    pub stderr: Option<ReadHalf<SimplexStream>>,
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    pub status: oneshot::Receiver<Option<Status>>,
    pub task: AbortOnDropHandle<()>,
}

/// Stream ids (odd: the client opens them) of one session; 0 = not opened.
#[derive(Clone, Copy, Default)]
struct Ids {
    error: u32,
    stdin: u32,
    stdout: u32,
    stderr: u32,
    resize: u32,
}

/// Opens the SPDY session for `ap` (exec of `command`, or attach); a
/// refusal is the `Failure` status the client gets.
pub async fn open(
    client: &kube::Client,
    pod: &RemotePod,
    kind: Kind,
    command: &[String],
    ap: &AttachParams,
    buf: usize,
) -> Result<Session, Status> {
    let base = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", pod.namespace));
    let req = match kind {
        Kind::Attach => base.attach(&pod.name, ap),
        _ => base.exec(&pod.name, command.to_vec(), ap),
    }
    .map_err(|e| frames::failure(e.to_string(), "BadRequest", 400))?;
    let (mut parts, body) = req.into_parts();
    // POST, as kubectl: the apiserver takes both for SPDY.
    parts.method = http::Method::POST;
    let h = &mut parts.headers;
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("SPDY/3.1"),
    );
    h.insert(
        "X-Stream-Protocol-Version",
        http::HeaderValue::from_static(PROTOCOL),
    );
    let res = client
        .send(http::Request::from_parts(
            parts,
            kube::client::Body::from(body),
        ))
        .await
        .map_err(|e| internal(format!("connecting to the remote apiserver: {e}")))?;
    if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(refusal(res).await);
    }
    let io = hyper::upgrade::on(res)
        .await
        .map_err(|e| internal(format!("remote SPDY upgrade: {e}")))?;
    Ok(start(TokioIo::new(io), ap, buf))
}

fn internal(message: String) -> Status {
    frames::failure(message, "InternalError", 500)
}

/// The remote's answer to a refused upgrade: its `metav1.Status`, or its
/// text.
async fn refusal(res: http::Response<kube::client::Body>) -> Status {
    let code = res.status().as_u16();
    let body = match res.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return internal(format!("reading the remote refusal: {e}")),
    };
    match serde_json::from_slice::<Status>(&body) {
        Ok(s) if s.status.is_some() => s,
        _ => frames::failure(String::from_utf8_lossy(&body).into_owned(), "", code),
    }
}

/// Starts the session's task on an upgraded connection.
fn start<IO>(io: IO, ap: &AttachParams, buf: usize) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut ids = Ids::default();
    let mut next = 1;
    let mut id = |on: bool| {
        if !on {
            return 0;
        }
        let i = next;
        next += 2;
        i
    };
    ids.error = id(true);
    ids.stdin = id(ap.stdin);
    ids.stdout = id(ap.stdout);
    ids.stderr = id(ap.stderr);
    ids.resize = id(ap.tty);
    let pipe = |on: bool| on.then(|| tokio::io::simplex(buf));
    let (stdin_rd, stdin_wr) = pipe(ap.stdin).unzip();
    let (stdout_rd, stdout_wr) = pipe(ap.stdout).unzip();
    let (stderr_rd, stderr_wr) = pipe(ap.stderr).unzip();
    let (resize_tx, resize_rx) = ap.tty.then(|| mpsc::channel(4)).unzip();
    let (status_tx, status_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let status = run(io, ids, stdin_rd, resize_rx, stdout_wr, stderr_wr).await;
        let _ = status_tx.send(status);
    });
    Session {
        stdin: stdin_wr,
        stdout: stdout_rd,
        stderr: stderr_rd,
        resize: resize_tx,
        status: status_rx,
        task: AbortOnDropHandle::new(task),
    }
}

/// The session until the remote ends it: its status (`None` when the
/// connection broke before one came).
async fn run<IO>(
    io: IO,
    ids: Ids,
    stdin: Option<ReadHalf<SimplexStream>>,
    resize: Option<mpsc::Receiver<TerminalSize>>,
    stdout: Option<WriteHalf<SimplexStream>>,
    stderr: Option<WriteHalf<SimplexStream>>,
) -> Option<Status>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    let mut codec = HeaderCodec::new();
    let opened = async {
        for (id, kind) in [
            (ids.error, "error"),
            (ids.stdin, "stdin"),
            (ids.stdout, "stdout"),
            (ids.stderr, "stderr"),
            (ids.resize, "resize"),
        ] {
            if id != 0 {
                let headers = vec![("streamtype".to_string(), kind.to_string())];
                let f = Frame::SynStream {
                    id,
                    fin: false,
                    headers,
                };
                write_frame(&mut wr, &mut codec, &f).await?;
            }
        }
        wr.flush().await?;
        Ok::<_, FrameError>(())
    };
    if let Err(e) = opened.await {
        debug!(error = %e, "remote SPDY session: opening the streams");
        let (mut stdout, mut stderr) = (stdout, stderr);
        end(&mut stdout).await;
        end(&mut stderr).await;
        return None;
    }
    let (pong_tx, pong_rx) = tokio::sync::mpsc::channel(4);
    let (replied_tx, replied_rx) = oneshot::channel();
    let writer = write_loop(wr, codec, ids, stdin, resize, (pong_rx, replied_rx));
    let reader = read_loop(rd, ids, stdout, stderr, (pong_tx, replied_tx));
    tokio::select! {
        status = reader => status,
        // The writer ends only on a broken connection; the reader sees it.
        () = writer => None,
    }
}

/// Client -> remote: stdin (its end a FIN), terminal sizes, ping answers.
/// Stdin is sent once the remote has accepted its stream (its SYN_REPLY), as
/// kubectl does: the remote is then ready for it, its end included.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut codec: HeaderCodec,
    ids: Ids,
    stdin: Option<ReadHalf<SimplexStream>>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
    (mut pongs, replied): (tokio::sync::mpsc::Receiver<u32>, oneshot::Receiver<()>),
) {
    let mut buf = vec![0u8; 32 * 1024];
    let (mut stdin, mut pending) = (None, stdin);
    let mut replied = std::pin::pin!(replied);
    loop {
        let frame = tokio::select! {
            r = &mut replied, if pending.is_some() => {
                // Refused (the reader gone) leaves stdin unsent: the
                // session is ending.
                if r.is_ok() {
                    stdin = pending.take();
                } else {
                    pending = None;
                }
                continue;
            }
            r = read_opt(&mut stdin, &mut buf) => match r {
                Ok(n) if n > 0 => Frame::Data {
                    id: ids.stdin,
                    fin: false,
                    data: Bytes::copy_from_slice(&buf[..n]),
                },
                _ => {
                    stdin = None;
                    Frame::Data { id: ids.stdin, fin: true, data: Bytes::new() }
                }
            },
            s = next_opt(&mut resize) => match s {
                Some(s) => Frame::Data {
                    id: ids.resize,
                    fin: false,
                    data: serde_json::to_vec(&s).unwrap_or_default().into(),
                },
                None => {
                    resize = None;
                    continue;
                }
            },
            p = pongs.recv() => match p {
                Some(p) => Frame::Ping(p),
                None => std::future::pending().await,
            },
        };
        let sent = async {
            write_frame(&mut wr, &mut codec, &frame).await?;
            wr.flush().await?;
            Ok::<_, FrameError>(())
        };
        if let Err(e) = sent.await {
            debug!(error = %e, "remote SPDY session: write");
            return;
        }
    }
}

/// Remote -> client: the outputs into their pipes, the error stream kept
/// for the status, until the remote closes the connection.
async fn read_loop<R: AsyncRead + Unpin>(
    rd: R,
    ids: Ids,
    mut stdout: Option<WriteHalf<SimplexStream>>,
    mut stderr: Option<WriteHalf<SimplexStream>>,
    (pongs, replied): (tokio::sync::mpsc::Sender<u32>, oneshot::Sender<()>),
) -> Option<Status> {
    let mut replied = Some(replied);
    let mut rd = tokio::io::BufReader::new(rd);
    let mut codec = HeaderCodec::new();
    let mut error = Vec::new();
    let mut error_done = false;
    let mut broken = false;
    loop {
        // After the status, the remote closes the connection; do not wait
        // long for a remote that keeps it open.
        let next = read_frame(&mut rd, &mut codec);
        let read = if error_done {
            match tokio::time::timeout(std::time::Duration::from_secs(5), next).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            next.await
        };
        let frame = match read {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "remote SPDY session: read");
                broken = !error_done;
                break;
            }
        };
        match frame {
            Frame::Data { id, fin, data } => {
                let out = if id == ids.stdout && id != 0 {
                    &mut stdout
                } else if id == ids.stderr && id != 0 {
                    &mut stderr
                } else {
                    if id == ids.error {
                        if error.len() + data.len() <= MAX_STATUS {
                            error.extend_from_slice(&data);
                        }
                        error_done |= fin;
                    }
                    continue;
                };
                if let Some(w) = out.as_mut() {
                    // A reader that went away: drop its bytes, go on.
                    if !data.is_empty() && w.write_all(&data).await.is_err() {
                        *out = None;
                    }
                }
                if fin {
                    end(out).await;
                }
            }
            Frame::SynReply { id, .. } if id == ids.stdin && id != 0 => {
                if let Some(r) = replied.take() {
                    let _ = r.send(());
                }
            }
            Frame::RstStream { id, .. } if id == ids.error => error_done = true,
            Frame::RstStream { id, .. } if id == ids.stdout => end(&mut stdout).await,
            Frame::RstStream { id, .. } if id == ids.stderr => end(&mut stderr).await,
            Frame::Ping(p) => {
                let _ = pongs.try_send(p);
            }
            Frame::GoAway { .. } => break,
            _ => {}
        }
        // kubectl too ends the session when the error stream and the
        // outputs are done, without waiting for the remote to close.
        if error_done && stdout.is_none() && stderr.is_none() {
            break;
        }
    }
    end(&mut stdout).await;
    end(&mut stderr).await;
    (!broken).then(|| parse_status(&error))
}

/// Ends an output pipe: its reader sees end-of-file (dropping a split
/// half alone would not tell it).
async fn end(out: &mut Option<WriteHalf<SimplexStream>>) {
    if let Some(mut w) = out.take() {
        let _ = w.shutdown().await;
    }
}

/// The v4 error stream: a `metav1.Status` (the kubelet writes `Success`
/// too); empty means success, as for kubectl.
fn parse_status(error: &[u8]) -> Status {
    if error.iter().all(u8::is_ascii_whitespace) {
        return frames::success();
    }
    serde_json::from_slice(error)
        .unwrap_or_else(|_| internal(String::from_utf8_lossy(error).trim().to_string()))
}

async fn read_opt(
    r: &mut Option<ReadHalf<SimplexStream>>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn next_opt(r: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match r {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_stream_becomes_the_status() {
        assert_eq!(parse_status(b"").status.as_deref(), Some("Success"));
        let s = parse_status(
            br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"4"}]}}"#,
        );
        assert_eq!(frames::exit_code(&s), Some(4));
        let s = parse_status(b"error: oops\n");
        assert_eq!(s.message.as_deref(), Some("error: oops"));
    }
}
