//! exec and attach over WebSocket, as the kubelet's `wsstream` serves them
//! (what a 1.20 apiserver passes through from a new kubectl): every message
//! is one channel byte then data (`v5.channel.k8s.io`, `v4.channel.k8s.io`,
//! `channel.k8s.io`), or in the base64 protocols a text message of the
//! channel digit then base64 data. v5 adds the close channel (255), by
//! which the client closes its stdin.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use offload_wire::stream::channel;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::bridge::{self, BUFFER, FromClient, ToClient};
use super::exec::StatusStyle;
use crate::client::stream::PluginSocket;

/// The exec/attach WebSocket subprotocols, best first.
pub const WS_EXEC_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// How messages of a negotiated subprotocol are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    /// v5: the close channel.
    pub close: bool,
}

impl Framing {
    pub fn of(protocol: &str) -> Self {
        Framing {
            base64: protocol.contains("base64"),
            close: protocol.starts_with("v5."),
        }
    }

    pub fn encode(self, ch: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            s.push(char::from(b'0' + ch));
            STANDARD.encode_string(data, &mut s);
            Message::text(s)
        } else {
            let mut b = BytesMut::with_capacity(data.len() + 1);
            b.put_u8(ch);
            b.extend_from_slice(data);
            Message::Binary(b.freeze())
        }
    }

    /// The channel and data of a message; `None` for control messages and
    /// what does not decode.
    pub fn decode(self, m: &Message) -> Option<(u8, Bytes)> {
        match m {
            Message::Binary(b) if !self.base64 && !b.is_empty() => Some((b[0], b.slice(1..))),
            Message::Text(t) if self.base64 && !t.is_empty() => {
                let t = t.as_bytes();
                let ch = t[0].checked_sub(b'0')?;
                STANDARD.decode(&t[1..]).ok().map(|d| (ch, d.into()))
            }
            _ => None,
        }
    }
}

fn from_client(f: Framing, ch: u8, data: Bytes) -> Option<FromClient> {
    match ch {
        channel::STDIN => Some(FromClient::Stdin(data)),
        channel::RESIZE => serde_json::from_slice(&data).ok().map(FromClient::Resize),
        channel::CLOSE if f.close && data.first() == Some(&channel::STDIN) => {
            Some(FromClient::StdinEof)
        }
        _ => None,
    }
}

/// Serves one exec or attach on an upgraded connection.
pub async fn serve_exec<IO>(io: IO, protocol: &str, plugin: PluginSocket)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = Framing::of(protocol);
    let style = StatusStyle::of(protocol);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    let gone = CancellationToken::new();
    let (from_tx, from_rx) = mpsc::channel(BUFFER);
    let (to_tx, mut to_rx) = mpsc::channel(BUFFER);
    let g = gone.clone();
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(m) => m,
            };
            let Some((ch, data)) = framing.decode(&msg) else {
                continue;
            };
            if let Some(m) = from_client(framing, ch, data)
                && from_tx.send(m).await.is_err()
            {
                break;
            }
        }
        debug!("exec client closed its WebSocket");
        g.cancel();
    });
    let write = async {
        while let Some(m) = to_rx.recv().await {
            let msg = match m {
                ToClient::Stdout(b) => framing.encode(channel::STDOUT, &b),
                ToClient::Stderr(b) => framing.encode(channel::STDERR, &b),
                ToClient::Status(b) => match style.encode(b) {
                    Some(b) => framing.encode(channel::ERROR, &b),
                    None => continue,
                },
            };
            if sink.send(msg).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(bridge::exec(plugin, from_rx, to_tx, gone.clone()), write);
    if !gone.is_cancelled() {
        // A normal close (1000): client-go reads any other code, even "no
        // status", as a broken error stream.
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = tokio::time::timeout(super::exec::LINGER, gone.cancelled()).await;
    }
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_base64_framing() {
        let bin = Framing::of("v5.channel.k8s.io");
        assert!(bin.close && !bin.base64);
        let m = bin.encode(1, b"hi");
        assert_eq!(m, Message::Binary(Bytes::from_static(b"\x01hi")));
        assert_eq!(bin.decode(&m), Some((1, Bytes::from_static(b"hi"))));
        assert_eq!(
            from_client(bin, 255, Bytes::from_static(&[0])),
            Some(FromClient::StdinEof)
        );

        let b64 = Framing::of("v4.base64.channel.k8s.io");
        assert!(b64.base64 && !b64.close);
        let m = b64.encode(2, b"hi");
        assert_eq!(m, Message::text("2aGk="));
        assert_eq!(b64.decode(&m), Some((2, Bytes::from_static(b"hi"))));
        assert_eq!(from_client(b64, 255, Bytes::from_static(&[0])), None);
    }
}
