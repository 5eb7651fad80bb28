//! port-forward over WebSocket, as the kubelet's `wsstream` serves it: the
//! ports are the query's `port` values, port number i has the data channel
//! 2i and the error channel 2i+1, and the first message the server sends on
//! each channel is the port number (2 bytes, little endian). One WebSocket
//! is one TCP connection per port; each becomes one WebSocket to the plugin.

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use super::bridge::{BUFFER, PortOut};
use super::portforward::Forward;
use super::websocket::Framing;

/// The port-forward WebSocket subprotocols, best first.
pub const WS_PORT_FORWARD_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// The `port` values of the query, or why not.
pub fn ports(query: &str) -> Result<Vec<u16>, String> {
    let ports: Vec<u16> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port {v:?}"))
        })
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Serves one WebSocket port-forward on an upgraded connection.
pub async fn serve<IO>(io: IO, protocol: &str, ports: Vec<u16>, f: Forward)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = Framing::of(protocol);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, mut stream) = ws.split();
    let sink = Arc::new(Mutex::new(sink));
    let gone = CancellationToken::new();
    let mut conns = JoinSet::new();
    let mut inputs = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let ch = (2 * i) as u8;
        {
            let mut s = sink.lock().await;
            for c in [ch, ch + 1] {
                if s.send(framing.encode(c, &port.to_le_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let (from_tx, from_rx) = mpsc::channel(BUFFER);
        inputs.push(from_tx);
        let (to_tx, to_rx) = mpsc::channel(BUFFER);
        let (f, sink, gone) = (f.clone(), sink.clone(), gone.clone());
        conns.spawn(async move {
            tokio::join!(
                f.connect(port, from_rx, to_tx, gone),
                write(to_rx, sink, framing, ch, f.clone(), port),
            );
        });
    }
    let read = async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some((ch, data)) = framing.decode(&msg) else {
                continue;
            };
            let i = usize::from(ch / 2);
            if ch % 2 == 0
                && let Some(tx) = inputs.get(i)
                && tx.send(data).await.is_err()
            {
                continue;
            }
        }
        gone.cancel();
        // Nothing ends this branch but the client: the pods' ends wait.
        std::future::pending::<()>().await;
    };
    let all_done = async { while conns.join_next().await.is_some() {} };
    tokio::select! {
        _ = read => {}
        _ = all_done => {}
    }
    if !gone.is_cancelled() {
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.lock().await.send(Message::Close(Some(normal))).await;
    }
}

type Sink<IO> = futures::stream::SplitSink<WebSocketStream<IO>, Message>;

async fn write<IO>(
    mut to: mpsc::Receiver<PortOut>,
    sink: Arc<Mutex<Sink<IO>>>,
    framing: Framing,
    ch: u8,
    f: Forward,
    port: u16,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(m) = to.recv().await {
        let msg = match m {
            PortOut::Data(b) => framing.encode(ch, &b),
            PortOut::Error(e) => {
                framing.encode(ch + 1, &Bytes::from(f.error(&port.to_string(), &e)))
            }
        };
        if sink.lock().await.send(msg).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(ports("port=8080&port=9090"), Ok(vec![8080, 9090]));
        assert!(ports("").is_err_and(|e| e.contains("\"port\" is required")));
        assert!(ports("port=0").is_err());
        assert!(ports("port=http").is_err());
    }
}
