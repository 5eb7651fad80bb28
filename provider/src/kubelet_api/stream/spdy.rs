//! The server side of SPDY/3.1 as Kubernetes uses it for exec, attach and
//! port-forward (moby/spdystream behind client-go's `httpstream/spdy`): the
//! client opens every stream (SYN_STREAM with a `streamtype` header), the
//! server answers each with an empty SYN_REPLY, data flows both ways in DATA
//! frames, FIN half-closes, RST_STREAM and GOAWAY end, PINGs are echoed.
//!
//! Hand-written because no crate does this side: `spdy-mux`, the only
//! maintained SPDY/3.1 crate, is a client that opens stream pairs over
//! WebSocket transports and cannot accept streams a peer opens. Only what
//! Kubernetes' peers send is implemented: no server push, no priorities, and
//! no SPDY flow-control windows (spdystream neither sends nor honours
//! WINDOW_UPDATE): flow control is TCP's. Each stream's data goes through a
//! small bounded channel and the frame reader waits for room, so a slow
//! consumer stops the reading of the connection, as in spdystream.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use offload_runtime::spdy::{Frame, FrameError, Headers};
use offload_runtime::spdy::{HeaderCodec, read_frame, write_frame};

/// Largest DATA frame we send (spdystream reads any size; smaller frames
/// keep streams of one connection interleaved).
pub const MAX_DATA: usize = 32 * 1024;
/// DATA frames buffered per incoming stream before the reader waits.
const STREAM_BUFFER: usize = 8;
/// RST_STREAM status CANCEL.
pub const CANCEL: u32 = 5;

/// A stream the client opened.
#[derive(Debug)]
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    /// The client's data; ends at its FIN, its RST_STREAM or the end of the
    /// connection.
    pub data: mpsc::Receiver<Bytes>,
    /// Cancelled at the client's RST_STREAM or the end of the connection
    /// (not at a FIN: the client only stops sending).
    pub reset: CancellationToken,
}

impl Incoming {
    /// The first value of header `name` (lower case, as on the wire).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends frames to the client; cheap to clone. Every send waits for room in
/// the writer's queue, so producers slow down with the connection.
#[derive(Clone, Debug)]
pub struct Out {
    tx: mpsc::Sender<Frame>,
}

/// The connection is gone.
#[derive(Debug, thiserror::Error)]
#[error("the SPDY connection is closed")]
pub struct Closed;

impl Out {
    async fn send(&self, f: Frame) -> Result<(), Closed> {
        self.tx.send(f).await.map_err(|_| Closed)
    }

    /// `data` on stream `id`, in frames of at most [`MAX_DATA`].
    pub async fn data(&self, id: u32, mut data: Bytes) -> Result<(), Closed> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA));
            self.send(Frame::Data {
                id,
                fin: false,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes stream `id` (an empty DATA frame with FIN).
    pub async fn fin(&self, id: u32) -> Result<(), Closed> {
        self.send(Frame::Data {
            id,
            fin: true,
            data: Bytes::new(),
        })
        .await
    }

    pub async fn reset(&self, id: u32) -> Result<(), Closed> {
        self.send(Frame::RstStream { id, status: CANCEL }).await
    }
}

/// One SPDY connection: the streams the client opens, the way to answer,
/// and the tasks that read and write. Dropping it stops both tasks.
pub struct Session {
    pub incoming: mpsc::Receiver<Incoming>,
    pub out: Out,
    closed: CancellationToken,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Session {
    /// Serves SPDY on `io`, the upgraded connection.
    pub fn start<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (frames_tx, frames_rx) = mpsc::channel(64);
        let (incoming_tx, incoming) = mpsc::channel(32);
        let closed = CancellationToken::new();
        let out = Out { tx: frames_tx };
        let writer = tokio::spawn(write_loop(wr, frames_rx, closed.clone()));
        let reader = tokio::spawn(read_loop(rd, out.clone(), incoming_tx, closed.clone()));
        Session {
            incoming,
            out,
            closed,
            reader,
            writer,
        }
    }

    /// Cancelled when the connection ended (client gone, or a protocol error).
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Ends the session after what was sent: GOAWAY, the write side closed,
    /// then the reader waits up to `linger` for the client to hang up (so
    /// closing does not reset data the client has not read yet).
    pub async fn finish(mut self, linger: std::time::Duration) {
        let _ = self.out.send(Frame::GoAway { last: 0, status: 0 }).await;
        let _ = self.out.send(Frame::Shutdown).await;
        let _ = tokio::time::timeout(linger, &mut self.writer).await;
        let _ = tokio::time::timeout(linger, &mut self.reader).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.closed.cancel();
    }
}

async fn write_loop<W: AsyncWrite + Send>(
    wr: W,
    mut frames: mpsc::Receiver<Frame>,
    closed: CancellationToken,
) {
    let mut wr = std::pin::pin!(BufWriter::with_capacity(64 * 1024, wr));
    let mut codec = HeaderCodec::new();
    let result: Result<(), FrameError> = async {
        while let Some(f) = frames.recv().await {
            if matches!(f, Frame::Shutdown) {
                wr.flush().await?;
                wr.shutdown().await?;
                return Ok(());
            }
            write_frame(&mut wr, &mut codec, &f).await?;
            if frames.is_empty() {
                wr.flush().await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        debug!(error = %e, "SPDY write ended");
        closed.cancel();
    }
}

async fn read_loop<R: AsyncRead + Send>(
    rd: R,
    out: Out,
    incoming: mpsc::Sender<Incoming>,
    closed: CancellationToken,
) {
    let mut rd = std::pin::pin!(BufReader::with_capacity(64 * 1024, rd));
    let mut codec = HeaderCodec::new();
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut resets: HashMap<u32, CancellationToken> = HashMap::new();
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, &mut codec) => f,
            _ = closed.cancelled() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "SPDY read ended");
                break;
            }
        };
        match frame {
            Frame::SynStream { id, fin, headers } => {
                // Reply at once, as the kubelet does: the client waits for it.
                if out
                    .send(Frame::SynReply {
                        id,
                        fin: false,
                        headers: vec![],
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                let (tx, data) = mpsc::channel(STREAM_BUFFER);
                if !fin {
                    streams.insert(id, tx);
                }
                let reset = closed.child_token();
                resets.insert(id, reset.clone());
                let inc = Incoming {
                    id,
                    headers,
                    data,
                    reset,
                };
                if incoming.send(inc).await.is_err() {
                    let _ = out.reset(id).await;
                }
            }
            Frame::Data { id, fin, data } => {
                if let Some(tx) = streams.get(&id)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    // Nobody reads this stream: drop what comes.
                    streams.remove(&id);
                }
                if fin {
                    streams.remove(&id);
                }
            }
            Frame::RstStream { id, .. } => {
                streams.remove(&id);
                if let Some(r) = resets.remove(&id) {
                    r.cancel();
                }
            }
            Frame::Ping(id) => {
                if out.send(Frame::Ping(id)).await.is_err() {
                    break;
                }
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Shutdown | Frame::Ignored(_) => {}
        }
    }
    closed.cancel();
}

#[cfg(test)]
mod tests;
