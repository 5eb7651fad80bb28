//! Between a client-facing front end (SPDY or WebSocket) and the plugin's
//! WebSocket (`offload_wire::stream`): the front ends translate their wire
//! into these messages; the bridge speaks the plugin's framing. All channels
//! are small and bounded: a slow reader on one side stops the reading on
//! the other.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use offload_wire::stream::{MAX_MESSAGE, TerminalSize, channel};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::client::stream::PluginSocket;

/// Messages buffered between a front end and the bridge, each way.
pub const BUFFER: usize = 16;
/// How long a close handshake with the plugin may take.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// From the exec/attach client.
#[derive(Debug, PartialEq, Eq)]
pub enum FromClient {
    Stdin(Bytes),
    /// The client closed its stdin (the process reads end of file).
    StdinEof,
    Resize(TerminalSize),
}

/// To the exec/attach client.
#[derive(Debug, PartialEq, Eq)]
pub enum ToClient {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The final `metav1.Status` JSON, as the kubelet's v4 protocol sends it.
    Status(Bytes),
}

fn framed(ch: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(ch);
    b.extend_from_slice(data);
    Message::Binary(b.freeze())
}

fn to_plugin(m: FromClient) -> Message {
    match m {
        FromClient::Stdin(b) => framed(channel::STDIN, &b),
        FromClient::StdinEof => framed(channel::CLOSE, &[channel::STDIN]),
        FromClient::Resize(t) => {
            framed(channel::RESIZE, &serde_json::to_vec(&t).unwrap_or_default())
        }
    }
}

/// `b` in pieces that fit the plugin's largest message (with its channel byte).
fn chunks(mut b: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || (!b.is_empty()).then(|| b.split_to(b.len().min(MAX_MESSAGE - 1))))
}

/// A `Failure` status for an end without the plugin's own.
pub fn failure(message: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "InternalError", "message": message,
        })
        .to_string(),
    )
}

/// Runs one exec or attach until the plugin ends it (or the client goes
/// away: `client_gone`, then the plugin is told to stop the process).
/// Always sends one [`ToClient::Status`] unless the client is gone.
pub async fn exec(
    ws: PluginSocket,
    mut from: mpsc::Receiver<FromClient>,
    to: mpsc::Sender<ToClient>,
    client_gone: CancellationToken,
) {
    let (mut sink, mut stream) = ws.split();
    let down = async {
        let mut status = None;
        while let Some(msg) = stream.next().await {
            let b = match msg {
                Ok(Message::Binary(b)) if !b.is_empty() => b,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    debug!(error = %e, "plugin stream broke");
                    status
                        .get_or_insert_with(|| failure(&format!("the plugin's stream broke: {e}")));
                    break;
                }
            };
            let data = b.slice(1..);
            let m = match b[0] {
                channel::STDOUT => ToClient::Stdout(data),
                channel::STDERR => ToClient::Stderr(data),
                channel::ERROR => {
                    status = Some(data);
                    continue;
                }
                _ => continue,
            };
            if to.send(m).await.is_err() {
                break;
            }
        }
        status.unwrap_or_else(|| failure("the plugin ended the stream without an exit status"))
    };
    let up = async {
        while let Some(m) = from.recv().await {
            let msgs = match m {
                FromClient::Stdin(b) => chunks(b).map(FromClient::Stdin).collect(),
                other => vec![other],
            };
            for m in msgs {
                if sink.send(to_plugin(m)).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
        // The client sends no more; the output goes on.
        std::future::pending::<()>().await;
    };
    let status = tokio::select! {
        s = down => Some(s),
        _ = up => None,
        _ = client_gone.cancelled() => None,
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
    if let Some(s) = status {
        let _ = to.send(ToClient::Status(s)).await;
    }
}

/// From the plugin to a port-forward client.
#[derive(Debug, PartialEq, Eq)]
pub enum PortOut {
    Data(Bytes),
    /// Why the connection to the pod's port failed or ended.
    Error(String),
}

/// Runs one port-forward connection: the client's bytes (`from` ends at its
/// end of data) to the plugin and back until the plugin closes, or until
/// `client_gone` (the client's connection or stream is gone). The client's
/// end of data is no reason to cut the answer still coming (kubectl ends its
/// side as soon as the local client stops sending), and the plugin contract
/// carries no half-close: the WebSocket stays open.
pub async fn port_forward(
    ws: PluginSocket,
    mut from: mpsc::Receiver<Bytes>,
    to: mpsc::Sender<PortOut>,
    client_gone: CancellationToken,
) {
    let (mut sink, mut stream) = ws.split();
    let down = async {
        loop {
            let m = match stream.next().await {
                Some(Ok(Message::Binary(b))) => PortOut::Data(b),
                Some(Ok(Message::Text(t))) => PortOut::Error(t.to_string()),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => PortOut::Error(format!("the plugin's stream broke: {e}")),
            };
            let last = matches!(m, PortOut::Error(_));
            if to.send(m).await.is_err() || last {
                break;
            }
        }
    };
    let up = async {
        while let Some(b) = from.recv().await {
            for chunk in chunks(b) {
                if sink.send(Message::Binary(chunk)).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
        _ = client_gone.cancelled() => {}
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_data_is_cut_to_the_largest_message() {
        let sizes: Vec<usize> = chunks(Bytes::from(vec![0u8; 2 * MAX_MESSAGE]))
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [MAX_MESSAGE - 1, MAX_MESSAGE - 1, 2]);
        assert_eq!(chunks(Bytes::new()).count(), 0);
    }

    #[test]
    fn client_messages_use_the_plugin_channels() {
        let m = to_plugin(FromClient::Stdin(Bytes::from_static(b"ab")));
        assert_eq!(m, Message::Binary(Bytes::from_static(&[0, b'a', b'b'])));
        assert_eq!(
            to_plugin(FromClient::StdinEof),
            Message::Binary(Bytes::from_static(&[255, 0]))
        );
        let r = to_plugin(FromClient::Resize(TerminalSize {
            width: 80,
            height: 24,
        }));
        assert_eq!(
            r,
            Message::Binary(Bytes::from_static(b"\x04{\"Width\":80,\"Height\":24}"))
        );
    }
}
